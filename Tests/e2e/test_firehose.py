"""Watching every session: "*", lists and prefixes, snapshots as paced batches, flow control by bytes and
time, resume with a since map, and tenant-scoped keys over WebSocket, REST and the Supabase endpoint."""
import asyncio
import json
import re
import time
import urllib.request

import websockets

import rawws
from apihelp import call

SERVICE = "svc-key-firehose-0123456789"
ADMIN = "adm-key-firehose-0123456789"


def run(coro, limit):
    return asyncio.run(asyncio.wait_for(coro, limit))


async def recv(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws, action, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        m = await recv(ws, max(0.1, deadline - time.monotonic()))
        if m["action"] == action:
            return m


async def snapshots(ws, stream, timeout=60):
    """Every item of a snapshot stream, and the frames that came between its batches."""
    items, other, batches = [], [], 0
    deadline = time.monotonic() + timeout
    while True:
        m = await recv(ws, max(0.1, deadline - time.monotonic()))
        if m["action"] == "snapshots" and m["stream"] == stream:
            batches += 1
            assert len(m["items"]) <= 256 and len(json.dumps(m)) < 200_000
            items.extend(m["items"])
            if m["done"]:
                return items, other, batches
        else:
            other.append(m)


async def arriving(ws, seconds):
    """Every message that arrives within `seconds`, parsed."""
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(await recv(ws, max(0.1, deadline - time.monotonic())))
        except asyncio.TimeoutError:
            break
    return out


def metric(g, name, labels=None):
    """A sample of /metrics: the one with exactly these labels, or the first of that name."""
    body = urllib.request.urlopen(g.http + "/metrics", timeout=30).read().decode()
    pattern = re.escape(name) + (re.escape(labels) if labels else r"(?:\{[^}]*\})?") + r" (\S+)$"
    m = re.search("^" + pattern, body, re.M)
    return float(m.group(1)) if m else 0.0


def drain_until_close(s, pending, deadline):
    """Reads server frames (a backlog of megabytes: parsed in place, without copying what is left over)
    until the close frame; returns its code and reason, or (None, "") when the connection just ended."""
    buf, at = bytearray(pending), 0
    while time.monotonic() < deadline:
        while len(buf) - at >= 2:
            op, n, off = buf[at] & 0x0F, buf[at + 1] & 0x7F, 2
            if n == 126:
                if len(buf) - at < 4:
                    break
                n, off = int.from_bytes(buf[at + 2:at + 4], "big"), 4
            elif n == 127:
                if len(buf) - at < 10:
                    break
                n, off = int.from_bytes(buf[at + 2:at + 10], "big"), 10
            if len(buf) - at < off + n:
                break
            payload = bytes(buf[at + off:at + off + n])
            at += off + n
            if op == 8:
                return (int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None), payload[2:].decode(errors="replace")
        if at > 1 << 20:
            del buf[:at]
            at = 0
        try:
            chunk = s.recv(1 << 16)
        except OSError:
            return None, ""
        if not chunk:
            return None, ""
        buf += chunk
    return None, ""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_5000_sessions_one_star_subscriber_and_a_reader_that_stops(gateway_factory):
    """All 5 000 snapshots arrive as batches, then live events for 30 s without the subscriber ever being
    cut; meanwhile a second "*" subscriber stops reading: it is closed with 4008 once its unsent bytes have
    stayed over server.outboxBytes (512 KiB here) for server.slowConsumerSeconds (8 s), and the gateway's memory
    stays bounded."""
    n = 5000
    g = gateway_factory({"sessions": [{"sessionId": f"s{i:05d}"} for i in range(n)], "demoSession": "",
                         "auth": {"serviceKeys": [SERVICE]}, "store": {"mode": "memory"}, "log": {"level": "warning"},
                         # No QR expires during the test: 5 000 expiring at once is a refresh storm, another test's subject.
                         # A countdown every 2 s: 2 500 frames a second, which a Python client keeps up with even
                         # beside a debug build using both cores; the stalled reader's backlog is the same ~800 KB.
                         "qr": {"ttlSeconds": 600, "countdownIntervalSeconds": 2},
                         "simulator": {"firstQrSeconds": 600, "nextQrSeconds": 600},
                         "server": {"outboxBytes": 512 * 1024, "slowConsumerSeconds": 8}})
    expected = {f"s{i:05d}" for i in range(n)}

    def slow_reader():
        """A raw socket with a tiny receive window that subscribes and then stops reading until the gateway
        reports it closed (its backlog coalesces to about one countdown per session, ~800 KB: over the
        512 KiB bound but under the 2 MiB ceiling, so the time rule is what cuts it)."""
        s, rest = rawws.connect(g.host, g.port, rcvbuf=4096, timeout=20)
        op, hello, rest = rawws.read_frame(s, rest)
        assert json.loads(hello)["action"] == "hello"
        s.sendall(rawws.frame(1, json.dumps({"op": "subscribe", "session": "*", "formats": ["code"], "token": SERVICE}).encode()))
        base = rss_kib(g.proc.pid)
        peak, unsent, closed_at, t0 = base, 0, None, time.monotonic()
        while closed_at is None and time.monotonic() - t0 < 60:
            time.sleep(0.25)
            peak = max(peak, rss_kib(g.proc.pid))
            unsent = max(unsent, metric(g, "qrgate_outbox_bytes"))
            if metric(g, "qrgate_slow_consumers_closed_total") >= 1:
                closed_at = time.monotonic() - t0
        # Reading again: what was in flight, then the close frame with its code.
        code, reason = drain_until_close(s, rest, time.monotonic() + 20)
        s.close()
        return closed_at, code, reason, base, peak, unsent

    # Let every session come up first (5 000 QR fetches and renders, the busiest minute of a debug build):
    # what is measured after the snapshots is a steady firehose, 5 000 countdowns a second.
    deadline = time.monotonic() + 240
    while metric(g, "qrgate_events_pushed_total", '{type="qr_generated"}') < n:
        assert time.monotonic() < deadline, "the sessions never came up"
        time.sleep(0.5)

    async def main():
        ws = await websockets.connect(g.ws, max_size=None)
        await recv(ws)
        t0 = time.monotonic()
        await ws.send(json.dumps({"op": "subscribe", "session": "*", "formats": ["code"], "token": SERVICE}))
        sub = await until(ws, "subscribed")
        assert sub["count"] == n and sub["role"] == "service"
        slow = asyncio.create_task(asyncio.to_thread(slow_reader))
        items, between, batches = await snapshots(ws, sub["stream"])
        took = time.monotonic() - t0
        assert {i["sessionId"] for i in items} == expected and len(items) == n
        assert all(i["action"] == "snapshot" and "qrCode" not in i and "qrSvg" not in i for i in items)
        # Live events for 30 s: the socket stays open and keeps delivering.
        live, last, gap = {}, time.monotonic(), 0.0
        end = time.monotonic() + 30
        async with asyncio.timeout(40):
            while time.monotonic() < end:
                m = json.loads(await ws.recv())
                now = time.monotonic()
                gap, last = max(gap, now - last), now
                live[m["action"]] = live.get(m["action"], 0) + 1
        # Countdowns go out together once per interval (2 s here), computed for every watched session.
        assert live.get("countdown", 0) > 0.8 * 30 * n / 2 and gap < 3, (live, gap)
        assert time.monotonic() - last < 3
        await ws.send(json.dumps({"op": "ping"}))
        assert (await until(ws, "pong"))["action"] == "pong"
        closed_at, code, reason, base, peak, unsent = await slow
        await ws.close()
        return took, batches, live, closed_at, code, reason, base, peak, unsent

    took, batches, live, closed_at, code, reason, base, peak, unsent = run(main(), 180)
    print(f"5000 snapshots in {took:.1f} s ({batches} batches); live {live}; slow reader cut after {closed_at:.1f} s "
          f"with {code} {reason!r}; unsent bytes at most {unsent / 1024:.0f} KiB; RSS {base} KiB → peak {peak} KiB")
    assert closed_at is not None and closed_at >= 8, closed_at
    assert code == 4008 and re.fullmatch(r"slow consumer: over 524288 bytes unsent for \d+ s", reason), reason
    # Bounded: never more unsent than four times server.outboxBytes (the hard ceiling) plus what the fast
    # reader has in flight; the process grows by far less than an unbounded backlog would.
    assert unsent <= 4 * 512 * 1024 + (1 << 20), unsent
    assert peak - base < 160 * 1024, (base, peak)
    assert metric(g, "qrgate_slow_consumers_closed_total") == 1
    assert g.alive()


def test_lists_prefixes_and_resume_with_a_since_map(gateway_factory):
    ids = ["shop-1", "shop-2", "cafe-1"]
    g = gateway_factory({"sessions": [{"sessionId": i} for i in ids], "demoSession": "", "store": {"mode": "memory"},
                         "auth": {"serviceKeys": [SERVICE], "adminKeys": [ADMIN]}, "refresh": {"minIntervalSeconds": 0},
                         "qr": {"ttlSeconds": 60}})

    async def main():
        ws = await websockets.connect(g.ws + "?token=" + SERVICE, max_size=None)
        await recv(ws)
        # A list: its sessions' snapshots in a stream, then their events only.
        await ws.send(json.dumps({"op": "subscribe", "sessions": ["shop-1", "cafe-1"], "formats": ["code"]}))
        sub = await until(ws, "subscribed")
        assert sub["sessions"] == ["shop-1", "cafe-1"] and sub["count"] == 2
        items, _, _ = await snapshots(ws, sub["stream"])
        assert sorted(i["sessionId"] for i in items) == ["cafe-1", "shop-1"]
        # Unknown ids refuse the whole list, naming them.
        await ws.send(json.dumps({"op": "subscribe", "sessions": ["shop-1", "nope-1"]}))
        err = await until(ws, "error")
        assert err["code"] == "unknown_session" and err["sessions"] == ["nope-1"]
        # A prefix: present sessions, then a session created later.
        await ws.send(json.dumps({"op": "subscribe", "prefix": "shop-", "formats": ["code"]}))
        sub = await until(ws, "subscribed")
        assert sub["prefix"] == "shop-" and sub["count"] == 2
        items, _, _ = await snapshots(ws, sub["stream"])
        assert sorted(i["sessionId"] for i in items) == ["shop-1", "shop-2"]
        status, _, _ = call(g, "POST", "/api/v1/sessions", {"sessionId": "shop-9"}, key=ADMIN)
        assert status == 201
        status, _, _ = call(g, "POST", "/api/v1/sessions/init", {"sessionId": "shop-9"}, key=SERVICE)
        assert status in (200, 202)
        deadline = time.monotonic() + 10
        while True:
            m = await recv(ws, max(0.1, deadline - time.monotonic()))
            if m.get("sessionId") == "shop-9" and m["action"] == "qr_generated":
                assert "qrText" in m and "qrCode" not in m
                break
        await ws.close()

        # Resume: "*" with a since map replays what each named session missed; the others get snapshots.
        ws = await websockets.connect(g.ws + "?token=" + SERVICE, max_size=None)
        await recv(ws)
        await ws.send(json.dumps({"op": "subscribe", "session": "*", "formats": ["code"]}))
        sub = await until(ws, "subscribed")
        items, _, _ = await snapshots(ws, sub["stream"])
        seen = {i["sessionId"]: i["seq"] for i in items}
        assert set(seen) == {"shop-1", "shop-2", "shop-9", "cafe-1"}
        await ws.close()
        for sid in ("shop-1", "cafe-1"):  # they move on while nobody watches
            status, _, _ = call(g, "POST", "/api/v1/sessions/refresh-qr", {"sessionId": sid}, key=SERVICE)
            assert status == 200, status
        ws = await websockets.connect(g.ws + "?token=" + SERVICE, max_size=None)
        await recv(ws)
        since = {"shop-1": seen["shop-1"], "cafe-1": seen["cafe-1"], "shop-2": seen["shop-2"], "shop-9": 10_000}
        await ws.send(json.dumps({"op": "subscribe", "session": "*", "since": since, "formats": ["code"]}))
        sub = await until(ws, "subscribed")
        items, between, _ = await snapshots(ws, sub["stream"])
        replayed = [m for m in between if m.get("sessionId") in ("shop-1", "cafe-1") and m["action"] != "countdown"]
        assert {m["sessionId"] for m in replayed} == {"shop-1", "cafe-1"}
        for sid in ("shop-1", "cafe-1"):
            seqs = [m["seq"] for m in replayed if m["sessionId"] == sid]
            assert seqs == sorted(seqs) and seqs[0] == seen[sid] + 1 and any(m["action"] == "qr_generated" for m in replayed if m["sessionId"] == sid)
        by_id = {i["sessionId"]: i for i in items}
        # shop-2 had nothing new (at most a countdown replayed), shop-9's seq was from elsewhere: a snapshot, not recovered.
        assert "shop-1" not in by_id and "cafe-1" not in by_id
        assert by_id["shop-9"]["recovered"] is False
        await ws.send(json.dumps({"op": "unsubscribe", "session": "*"}))
        assert (await until(ws, "unsubscribed"))["sessionId"] == "*"
        await ws.close()
    run(main(), 90)


def test_a_tenant_key_sees_only_its_prefix_everywhere(gateway_factory):
    shop, cafe_admin = "shop-key-0123456789abcdef", "cafe-admin-0123456789abcdef"
    g = gateway_factory({"sessions": [{"sessionId": i} for i in ("shop-1", "shop-2", "cafe-1")], "demoSession": "",
                         "store": {"mode": "memory"}, "refresh": {"minIntervalSeconds": 0}, "qr": {"ttlSeconds": 60},
                         "auth": {"serviceKeys": [{"key": shop, "prefix": "shop-"}],
                                  "adminKeys": [ADMIN, {"key": cafe_admin, "prefix": "cafe-"}]}})

    async def main():
        ws = await websockets.connect(g.ws + "?token=" + shop, max_size=None)
        await recv(ws)
        await ws.send(json.dumps({"op": "subscribe", "session": "*", "formats": ["code"]}))
        sub = await until(ws, "subscribed")
        assert sub["scope"] == ["shop-"] and sub["count"] == 2
        items, _, _ = await snapshots(ws, sub["stream"])
        assert sorted(i["sessionId"] for i in items) == ["shop-1", "shop-2"]
        for msg in ({"op": "subscribe", "session": "cafe-1"}, {"op": "subscribe", "prefix": "cafe-"},
                    {"op": "subscribe", "prefix": "s"}, {"op": "subscribe", "sessions": ["shop-1", "cafe-1"]}):
            await ws.send(json.dumps(msg))
            err = await until(ws, "error")
            assert err["code"] == "forbidden", (msg, err)
        assert "cafe-1" in err["reason"] and err["sessions"] == ["cafe-1"]
        # Another tenant's events never reach it: cafe-1 is refreshed by its own admin.
        cafe = await websockets.connect(g.ws + "?token=" + cafe_admin, max_size=None)
        await recv(cafe)
        await cafe.send(json.dumps({"op": "refresh", "session": "shop-1"}))
        err = await until(cafe, "error")
        assert err["code"] == "forbidden" and "shop-1" in err["reason"]
        await cafe.send(json.dumps({"op": "refresh", "session": "cafe-1"}))
        assert (await until(cafe, "refreshing"))["sessionId"] == "cafe-1"
        status, _, _ = call(g, "POST", "/api/v1/sessions/refresh-qr", {"sessionId": "shop-2"}, key=ADMIN)
        assert status == 200
        got = {m["sessionId"] for m in await arriving(ws, 6) if m.get("sessionId")}
        assert got == {"shop-1", "shop-2"}, got
        await ws.close()
        await cafe.close()
    run(main(), 60)

    # REST: the list, status, refresh, init, disconnect, browser tokens and gateway-wide endpoints.
    status, _, body = call(g, "GET", "/api/v1/sessions", key=shop)
    assert status == 200 and [s["sessionId"] for s in body["data"]["sessions"]] == ["shop-1", "shop-2"]
    status, _, body = call(g, "GET", "/api/v1/sessions", key=ADMIN)
    assert status == 200 and body["data"]["count"] == 3
    assert call(g, "GET", "/api/v1/sessions/status?sessionId=shop-1", key=shop)[0] == 200
    for method, path, body in (("GET", "/api/v1/sessions/status?sessionId=cafe-1", None),
                               ("POST", "/api/v1/sessions/refresh-qr", {"sessionId": "cafe-1"}),
                               ("POST", "/api/v1/sessions/disconnect", {"sessionId": "cafe-1"}),
                               ("POST", "/api/v1/sessions/init", {"sessionId": "cafe-2"}),
                               # its own session id, but another tenant's upstream instance
                               ("POST", "/api/v1/sessions/init", {"sessionId": "shop-5", "instanceName": "cafe-1"}),
                               ("POST", "/api/v1/sessions/cafe-1/token", None),
                               ("POST", "/functions/v1/refresh-qr-codes", None)):
        status, _, answer = call(g, method, path, body, key=shop)
        assert status == 403, (path, status, answer)
        assert "shop-" in answer["error"], answer
    assert call(g, "GET", "/api/v1/upstream/token-status", key=cafe_admin)[0] == 403
    assert call(g, "POST", "/api/v1/sessions", {"sessionId": "shop-7"}, key=cafe_admin)[0] == 403
    assert call(g, "POST", "/api/v1/sessions", {"sessionId": "cafe-7"}, key=cafe_admin)[0] == 201

    # The Supabase endpoint: rows of its own sessions only.
    async def supabase():
        url = f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={shop}&vsn=1.0.0"
        ws = await websockets.connect(url, max_size=None)
        await ws.send(json.dumps({"topic": "realtime:all", "event": "phx_join", "ref": "1", "join_ref": "1",
                                  "payload": {"config": {"postgres_changes": [{"event": "*", "schema": "public",
                                                                                "table": "evolution_instances"}]}}}))
        deadline = time.monotonic() + 5
        while True:
            m = await recv(ws, max(0.1, deadline - time.monotonic()))
            if m["event"] == "phx_reply":
                assert m["payload"]["status"] == "ok"
                break
        for sid in ("cafe-1", "shop-1"):
            status, _, _ = call(g, "POST", "/api/v1/sessions/refresh-qr", {"sessionId": sid}, key=ADMIN)
            assert status == 200
        rows = {m["payload"]["data"]["record"]["instance_name"] for m in await arriving(ws, 5) if m["event"] == "postgres_changes"}
        assert rows == {"shop-1"}, rows
        # Joining another tenant's session topic is refused (a filter on its rows just never matches, as with RLS).
        await ws.send(json.dumps({"topic": "realtime:session:cafe-1", "event": "phx_join", "ref": "2", "join_ref": "2",
                                  "payload": {"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "evolution_instances"}]}}}))
        while True:
            m = await recv(ws, 5)
            if m["event"] == "phx_reply" and m["ref"] == "2":
                assert m["payload"]["status"] == "error" and "cafe-1" in m["payload"]["response"]["reason"], m
                break
        await ws.close()

        # Broadcast topics are per tenant: the same topic name joined with another tenant's key is another room.
        async def joined(key):
            c = await websockets.connect(f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={key}&vsn=1.0.0", max_size=None)
            await c.send(json.dumps({"topic": "realtime:lobby", "event": "phx_join", "ref": "1", "join_ref": "1", "payload": {"config": {}}}))
            while (m := await recv(c, 5))["event"] != "phx_reply":
                pass
            assert m["payload"]["status"] == "ok"
            return c
        shop_a, shop_b, other = await joined(shop), await joined(shop), await joined(cafe_admin)
        await shop_a.send(json.dumps({"topic": "realtime:lobby", "event": "broadcast", "ref": None,
                                      "payload": {"type": "broadcast", "event": "hi", "payload": {"from": "shop"}}}))
        m = await recv(shop_b, 5)
        assert m["event"] == "broadcast" and m["payload"]["payload"] == {"from": "shop"}
        try:
            leaked = await recv(other, 1)
        except asyncio.TimeoutError:
            leaked = None
        assert leaked is None, leaked
        for c in (shop_a, shop_b, other):
            await c.close()
    run(supabase(), 30)
