"""The /ws endpoint driven by Python's `websockets` (a client nobody here wrote)."""
import asyncio
import json
import signal

import pytest
import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

TIMEOUT = 5


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_hello_ping_and_errors_keep_the_socket_usable(gateway):
    async def main():
        async with websockets.connect(gateway.ws, subprotocols=["qrgate.v1"], open_timeout=TIMEOUT) as ws:
            assert ws.subprotocol == "qrgate.v1"
            hello = await recv_json(ws)
            assert hello["action"] == "hello" and hello["server"] == "qrgate" and hello["protocol"] == 1
            await ws.send(json.dumps({"op": "ping"}))
            assert (await recv_json(ws))["action"] == "pong"
            await ws.send("this is not json")
            err = await recv_json(ws)
            assert err["action"] == "error" and err["code"] == "invalid_json" and err["reason"]
            await ws.send(json.dumps({"op": "teleport"}))
            err = await recv_json(ws)
            assert err["code"] == "unknown_op" and "teleport" in err["reason"]
            await ws.send(b"\x00\x01binary")
            assert (await recv_json(ws))["code"] == "binary_unsupported"
            await ws.send("")
            assert (await recv_json(ws))["code"] == "invalid_json"
            # Still usable after all of that.
            await ws.send(json.dumps({"op": "ping"}))
            assert (await recv_json(ws))["action"] == "pong"
    run(main())


def test_without_subprotocol_the_same_protocol_answers(gateway):
    async def main():
        async with websockets.connect(gateway.ws, open_timeout=TIMEOUT) as ws:
            assert ws.subprotocol is None
            assert (await recv_json(ws))["action"] == "hello"
    run(main())


def test_fragmented_message_is_reassembled(gateway):
    async def main():
        async with websockets.connect(gateway.ws, open_timeout=TIMEOUT) as ws:
            await recv_json(ws)
            await ws.send(iter(['{"op":', '"pi', 'ng"}']))
            assert (await recv_json(ws))["action"] == "pong"
    run(main())


def test_oversize_message_closes_with_1009(gateway_factory):
    g = gateway_factory({"server": {"maxMessageBytes": 1024}})

    async def main():
        async with websockets.connect(g.ws, open_timeout=TIMEOUT, max_size=None) as ws:
            await recv_json(ws)
            await ws.send("x" * 1025)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd.code == 1009
        # The server keeps serving others.
        async with websockets.connect(g.ws, open_timeout=TIMEOUT) as ws:
            assert (await recv_json(ws))["action"] == "hello"
    run(main())


def test_permessage_deflate_offers_from_many_connections_get_plain_connections(gateway):
    """lws 4.1.6 aborts under concurrent compressed traffic: offers must be declined, and the server stays up."""
    async def client(i):
        async with websockets.connect(gateway.ws, open_timeout=TIMEOUT,
                                      extensions=[ClientPerMessageDeflateFactory()]) as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
            await recv_json(ws)
            big = json.dumps({"op": "ping", "id": "x" * 4000 + str(i)})
            for _ in range(20):
                await ws.send(big)
                got = await recv_json(ws)
                assert got["action"] in ("pong", "error")
            return True

    async def main():
        results = await asyncio.gather(*(client(i) for i in range(12)))
        assert all(results)
    run(main())
    assert gateway.alive()


def test_wrong_path_is_refused(gateway):
    async def main():
        with pytest.raises(Exception):
            async with websockets.connect(f"ws://{gateway.host}:{gateway.port}/elsewhere", open_timeout=TIMEOUT):
                pass
    run(main())
    assert gateway.alive()


def test_sigterm_closes_connections_and_exits_zero(gateway):
    async def main():
        async with websockets.connect(gateway.ws, open_timeout=TIMEOUT) as ws:
            await recv_json(ws)
            gateway.proc.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    run(main())
    assert gateway.proc.wait(timeout=10) == 0


def test_sigint_exits_zero(gateway):
    gateway.proc.send_signal(signal.SIGINT)
    assert gateway.proc.wait(timeout=10) == 0


def test_bad_config_stops_startup_naming_the_key(tmp_path):
    from conftest import gateway_env, qrgate
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"qr": {"ttlSecs": 5}}')
    r = qrgate("serve", "--port", "0", "--config", str(cfg), timeout=20)
    assert r.returncode != 0
    assert "qr.ttlSecs" in r.stderr
    env = dict(gateway_env(), QRGATE_QR_TTLSECONDS="soon")
    r = qrgate("serve", "--port", "0", timeout=20, env=env)
    assert r.returncode != 0
    assert "QRGATE_QR_TTLSECONDS" in r.stderr


def test_simulate_command_serves_the_evolution_simulator(tmp_path):
    import re, urllib.request
    from conftest import qrgate_process
    p = qrgate_process("simulate", "--port", "0")
    try:
        line = p.stdout.readline()
        m = re.search(r"listening on http://127.0.0.1:(\d+)", line)
        assert m, line
        base = f"http://127.0.0.1:{m.group(1)}"
        req = urllib.request.Request(base + "/instance/create", data=b'{"instanceName":"cli-1"}', method="POST",
                                     headers={"apikey": "qrgate-simulator-key", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 201
        req = urllib.request.Request(base + "/instance/connect/cli-1", headers={"apikey": "qrgate-simulator-key"})
        with urllib.request.urlopen(req, timeout=5) as r:
            body = json.loads(r.read())
            assert body["code"].startswith("2@") and body["base64"].startswith("data:image/png;base64,")
        req = urllib.request.Request(base + "/instance/connect/cli-1", headers={"apikey": "wrong"})
        try:
            urllib.request.urlopen(req, timeout=5)
            assert False, "wrong key accepted"
        except urllib.error.HTTPError as e:
            assert e.code == 401
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
