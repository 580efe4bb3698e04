"""`formats` on subscribe: each combination gets only the pictures it asked for, and every picture decodes
(zbar) to the same QR text, carried by the same event."""
import asyncio
import base64
import itertools
import json
import subprocess

import websockets

TIMEOUT = 10
FIELDS = {"code": "qrText", "svg": "qrSvg", "png": "qrCode"}
COMBOS = [list(c) for n in (1, 2, 3) for c in itertools.combinations(["code", "svg", "png"], n)]


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def until(ws, action):
    while True:
        m = await recv_json(ws)
        if m.get("action") == action:
            return m


def zbar(path):
    return subprocess.run(["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", "-Sbinary", str(path)],
                          capture_output=True, timeout=30).stdout.decode()


def decode_svg(svg, tmp_path):
    (tmp_path / "q.svg").write_text(svg)
    shot = tmp_path / "q.png"
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=600,600",
                    f"file://{tmp_path / 'q.svg'}"], capture_output=True, timeout=120)
    return zbar(shot)


def decode_png_data_url(url, tmp_path):
    assert url.startswith("data:image/png;base64,")
    (tmp_path / "p.png").write_bytes(base64.b64decode(url.split(",", 1)[1]))
    return zbar(tmp_path / "p.png")


def test_every_format_combination_carries_the_same_code(gateway, tmp_path):
    async def main():
        socks = []
        try:
            # Wait until the demo session shows its first QR, so the refresh below makes the only new one.
            async with websockets.connect(gateway.ws, open_timeout=TIMEOUT) as ws:
                await until(ws, "hello")
                await ws.send(json.dumps({"op": "subscribe", "session": "demo", "formats": ["code"]}))
                while True:
                    m = await recv_json(ws)
                    if m.get("action") == "qr_generated" or (m.get("action") == "snapshot" and m.get("qrText")):
                        break
            for combo in [None] + COMBOS:
                ws = await websockets.connect(gateway.ws, open_timeout=TIMEOUT, max_size=None)
                socks.append((combo, ws))
                await until(ws, "hello")
                msg = {"op": "subscribe", "session": "demo"}
                if combo is not None:
                    msg["formats"] = combo
                await ws.send(json.dumps(msg))
                sub = await until(ws, "subscribed")
                assert sub["formats"] == (combo if combo is not None else ["svg", "png"])
                snap = await until(ws, "snapshot")
                expected = set(FIELDS[f] for f in (combo or ["svg", "png"]))
                assert {k for k in FIELDS.values() if k in snap} == expected
            # One admin refresh (demo mode: everyone is admin): one new QR for every subscriber.
            await socks[0][1].send(json.dumps({"op": "refresh", "session": "demo"}))
            frames = {}
            for combo, ws in socks:
                await until(ws, "qr_regenerating")
                m = await until(ws, "qr_generated")
                frames[tuple(combo or ["svg", "png"]) if combo else None] = m
            seqs = {m["seq"] for m in frames.values()}
            assert len(seqs) == 1, "every subscriber sees the same event"
            for combo, m in frames.items():
                wanted = {FIELDS[f] for f in (combo or ("svg", "png"))}
                assert {k for k in FIELDS.values() if k in m} == wanted, (combo, sorted(m))
                assert all(isinstance(m[k], str) and m[k] for k in wanted)
            # The same picture for everyone who asked for it, and each kind decodes to the code.
            texts = {m["qrText"] for m in frames.values() if "qrText" in m}
            svgs = {m["qrSvg"] for m in frames.values() if "qrSvg" in m}
            pngs = {m["qrCode"] for m in frames.values() if "qrCode" in m}
            assert len(texts) == len(svgs) == len(pngs) == 1
            text = texts.pop()
            assert decode_svg(svgs.pop(), tmp_path) == text
            assert decode_png_data_url(pngs.pop(), tmp_path) == text
            # Only the asked-for pictures: an SVG-only frame is the standard one without its PNG.
            assert len(json.dumps(frames[None])) - len(json.dumps(frames[("svg",)])) >= len(frames[None]["qrCode"])
            assert len(json.dumps(frames[("code",)])) < 1500
            # Replays with `since` honour the formats too.
            ws = await websockets.connect(gateway.ws, open_timeout=TIMEOUT, max_size=None)
            socks.append((None, ws))
            await until(ws, "hello")
            seq = seqs.pop()
            await ws.send(json.dumps({"op": "subscribe", "session": "demo", "since": seq - 1, "formats": ["code"]}))
            await until(ws, "subscribed")
            replayed = await recv_json(ws)
            assert replayed["action"] == "qr_generated" and replayed["seq"] == seq
            assert replayed["qrText"] == text and "qrSvg" not in replayed and "qrCode" not in replayed
        finally:
            for _, ws in socks:
                await ws.close()

    asyncio.run(asyncio.wait_for(main(), 120))


def test_bad_formats_are_refused_with_a_reason(gateway):
    async def main():
        async with websockets.connect(gateway.ws, open_timeout=TIMEOUT) as ws:
            await until(ws, "hello")
            for bad in ([], ["jpeg"], "svg", [1]):
                await ws.send(json.dumps({"op": "subscribe", "session": "demo", "formats": bad}))
                err = await recv_json(ws)
                assert err["action"] == "error" and err["code"] == "invalid_message" and "formats" in err["reason"]
            await ws.send(json.dumps({"op": "ping"}))
            assert (await recv_json(ws))["action"] == "pong"

    asyncio.run(asyncio.wait_for(main(), 60))
