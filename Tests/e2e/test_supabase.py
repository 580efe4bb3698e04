"""The Supabase Realtime endpoint driven by the official Python client (`realtime` on PyPI)."""
import asyncio
import base64
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
import websockets
from realtime import AsyncRealtimeClient, RealtimeSubscribeStates

from apihelp import call

SERVICE = "svc-key-0123456789"
ADMIN = "adm-key-0123456789"
CFG = {"qr": {"ttlSeconds": 3, "maxAttempts": 50}, "poll": {"intervalSeconds": 1},
       "auth": {"serviceKeys": [SERVICE], "adminKeys": [ADMIN]}, "simulator": {"firstQrSeconds": 60}}


def run(coro, limit=90):
    return asyncio.run(asyncio.wait_for(coro, limit))


def zbar(data_url):
    png = base64.b64decode(data_url.split(",", 1)[1])
    with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
        f.write(png)
    try:
        return subprocess.run(["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", "-Sbinary", f.name], capture_output=True, timeout=30).stdout.decode()
    finally:
        os.unlink(f.name)


def current_code(g, instance):
    with urllib.request.urlopen(g.http + "/simulator/state", timeout=5) as r:
        return next((i["code"] for i in json.loads(r.read())["instances"] if i["name"] == instance), None)


def client(g, key=SERVICE, **kw):
    return AsyncRealtimeClient(f"ws://{g.host}:{g.port}/realtime/v1", token=key, auto_reconnect=False, **kw)


def test_postgres_changes_like_the_old_frontend(gateway_factory):
    g = gateway_factory(CFG)

    async def main():
        c = client(g)
        await c.connect()
        updates = asyncio.Queue()
        states = []
        ch = c.channel("evolution-instances")
        ch.on_postgres_changes("UPDATE", schema="public", table="evolution_instances", filter="instance_name=eq.demo",
                               callback=updates.put_nowait)
        await ch.subscribe(lambda state, err: states.append((state, err)))
        assert states[0][0] == RealtimeSubscribeStates.SUBSCRIBED, states
        # A new QR arrives as an UPDATE whose qr_code is the upstream's current code.
        while True:
            p = await asyncio.wait_for(updates.get(), 15)
            rec = p["data"]["record"]
            if rec["qr_code"] and rec["instance_status"] == "connecting":
                break
        assert p["data"]["schema"] == "public" and p["data"]["table"] == "evolution_instances" and p["data"]["type"] == "UPDATE"
        assert {c["name"] for c in p["data"]["columns"]} >= {"instance_name", "instance_status", "qr_code", "last_qr_update"}
        assert set(rec) == {"instance_name", "instance_status", "qr_code", "last_qr_update", "qr_expires_at", "attempt", "pairing_code"}
        assert rec["pairing_code"] is None  # linking by QR
        assert zbar(rec["qr_code"]) == current_code(g, "demo")
        # The phone links: instance_status becomes "open".
        call(g, "POST", "/simulator/scan/demo")
        while True:
            p = await asyncio.wait_for(updates.get(), 5)
            if p["data"]["record"]["instance_status"] == "open":
                break
        assert p["data"]["old_record"]["instance_status"] == "connecting"
        await c.close()
    run(main())


