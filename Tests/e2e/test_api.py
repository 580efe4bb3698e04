"""The sessions REST API, roles, browser tokens and upstream credentials, against docs/openapi.yaml."""
import asyncio
import hashlib
import json
import re
import time

import pytest
import websockets

from apihelp import call, conforms
from conftest import qrgate, qrgate_process

ADMIN = "adm-key-0123456789"
SERVICE = "svc-key-0123456789"
BASE = {"qr": {"ttlSeconds": 30, "maxAttempts": 2}, "poll": {"intervalSeconds": 1}, "refresh": {"minIntervalSeconds": 3},
        "auth": {"adminKeys": ["sha256:" + hashlib.sha256(ADMIN.encode()).hexdigest()], "serviceKeys": [SERVICE]},
        "demoSession": ""}


def run(coro, limit=30):
    return asyncio.run(asyncio.wait_for(coro, limit))


async def recv(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_init_status_list_and_stale(gateway_factory):
    g = gateway_factory(BASE)
    status, _, body = call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "a1"})
    assert status == 401
    conforms("/api/v1/sessions/init/", "post", status, body)
    status, _, body = call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "a1", "numberId": "5511999"}, key=SERVICE)
    assert status == 200, body
    conforms("/api/v1/sessions/init/", "post", status, body)
    assert body["data"]["qrCode"].startswith("data:image/png;base64,") and body["data"]["status"] == "pending"
    assert body["data"]["message"] == "QR code generated. Please scan within 30 seconds."
    # init again: same session, same QR, no error
    status, _, again = call(g, "POST", "/api/v1/sessions/init", {"sessionId": "a1"}, key=SERVICE)
    assert status == 200 and again["data"]["qrCode"] == body["data"]["qrCode"]

    status, _, st = call(g, "GET", "/api/v1/sessions/status/?sessionId=a1", key=SERVICE)
    conforms("/api/v1/sessions/status/", "get", status, st)
    assert st["data"]["phoneNumber"] == "5511999" and st["data"]["isReady"] is False and st["data"]["attempt"] == 0
    assert call(g, "GET", "/api/v1/sessions/status/?sessionId=nope", key=SERVICE)[0] == 404
    assert call(g, "GET", "/api/v1/sessions/status/?sessionId=a1")[0] == 401

    time.sleep(1.2)
    status, _, rows = call(g, "GET", "/api/v1/sessions/", key=ADMIN)
    conforms("/api/v1/sessions/", "get", status, rows)
    assert [r["sessionId"] for r in rows["data"]["sessions"]] == ["a1"] and rows["data"]["sessions"][0]["qrAgeSeconds"] >= 1
    assert call(g, "GET", "/api/v1/sessions/?stale=300", key=ADMIN)[2]["data"]["count"] == 0
    assert call(g, "GET", "/api/v1/sessions/?stale=0.5", key=ADMIN)[2]["data"]["count"] == 1
    # A service key lists too (backend services watch every session anyway).
    status, _, listed = call(g, "GET", "/api/v1/sessions/", key=SERVICE)
    assert status == 200 and [r["sessionId"] for r in listed["data"]["sessions"]] == ["a1"]
    conforms("/api/v1/sessions/", "get", status, listed)
    assert call(g, "GET", "/api/v1/sessions/?stale=soon", key=ADMIN)[0] == 400


def test_refresh_rate_limit_connected_and_disconnect(gateway_factory):
    g = gateway_factory(BASE)
    call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "r1"}, key=SERVICE)
    assert call(g, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "ghost"}, key=SERVICE)[0] == 404
    status, _, body = call(g, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "r1"}, key=SERVICE)
    conforms("/api/v1/sessions/refresh-qr/", "post", status, body)
    assert status == 200 and body["data"]["message"] == "QR code refreshed. Please scan within 30 seconds."
    assert body["data"]["attempt"] == 0
    status, headers, body = call(g, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "r1"}, key=SERVICE)
    assert status == 429 and int(headers["Retry-After"]) in (1, 2, 3)
    conforms("/api/v1/sessions/refresh-qr/", "post", status, body)

    call(g, "POST", "/simulator/scan/r1")
    deadline = time.monotonic() + 5
    while call(g, "GET", "/api/v1/sessions/status/?sessionId=r1", key=SERVICE)[2]["data"]["status"] != "connected":
        assert time.monotonic() < deadline, "never connected"
        time.sleep(0.1)
    time.sleep(3)
    status, _, body = call(g, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "r1"}, key=SERVICE)
    assert status == 400 and body["error"] == "Session already connected. No QR needed."

    async def watch_disconnect():
        async with websockets.connect(f"ws://{g.host}:{g.port}/ws?token={SERVICE}") as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "r1"}))
            await recv(ws)
            await recv(ws)  # snapshot
            status, _, body = call(g, "POST", "/api/v1/sessions/disconnect/", {"sessionId": "r1"}, key=SERVICE)
            conforms("/api/v1/sessions/disconnect/", "post", status, body)
            assert body["data"]["status"] == "disconnected" and body["data"]["qrCode"] is None and body["data"]["qrExpiresAt"] is None
            while True:
                m = await recv(ws)
                if m["action"] == "disconnected":
                    return
    run(watch_disconnect())


