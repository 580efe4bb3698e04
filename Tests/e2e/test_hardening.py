"""Bad input of every kind gets a clear error or close code and never disturbs anyone else."""
import asyncio
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import time
import urllib.request

import pytest
import websockets

import rawws
from apihelp import call


def run(coro, limit=60):
    return asyncio.run(asyncio.wait_for(coro, limit))


async def recv(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def ws_json_frames(s, rest, n):
    out = []
    while len(out) < n:
        op, payload, rest = rawws.read_frame(s, rest)
        if op == 1:
            out.append(json.loads(payload))
        elif op == 8:
            out.append({"close": struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None})
            break
    return out, rest


def still_serving(g):
    async def check():
        async with websockets.connect(g.ws) as ws:
            assert (await recv(ws))["action"] == "hello"
            await ws.send('{"op":"ping"}')
            assert (await recv(ws))["action"] == "pong"
    run(check())
    with urllib.request.urlopen(g.http + "/healthz", timeout=5) as r:
        assert r.status == 200


def test_malformed_messages_get_error_frames_and_the_socket_stays(gateway):
    cases = {
        '{"op":"subscribe","session":5}': "invalid_message",
        '{"op":"subscribe","session":"demo","since":"yesterday"}': "invalid_message",
        '{"op":"subscribe","session":"demo","since":1e400}': "invalid_json",
        '{"op":"subscribe","session":"demo","since":123456789012345678901234567890}': "invalid_message",
        '{"op":"subscribe","session":"demo","colour":"red"}': "invalid_message",
        '{"op":"ping"': "invalid_json",
        '"just a string"': "invalid_message",
        '{"op":null}': "invalid_message",
        '{"op":"subscribe","session":"' + "x" * 200 + '"}': "invalid_message",
        '[' * 100 + ']' * 100: "invalid_message",
    }

    async def main():
        async with websockets.connect(gateway.ws) as ws:
            await recv(ws)
            for text, code in cases.items():
                await ws.send(text)
                m = await recv(ws)
                assert m["action"] == "error" and m["code"] in (code, "invalid_json", "invalid_message"), (text, m)
                assert m["reason"] and len(m["reason"]) < 200
            await ws.send('{"op":"ping"}')
            assert (await recv(ws))["action"] == "pong"
    run(main())


def test_invalid_utf8_closes_1007_and_others_carry_on(gateway):
    s, rest = rawws.connect(gateway.host, gateway.port)
    msgs, rest = ws_json_frames(s, rest, 1)
    assert msgs[0]["action"] == "hello"
    s.sendall(rawws.frame(0x1, b'{"op":"ping","x":"\xff\xfe"}'))
    msgs, _ = ws_json_frames(s, rest, 5)
    assert msgs[-1] == {"close": 1007}
    s.close()
    still_serving(gateway)


def test_fragmented_message_with_an_interleaved_ping(gateway):
    s, rest = rawws.connect(gateway.host, gateway.port)
    _, rest = ws_json_frames(s, rest, 1)
    s.sendall(rawws.frame(0x1, b'{"op":', fin=False) + rawws.frame(0x9, b"hi") + rawws.frame(0x0, b'"ping"}', fin=True))
    got_pong_control = got_pong_json = False
    deadline = time.monotonic() + 5
    while not (got_pong_control and got_pong_json) and time.monotonic() < deadline:
        op, payload, rest = rawws.read_frame(s, rest)
        if op == 0xA:
            got_pong_control = payload == b"hi"
        elif op == 0x1:
            got_pong_json = json.loads(payload)["action"] == "pong"
    assert got_pong_control and got_pong_json
    # A continuation with no message started is a protocol error: closed, nobody else notices.
    s.sendall(rawws.frame(0x0, b"orphan"))
    s.settimeout(5)
    closed = False
    try:
        while True:
            op, payload, rest = rawws.read_frame(s, rest)
            if op == 8:
                closed = struct.unpack("!H", payload[:2])[0] == 1002
                break
    except socket.timeout:
        pytest.fail("the server ignored an orphan continuation frame")
    except ConnectionError:
        closed = True
    assert closed
    s.close()
    still_serving(gateway)


def test_abrupt_disconnects_mid_frame(gateway):
    for cut in (1, 2, 5, 9):
        s, rest = rawws.connect(gateway.host, gateway.port)
        whole = rawws.frame(0x1, b'{"op":"ping","pad":"' + b"x" * 300 + b'"}')
        s.sendall(whole[:cut])
        s.close()
    s, rest = rawws.connect(gateway.host, gateway.port)
    s.sendall(rawws.frame(0x1, b"x" * 1000)[:500])
    s.shutdown(socket.SHUT_RDWR)
    s.close()
    still_serving(gateway)


def test_random_frames_never_crash_the_server(gateway):
    rnd = random.Random(1234)
    for i in range(150):
        try:
            s, rest = rawws.connect(gateway.host, gateway.port, timeout=5)
            kind = i % 3
            if kind == 0:
                s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300))))
            elif kind == 1:
                s.sendall(rawws.frame(rnd.choice([0, 1, 2, 3, 8, 9, 10, 11, 15]), bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 200))),
                                      fin=rnd.random() < 0.7, mask=rnd.random() < 0.9, rsv=rnd.randint(0, 7) if rnd.random() < 0.2 else 0))
            else:
                doc = {"op": rnd.choice(["subscribe", "refresh", "ping", "unsubscribe", "x"]),
                       "session": rnd.choice(["demo", "*", "", "ä" * 5, None, 7, ["a"]]),
                       "since": rnd.choice([None, -1, 0, 2 ** 70, "1", 1.5])}
                s.sendall(rawws.frame(0x1, json.dumps(doc).encode()))
            s.settimeout(0.2)
            try:
                s.recv(65536)
            except OSError:
                pass
            s.close()
        except (ConnectionError, OSError):
            pass
    assert gateway.alive()
    still_serving(gateway)