def test_heartbeats_are_answered_for_more_than_two_intervals(gateway_factory):
    """The official client sends a heartbeat every max(hb_interval, 15) s. For 33 s (over two intervals) it stays
    joined, and a raw socket beside it sees every heartbeat answered with the reply Phoenix gives."""
    g = gateway_factory(CFG)

    async def raw():
        async with websockets.connect(f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={SERVICE}&vsn=1.0.0") as ws:
            for ref in ("1", "2", "3"):
                await ws.send(json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": ref}))
                m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert m == {"topic": "phoenix", "event": "phx_reply", "payload": {"status": "ok", "response": {}}, "ref": ref}
                if ref != "3":
                    await asyncio.sleep(16.5)

    async def official():
        c = client(g)
        await c.connect()
        ch = c.channel("session:demo")
        await ch.subscribe()
        await asyncio.sleep(33)
        assert c.is_connected and ch.is_joined
        await c.close()

    async def main():
        await asyncio.gather(raw(), official())
    run(main(), limit=90)


def test_broadcast_and_presence_on_the_session_channel(gateway_factory):
    g = gateway_factory(CFG)

    async def main():
        listener = client(g)
        await listener.connect()
        got = asyncio.Queue()
        ch = listener.channel("session:demo")
        ch.on_broadcast("qr_generated", got.put_nowait)
        synced = asyncio.Event()
        ch.on_presence_sync(synced.set)
        await ch.subscribe()
        b = await asyncio.wait_for(got.get(), 15)
        assert b["event"] == "qr_generated" and b["payload"]["action"] == "qr_generated" and b["payload"]["sessionId"] == "demo"
        # Two browsers (with browser tokens) track themselves; the admin's channel sees both.
        token = call(g, "POST", "/api/v1/sessions/demo/token", key=SERVICE)[2]["data"]["token"]
        viewers = []
        for name in ("phone-a", "phone-b"):
            v = client(g, key=token)
            await v.connect()
            vc = v.channel("session:demo", {"config": {"presence": {"key": name, "enabled": True}}})
            vc.on_presence_sync(lambda: None)
            await vc.subscribe()
            await vc.track({"viewer": name})
            viewers.append(v)
        deadline = time.monotonic() + 10
        while len(ch.presence_state()) < 2:
            assert time.monotonic() < deadline, ch.presence_state()
            await asyncio.sleep(0.1)
        assert set(ch.presence_state()) == {"phone-a", "phone-b"}
        await viewers[0].close()
        deadline = time.monotonic() + 10
        while set(ch.presence_state()) != {"phone-b"}:
            assert time.monotonic() < deadline, ch.presence_state()
            await asyncio.sleep(0.1)
        await viewers[1].close()
        await listener.close()
    run(main())


def test_refusals_and_errors_leave_other_channels_working(gateway_factory):
    g = gateway_factory(CFG)

    async def main():
        for bad in ("", "wrong-key-0123456789"):
            with pytest.raises(Exception):
                async with websockets.connect(f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={bad}&vsn=1.0.0"):
                    pass
            # The refusal is an HTTP 401 with a reason, before any upgrade (libwebsockets answers it as HTTP/1.0).
            s = socket.create_connection((g.host, g.port), timeout=5)
            s.sendall((f"GET /realtime/v1/websocket?apikey={bad}&vsn=1.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            head = s.recv(4096).split(b"\r\n")[0]
            s.close()
            assert b" 401 " in head, head
        async with websockets.connect(f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={SERVICE}&vsn=1.0.0") as ws:
            async def ask(msg):
                await ws.send(msg if isinstance(msg, str) else json.dumps(msg))
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if m["event"] in ("phx_reply", "phx_error"):
                        return m
            good = await ask({"topic": "realtime:ok", "event": "phx_join", "ref": "1", "join_ref": "1",
                              "payload": {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "evolution_instances"}]}}})
            assert good["payload"]["status"] == "ok" and good["payload"]["response"]["postgres_changes"][0]["table"] == "evolution_instances"
            for msg, word in (({"topic": "realtime:t", "event": "phx_join", "ref": "2", "payload": {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "users"}]}}}, "evolution_instances"),
                              ({"topic": "realtime:f", "event": "phx_join", "ref": "3", "payload": {"config": {"postgres_changes": [{"event": "UPDATE", "schema": "public", "table": "evolution_instances", "filter": "qr_code=like.%x%"}]}}}, "unsupported filter"),
                              ({"topic": "realtime:session:demo", "event": "phx_join", "ref": "4", "payload": {"access_token": "not-a-valid-token-12345"}}, "Invalid JWT"),
                              ({"topic": 7, "event": "phx_join", "ref": "5"}, "topic"),
                              ({"topic": "realtime:ok", "event": "dance", "ref": "6"}, "unknown event"),
                              ({"topic": "realtime:never", "event": "phx_leave", "ref": "7"}, "unmatched")):
                m = await ask(msg)
                assert m["payload"]["status"] == "error" and word in m["payload"]["response"]["reason"], (msg, m)
            m = await ask("{this is not json")
            assert m["event"] == "phx_error"
            # The first channel still works: a heartbeat and a row change still arrive.
            hb = await ask({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "9"})
            assert hb["payload"]["status"] == "ok"
            call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "late"}, key=SERVICE)
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if m["event"] == "postgres_changes" and m["payload"]["data"]["record"]["instance_name"] == "late":
                    break
            assert m["topic"] == "realtime:ok" and m["payload"]["ids"] == [good["payload"]["response"]["postgres_changes"][0]["id"]]
            assert "instance_token" not in json.dumps(m)
    run(main())