def test_browser_tokens_open_exactly_their_session(gateway_factory):
    g = gateway_factory({**BASE, "auth": {**BASE["auth"], "browserTokenTTLSeconds": 2}, "sessions": [{"sessionId": "t1"}, {"sessionId": "t2"}]})
    assert call(g, "POST", "/api/v1/sessions/t1/token", key=None)[0] == 401
    status, _, body = call(g, "POST", "/api/v1/sessions/t1/token", key=SERVICE)
    conforms("/api/v1/sessions/{id}/token", "post", status, body)
    token = body["data"]["token"]
    assert call(g, "POST", "/api/v1/sessions/ghost/token", key=SERVICE)[0] == 404
    # REST: the token reads its session's status, not another's, and not the list.
    assert call(g, "GET", "/api/v1/sessions/status/?sessionId=t1", key=token)[0] == 200
    assert call(g, "GET", "/api/v1/sessions/status/?sessionId=t2", key=token)[0] == 403
    assert call(g, "GET", "/api/v1/sessions/", key=token)[0] == 403
    head, payload, sig = token.split(".")
    tampered = ".".join([head, payload, ("A" if sig[0] != "A" else "B") + sig[1:]])
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")

    async def main():
        async with websockets.connect(f"ws://{g.host}:{g.port}/ws?token={token}") as ws:
            assert (await recv(ws))["role"] == "browser"
            await ws.send(json.dumps({"op": "subscribe", "session": "t2"}))
            e = await recv(ws)
            assert e["action"] == "error" and e["code"] == "unauthorized"
            await ws.send(json.dumps({"op": "subscribe", "session": "t1"}))
            assert (await recv(ws))["action"] == "subscribed"
            await ws.send(json.dumps({"op": "refresh", "session": "t1"}))
            while (m := await recv(ws))["action"] != "error":
                pass
            assert m["code"] == "forbidden"
        async with websockets.connect(f"ws://{g.host}:{g.port}/ws") as ws:
            await recv(ws)
            for bad, reason in ((tampered, "token signature invalid"), (head + "." + forged_payload + "." + sig, "token signature invalid"),
                                ("not.a.token", "malformed token"), ("random-key-xxxxxxxxxx", "key not recognised")):
                await ws.send(json.dumps({"op": "subscribe", "session": "t1", "token": bad}))
                e = await recv(ws)
                assert e["code"] == "unauthorized" and e["reason"] == reason, e
        await asyncio.sleep(2.2)
        async with websockets.connect(f"ws://{g.host}:{g.port}/ws") as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "t1", "token": token}))
            e = await recv(ws)
            assert e["code"] == "unauthorized" and e["reason"].startswith("token has expired"), e
    run(main())


def test_upstream_credential_endpoints_never_show_the_token(gateway_factory):
    sim = qrgate_process("simulate", "--port", "0")
    try:
        port = re.search(r":(\d+)", sim.stdout.readline()).group(1)
        base = f"http://127.0.0.1:{port}"
        g = gateway_factory({**BASE, "upstream": {"mode": "evolution", "baseURL": base, "apiKey": "qrgate-simulator-key",
                                                  "tokenURL": base + "/oauth/token", "tokenClientId": "qrgate",
                                                  "tokenClientSecret": "qrgate-simulator-secret"}})
        assert call(g, "GET", "/api/v1/upstream/token-status", key=SERVICE)[0] == 403
        status, _, body = call(g, "POST", "/api/v1/upstream/refresh-token", key=ADMIN)
        conforms("/api/v1/upstream/refresh-token", "post", status, body)
        assert body["data"]["state"] == "valid" and body["data"]["source"] == "token" and body["data"]["expiresInSeconds"] > 3000
        status, _, body = call(g, "GET", "/api/v1/upstream/token-status", key=ADMIN)
        conforms("/api/v1/upstream/token-status", "get", status, body)
        status, _, body = call(g, "POST", "/api/v1/upstream/token", {"accessToken": "sim_manual_token_value_123", "expiresIn": 600}, key=ADMIN)
        conforms("/api/v1/upstream/token", "post", status, body)
        assert body["data"]["state"] == "valid" and 590 <= body["data"]["expiresInSeconds"] <= 600
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    # Nothing the gateway printed holds a token.
    g.stop()
    logs = g.proc.stderr.read()
    assert "sim_" not in logs and "qrgate-simulator-key" not in logs and "qrgate-simulator-secret" not in logs


def test_origin_allow_list_refuses_others_at_the_handshake(gateway_factory):
    g = gateway_factory({"server": {"allowedOrigins": ["https://good.example"]}})

    async def main():
        async with websockets.connect(g.ws, origin="https://good.example") as ws:
            assert (await recv(ws))["action"] == "hello"
        with pytest.raises(Exception):
            async with websockets.connect(g.ws, origin="https://evil.example", open_timeout=5):
                pass
    run(main())
    assert g.alive()


def test_open_gateway_refuses_a_network_bind(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    r = qrgate("serve", "--host", "0.0.0.0", "--port", "0", "--config", str(cfg), timeout=20)
    assert r.returncode != 0 and "refusing to listen on 0.0.0.0 with no API keys" in r.stderr


def test_demo_mode_is_announced(gateway):
    gateway.stop()
    assert "DEMO MODE" in gateway.proc.stderr.read()
