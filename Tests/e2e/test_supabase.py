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
        return subprocess.run(["zbarimg", "--quiet", "--raw", "-Sbinary", f.name], capture_output=True, timeout=30).stdout.decode()
    finally:
        os.unlink(f.name)


def current_code(g, instance):
    with urllib.request.urlopen(g.http + "/simulator/state", timeout=5) as r:
        return next(i["code"] for i in json.loads(r.read())["instances"] if i["name"] == instance)


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
        assert set(rec) == {"instance_name", "instance_status", "qr_code", "last_qr_update", "qr_expires_at", "attempt"}
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