def test_a_refresh_is_one_update_carrying_the_new_qr_and_presence_only_where_enabled(gateway_factory):
    """An admin refresh replaces the QR with exactly one UPDATE whose qr_code is the new code (no row with a null
    qr_code in between); presence messages reach only the channels that enabled presence."""
    g = gateway_factory({**CFG, "qr": {"ttlSeconds": 60}, "refresh": {"minIntervalSeconds": 0}})

    async def main():
        async def socket(key=ADMIN):
            return await websockets.connect(f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={key}&vsn=1.0.0", max_size=None)

        async def join(ws, topic, config, ref):
            await ws.send(json.dumps({"topic": topic, "event": "phx_join", "ref": ref, "join_ref": ref, "payload": {"config": config}}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if m["event"] == "phx_reply" and m["ref"] == ref:
                    assert m["payload"]["status"] == "ok", m
                    return

        rows = await socket()
        await join(rows, "realtime:rows", {"postgres_changes": [{"event": "UPDATE", "schema": "public", "table": "evolution_instances",
                                                                  "filter": "instance_name=eq.demo"}]}, "1")
        # The session's first QR (its own UPDATE), then quiet.
        deadline = time.monotonic() + 15
        while True:
            m = json.loads(await asyncio.wait_for(rows.recv(), max(0.1, deadline - time.monotonic())))
            if m["event"] == "postgres_changes" and m["payload"]["data"]["record"]["qr_code"]:
                break
        before = current_code(g, "demo")
        status, _, _ = call(g, "POST", "/api/v1/sessions/refresh-qr", {"sessionId": "demo"}, key=ADMIN)
        assert status == 200
        after = current_code(g, "demo")
        assert after and after != before
        updates = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                m = json.loads(await asyncio.wait_for(rows.recv(), max(0.1, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                break
            if m["event"] == "postgres_changes":
                updates.append(m["payload"]["data"]["record"])
        assert len(updates) == 1, [(u["instance_status"], bool(u["qr_code"])) for u in updates]
        assert updates[0]["qr_code"] and zbar(updates[0]["qr_code"]) == after and updates[0]["attempt"] == 0

        # Presence: a channel with presence disabled gets neither the state nor the diffs.
        quiet, loud, tracker = await socket(), await socket(), await socket()
        await join(quiet, "realtime:session:demo", {"presence": {"key": "q", "enabled": False}}, "2")
        await join(loud, "realtime:session:demo", {"presence": {"key": "l", "enabled": True}}, "3")
        await join(tracker, "realtime:session:demo", {"presence": {"key": "phone", "enabled": True}}, "4")
        await tracker.send(json.dumps({"topic": "realtime:session:demo", "event": "presence", "ref": "5", "join_ref": "4",
                                       "payload": {"type": "presence", "event": "track", "payload": {"viewer": "phone"}}}))

        async def presence_events(ws, seconds):
            out, end = [], time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    m = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, end - time.monotonic())))
                except asyncio.TimeoutError:
                    break
                if m["event"].startswith("presence"):
                    out.append(m["event"])
            return out
        got_loud, got_quiet = await asyncio.gather(presence_events(loud, 2), presence_events(quiet, 2))
        assert "presence_diff" in got_loud and got_quiet == [], (got_loud, got_quiet)
        for ws in (rows, quiet, loud, tracker):
            await ws.close()
    run(main(), 60)


def user_broadcast_push(topic, event, payload, ref="", join_ref=""):
    """realtime-js's binary broadcast push (serializer kind 3), written from the protocol."""
    if isinstance(payload, (bytes, bytearray)):
        encoding, body = 0, bytes(payload)
    else:
        encoding, body = 1, json.dumps(payload).encode()
    parts = [join_ref.encode(), ref.encode(), topic.encode(), event.encode(), b""]
    return bytes([3, *[len(p) for p in parts], encoding]) + b"".join(parts) + body


def parse_user_broadcast(frame):
    """A kind 4 user broadcast: (topic, event, payload as JSON or bytes)."""
    assert frame[0] == 4, frame[:8]
    tl, el, ml, enc = frame[1], frame[2], frame[3], frame[4]
    at = 5
    topic = frame[at:at + tl].decode(); at += tl
    event = frame[at:at + el].decode(); at += el
    at += ml
    body = frame[at:]
    return topic, event, (json.loads(body) if enc == 1 else bytes(body))


def test_protocol_2_0_0_arrays_binary_broadcasts_rows_presence_and_refusals(gateway_factory):
    """What realtime-js ≥ 2.91 speaks by default (vsn=2.0.0): every message a JSON array
    [join_ref, ref, topic, event, payload], a client's broadcast a binary frame; 1.0.0 peers on the same topic
    still get the object form."""
    g = gateway_factory({**CFG, "qr": {"ttlSeconds": 60}, "refresh": {"minIntervalSeconds": 0}})
    base = f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={ADMIN}"

    async def main():
        async def recv_until(ws, pred, seconds=5):
            end = time.monotonic() + seconds
            while True:
                raw = await asyncio.wait_for(ws.recv(), max(0.1, end - time.monotonic()))
                m = raw if isinstance(raw, bytes) else json.loads(raw)
                if pred(m):
                    return m

        a = await websockets.connect(base + "&vsn=2.0.0", max_size=None)
        await a.send(json.dumps([None, "1", "phoenix", "heartbeat", {}]))
        assert await recv_until(a, lambda m: isinstance(m, list)) == [None, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}]
        # Rows: a join with a filter, then one UPDATE per refresh, as an array.
        await a.send(json.dumps(["2", "2", "realtime:rows", "phx_join", {"config": {"postgres_changes": [
            {"event": "UPDATE", "schema": "public", "table": "evolution_instances", "filter": "instance_name=eq.demo"}]}}]))
        r = await recv_until(a, lambda m: isinstance(m, list) and m[3] == "phx_reply")
        assert r[0] == "2" and r[1] == "2" and r[2] == "realtime:rows" and r[4]["status"] == "ok"
        assert r[4]["response"]["postgres_changes"][0]["filter"] == "instance_name=eq.demo"
        await recv_until(a, lambda m: isinstance(m, list) and m[3] == "postgres_changes" and m[4]["data"]["record"]["qr_code"], 15)
        assert call(g, "POST", "/api/v1/sessions/refresh-qr", {"sessionId": "demo"}, key=ADMIN)[0] == 200
        change = await recv_until(a, lambda m: isinstance(m, list) and m[3] == "postgres_changes")
        assert change[:3] == [None, None, "realtime:rows"] and change[4]["data"]["type"] == "UPDATE"
        assert zbar(change[4]["data"]["record"]["qr_code"]) == current_code(g, "demo")

        # Session broadcasts arrive as arrays too.
        await a.send(json.dumps(["3", "3", "realtime:session:demo", "phx_join", {"config": {"presence": {"key": "a", "enabled": True}}}]))
        b = await recv_until(a, lambda m: isinstance(m, list) and m[3] == "broadcast" and m[2] == "realtime:session:demo")
        assert b[4]["type"] == "broadcast" and b[4]["payload"]["sessionId"] == "demo" and b[4]["event"] == b[4]["payload"]["action"]

        # Client broadcasts: binary in, binary out to 2.0.0 peers, objects to 1.0.0 peers.
        peer2 = await websockets.connect(base + "&vsn=2.0.0", max_size=None)
        peer1 = await websockets.connect(base + "&vsn=1.0.0", max_size=None)
        await peer2.send(json.dumps(["1", "1", "realtime:lobby", "phx_join", {"config": {"broadcast": {"self": False}}}]))
        await recv_until(peer2, lambda m: isinstance(m, list) and m[3] == "phx_reply")
        await peer1.send(json.dumps({"topic": "realtime:lobby", "event": "phx_join", "ref": "1", "join_ref": "1", "payload": {"config": {}}}))
        await recv_until(peer1, lambda m: isinstance(m, dict) and m["event"] == "phx_reply")
        await a.send(json.dumps(["4", "4", "realtime:lobby", "phx_join", {"config": {}}]))
        await recv_until(a, lambda m: isinstance(m, list) and m[3] == "phx_reply" and m[0] == "4")
        await a.send(user_broadcast_push("realtime:lobby", "cursor", {"x": 1, "é": "ü"}, ref="5", join_ref="4"))
        got2 = await recv_until(peer2, lambda m: isinstance(m, bytes))
        assert parse_user_broadcast(got2) == ("realtime:lobby", "cursor", {"x": 1, "é": "ü"})
        got1 = await recv_until(peer1, lambda m: isinstance(m, dict) and m["event"] == "broadcast")
        assert got1["payload"] == {"type": "broadcast", "event": "cursor", "payload": {"x": 1, "é": "ü"}}
        ack = await recv_until(a, lambda m: isinstance(m, list) and m[3] == "phx_reply" and m[1] == "5")
        assert ack[4]["status"] == "ok"
        await a.send(user_broadcast_push("realtime:lobby", "blob", b"\x00\x01\xfe\xff"))
        assert parse_user_broadcast(await recv_until(peer2, lambda m: isinstance(m, bytes))) == ("realtime:lobby", "blob", b"\x00\x01\xfe\xff")
        # A 1.0.0 client's broadcast reaches the 2.0.0 peer as a binary frame.
        await peer1.send(json.dumps({"topic": "realtime:lobby", "event": "broadcast", "ref": None,
                                     "payload": {"type": "broadcast", "event": "hello", "payload": {"from": 1}}}))
        assert parse_user_broadcast(await recv_until(peer2, lambda m: isinstance(m, bytes))) == ("realtime:lobby", "hello", {"from": 1})

        # Presence, as arrays.
        await peer2.send(json.dumps(["6", "6", "realtime:session:demo", "phx_join", {"config": {"presence": {"key": "p2", "enabled": True}}}]))
        await recv_until(peer2, lambda m: isinstance(m, list) and m[3] == "presence_state")
        await peer2.send(json.dumps(["6", "7", "realtime:session:demo", "presence", {"type": "presence", "event": "track", "payload": {"v": 2}}]))
        diff = await recv_until(a, lambda m: isinstance(m, list) and m[3] == "presence_diff")
        assert "p2" in diff[4]["joins"]

        # Refusals: malformed frames of either kind, binary on 1.0.0, a bad vsn; the socket stays usable.
        await a.send(bytes([9, 0, 0, 0, 0, 0, 1]))
        err = await recv_until(a, lambda m: isinstance(m, list) and m[3] == "phx_error")
        assert "kind 9" in err[4]["reason"]
        await a.send(json.dumps({"topic": "realtime:x", "event": "phx_join"}))
        err = await recv_until(a, lambda m: isinstance(m, list) and m[3] == "phx_error")
        assert "[join_ref, ref, topic, event, payload]" in err[4]["reason"]
        await peer1.send(user_broadcast_push("realtime:lobby", "x", {}))
        err = await recv_until(peer1, lambda m: isinstance(m, dict) and m["event"] == "phx_error")
        assert "vsn=2.0.0" in err["payload"]["reason"]
        await a.send(json.dumps([None, "9", "phoenix", "heartbeat", {}]))
        assert (await recv_until(a, lambda m: isinstance(m, list) and m[1] == "9"))[4]["status"] == "ok"
        for ws in (a, peer2, peer1):
            await ws.close()
        # A vsn this endpoint does not speak: refused at the handshake, with the reason.
        with socket.create_connection((g.host, g.port), timeout=5) as raw:
            raw.sendall((f"GET /realtime/v1/websocket?apikey={ADMIN}&vsn=3.0.0 HTTP/1.1\r\nHost: {g.host}\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            answer = b""
            while b"vsn must be" not in answer:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert answer.split(b"\r\n", 1)[0].endswith(b"400 Bad Request") and b"vsn must be 1.0.0 or 2.0.0" in answer, answer
    run(main(), 60)


def test_supabase_auth_tokens_hs256_es256_rs256(gateway_factory, tmp_path):
    """A product keeping its Supabase Auth: the anon key (HS256, the project's JWT secret) opens the socket, the
    user's access token (ES256 or RS256, from the project's JWKS) opens the sessions its app_metadata lists, a
    service_role token is a service key; expired, foreign-key and wrong-audience tokens are refused with the
    reason the client shows. Keys are made here, as Supabase Auth would hold them."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    secret = base64.b64encode(os.urandom(40)).decode()
    es_key, rs_key, stranger = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [{**ECAlgorithm.to_jwk(es_key.public_key(), as_dict=True), "kid": "es-1", "alg": "ES256", "use": "sig"},
                     {**RSAAlgorithm.to_jwk(rs_key.public_key(), as_dict=True), "kid": "rs-1", "alg": "RS256", "use": "sig"}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    g = gateway_factory({**CFG, "qr": {"ttlSeconds": 60}, "refresh": {"minIntervalSeconds": 0},
                         "auth": {**CFG["auth"], "supabase": {"jwtSecret": secret, "jwksFile": str(tmp_path / "jwks.json")}}})
    status, _, body = call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "other"}, key=SERVICE)
    assert status in (200, 201, 202), (status, body)
    now = int(time.time())
    anon = jwt.encode({"iss": "supabase", "role": "anon", "iat": now, "exp": now + 3600}, secret, algorithm="HS256")
    service = jwt.encode({"iss": "supabase", "role": "service_role", "iat": now, "exp": now + 3600}, secret, algorithm="HS256")

    def user(key, alg, kid, sessions=("demo",), exp=3600, aud="authenticated"):
        return jwt.encode({"sub": "u-1", "role": "authenticated", "aud": aud, "iat": now, "exp": now + exp,
                           "app_metadata": {"provider": "email", "qrgate_sessions": list(sessions)}}, key, algorithm=alg, headers={"kid": kid})

    async def main():
        # The official client: anon key as apikey, the user's ES256 token as its access token.
        c = client(g, key=anon)
        await c.connect()
        await c.set_auth(user(es_key, "ES256", "es-1"))
        events, states = asyncio.Queue(), []
        mine = c.channel("session:demo")
        mine.on_broadcast("qr_generated", events.put_nowait)
        await mine.subscribe(lambda state, err: states.append((state, err)))
        assert states[-1][0] == RealtimeSubscribeStates.SUBSCRIBED, states
        status, _, body = call(g, "POST", "/api/v1/sessions/refresh-qr", {"sessionId": "demo"}, key=ADMIN)
        assert status == 200, (status, body)
        got = await asyncio.wait_for(events.get(), 15)
        assert got["payload"]["sessionId"] == "demo", got
        theirs = c.channel("session:other")
        await theirs.subscribe(lambda state, err: states.append((state, err)))
        assert states[-1][0] == RealtimeSubscribeStates.CHANNEL_ERROR and "does not open session other" in str(states[-1][1]), states[-1]
        await c.close()

        # Protocol 2.0.0 with an RS256 user token and a service_role apikey; refusals name their reason.
        async def join(apikey, token, topic, vsn="2.0.0"):
            async with websockets.connect(f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={apikey}&vsn={vsn}") as ws:
                await ws.send(json.dumps(["1", "1", topic, "phx_join", {"config": {}, "access_token": token}]))
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if m[3] == "phx_reply":
                        return m[4]
        r = await join(anon, user(rs_key, "RS256", "rs-1"), "realtime:session:demo")
        assert r["status"] == "ok", r
        r = await join(service, service, "realtime:session:other")
        assert r["status"] == "ok", r
        for token, reason in ((user(es_key, "ES256", "es-1", exp=-30), "token has expired"),
                              (user(stranger, "ES256", "es-1"), "token signature invalid"),
                              (user(stranger, "ES256", "es-9"), "no key with kid es-9"),
                              (user(es_key, "ES256", "es-1", aud="someone-else"), "audience"),
                              (user(secret, "HS256", "rs-1"), "does not match"),
                              (jwt.encode({"role": "anon", "exp": now + 60}, "x" * 40, algorithm="HS256"), "token signature invalid")):
            r = await join(anon, token, "realtime:session:demo")
            assert r["status"] == "error" and reason in r["response"]["reason"] and "Invalid JWT" in r["response"]["reason"], (reason, r)

        # An expired apikey never gets a socket: 401 with the reason.
        expired_anon = jwt.encode({"role": "anon", "exp": now - 5}, secret, algorithm="HS256")
        with socket.create_connection((g.host, g.port), timeout=5) as raw:
            raw.sendall((f"GET /realtime/v1/websocket?apikey={expired_anon}&vsn=2.0.0 HTTP/1.1\r\nHost: {g.host}\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            answer = b""
            while b"expired" not in answer:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert b" 401 " in answer.split(b"\r\n", 1)[0] and b"Invalid JWT: token has expired" in answer, answer

        # On a topic that is not a session's, browsers (the anon key) are among themselves: they never hear services.
        socks = {}
        for name, key in (("anon", anon), ("svc1", service), ("svc2", service)):
            socks[name] = await websockets.connect(f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={key}&vsn=1.0.0")
            await socks[name].send(json.dumps({"topic": "realtime:ops", "event": "phx_join", "ref": "1", "join_ref": "1",
                                               "payload": {"config": {"broadcast": {"self": False}}}}))
            while json.loads(await asyncio.wait_for(socks[name].recv(), 5))["event"] != "phx_reply":
                pass
        await socks["svc1"].send(json.dumps({"topic": "realtime:ops", "event": "broadcast", "ref": None,
                                             "payload": {"type": "broadcast", "event": "deploy", "payload": {"secret": 1}}}))
        assert json.loads(await asyncio.wait_for(socks["svc2"].recv(), 5))["payload"]["event"] == "deploy"
        with pytest.raises(asyncio.TimeoutError):
            while True:
                m = json.loads(await asyncio.wait_for(socks["anon"].recv(), 1))
                assert m["event"] != "broadcast", m
        for ws in socks.values():
            await ws.close()

        # QRGate's own socket takes the same user token: its session, and no other.
        async with websockets.connect(f"ws://{g.host}:{g.port}/ws?token={user(es_key, 'ES256', 'es-1')}") as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["role"] == "browser"
            for session, action in (("other", "error"), ("demo", "subscribed")):
                await ws.send(json.dumps({"op": "subscribe", "session": session}))
                while (m := json.loads(await asyncio.wait_for(ws.recv(), 5)))["action"] not in ("error", "subscribed"):
                    pass
                assert m["action"] == action, (session, m)
    run(main(), 60)

    # The same tokens on the REST API: service_role lists everything, a user's token sees its own session only.
    status, _, body = call(g, "GET", "/api/v1/sessions", key=service)
    assert status == 200, (status, body)
    status, _, body = call(g, "GET", "/api/v1/sessions/status?sessionId=demo", key=user(es_key, "ES256", "es-1"))
    assert status == 200, (status, body)
    status, _, body = call(g, "GET", "/api/v1/sessions/status?sessionId=other", key=user(es_key, "ES256", "es-1"))
    assert status == 403, (status, body)