def test_message_rate_subscription_and_connection_limits(gateway_factory):
    sessions = [{"sessionId": f"s{i}"} for i in range(66)]
    g = gateway_factory({"server": {"messagesPerSecond": 10, "maxConnectionsPerIP": 4, "maxSubscriptionsPerConnection": 64}, "sessions": sessions,
                         "qr": {"ttlSeconds": 60}, "poll": {"intervalSeconds": 30}})

    async def main():
        # Rate: a burst of 20 is fine, 40 at once is not → 4029.
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            for _ in range(40):
                await ws.send('{"op":"ping"}')
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await recv(ws)
            assert closed.value.rcvd.code == 4029
        # Subscriptions: server.maxSubscriptionsPerConnection (64 here), one by one or in a list.
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            codes = []
            for i in range(65):
                await ws.send(json.dumps({"op": "subscribe", "session": f"s{i}"}))
                while True:
                    m = await recv(ws)
                    if m["action"] in ("subscribed", "error"):
                        codes.append(m.get("code", "ok"))
                        break
                if i % 8 == 7:
                    await asyncio.sleep(1)  # stay under the message rate
            assert codes[:64] == ["ok"] * 64 and codes[64] == "too_many_subscriptions"
            await asyncio.sleep(1)
            await ws.send(json.dumps({"op": "subscribe", "sessions": ["s0", "s65"]}))
            m = await recv(ws)
            while m["action"] not in ("subscribed", "error"):
                m = await recv(ws)
            assert m.get("code") == "too_many_subscriptions" and "maxSubscriptionsPerConnection" in m["reason"]
        # Connections per IP: the fifth is refused at the handshake; the first four work.
        conns = [await websockets.connect(g.ws) for _ in range(4)]
        with pytest.raises(Exception):
            await websockets.connect(g.ws, open_timeout=5)
        for c in conns:
            assert (await recv(c))["action"] == "hello"
            await c.close()
        await asyncio.sleep(0.3)
        async with websockets.connect(g.ws) as ws:
            assert (await recv(ws))["action"] == "hello"
    run(main(), limit=90)


def test_http_limits_header_body_and_json_depth(gateway_factory):
    g = gateway_factory({"server": {"maxBodyBytes": 4096}})
    status, _, body = call(g, "POST", "/api/v1/sessions", raw=b"{" + b" " * 10000 + b"}")
    assert status == 413 and "4096" in body["error"]
    deep = ("[" * 50 + "]" * 50).encode()
    status, _, body = call(g, "POST", "/api/v1/sessions", raw=deep)
    assert status == 400 and "deeper" in body["error"]
    for raw, word in ((b"not json", "JSON"), (b'{"sessionId": 5}', "string"), (b'{"sessionId": "ok", "x": 1}', "unknown"),
                      (b'{"sessionId": "a b"}', "sessionId"), (b"\xff\xfe\xfd", "JSON")):
        status, _, body = call(g, "POST", "/api/v1/sessions", raw=raw)
        assert status == 400 and word in body["error"], (raw, body)
    # An oversize header block: refused, and the server keeps serving.
    s = socket.create_connection((g.host, g.port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    reply = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    except OSError:
        pass
    s.close()
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:100]
    still_serving(g)


def test_tls_serves_https_and_wss(gateway_factory, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    g = gateway_factory({"server": {"tlsCert": str(cert), "tlsKey": str(key)}})
    ctx = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(f"https://127.0.0.1:{g.port}/healthz", context=ctx, timeout=10) as r:
        assert r.status == 200 and json.loads(r.read())["status"] == "ok"

    async def main():
        async with websockets.connect(f"wss://127.0.0.1:{g.port}/ws", ssl=ctx) as ws:
            assert (await recv(ws))["action"] == "hello"
    run(main())
    # Plain text on the TLS port is refused, not served.
    with pytest.raises(Exception):
        urllib.request.urlopen(f"http://127.0.0.1:{g.port}/healthz", timeout=5).read()
    assert g.alive()


def test_random_rest_bodies_get_4xx_and_never_crash(gateway_factory):
    g = gateway_factory({"auth": {"adminKeys": ["adm-key-0123456789"]}, "demoSession": ""})
    rnd = random.Random(99)
    paths = ["/api/v1/sessions", "/api/v1/sessions/init/", "/api/v1/sessions/refresh-qr/", "/api/v1/sessions/disconnect/",
             "/api/v1/upstream/token", "/webhooks/evolution", "/functions/v1/refresh-qr-codes"]
    seeds = [b'{"sessionId":"a1","numberId":"1"}', b'{"accessToken":"abcdefghij","expiresIn":60}',
             b'{"event":"connection.update","instance":"a1","data":{"state":"open"},"apikey":"x"}']
    statuses = set()
    for i in range(300):
        body = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(0, 5)):
            if body and rnd.random() < 0.5:
                body[rnd.randrange(len(body))] = rnd.getrandbits(8)
            else:
                body[rnd.randrange(len(body) + 1):0] = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 4)))
        status, _, reply = call(g, "POST", rnd.choice(paths), raw=bytes(body), key="adm-key-0123456789")
        statuses.add(status)
        assert status < 500, (status, bytes(body), reply)
        assert isinstance(reply, dict) and "success" in reply, reply
    assert g.alive()
    assert any(400 <= s < 500 for s in statuses)
