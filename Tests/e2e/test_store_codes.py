"""The store keeps codes, not pictures (issue 19): after hundreds of rotations the SQLite file holds no drawn PNG or
SVG, superseded QR events are gone, and a client resuming with `since` after a restart still gets frames whose
pictures decode (zbar) to the right code."""
import asyncio
import base64
import json
import os
import re
import sqlite3
import subprocess
import time
import urllib.request

import websockets

from test_formats import decode_png_data_url


def metric(g, name, labels):
    body = urllib.request.urlopen(g.http + "/metrics", timeout=30).read().decode()
    m = re.search("^" + re.escape(name + labels) + r" (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


def test_two_hundred_rotations_store_no_pictures_and_replay_after_a_restart_decodes(gateway_factory, tmp_path):
    db = str(tmp_path / "q.sqlite")
    spinning = {"store": {"path": db}, "log": {"level": "warning"}, "poll": {"intervalSeconds": 0.1},
                "qr": {"ttlSeconds": 600, "maxAttempts": 5},
                "simulator": {"firstQrSeconds": 0.1, "nextQrSeconds": 0.1, "maxRefs": 100000},
                "sessions": [{"sessionId": f"r{i}"} for i in range(4)], "demoSession": ""}
    g = gateway_factory(spinning)
    deadline = time.monotonic() + 90
    while metric(g, "qrgate_events_pushed_total", '{type="qr_generated"}') < 200:
        assert time.monotonic() < deadline, "fewer than 200 rotations in 90 s"
        time.sleep(0.2)
    g.stop()

    con = sqlite3.connect(db)
    for table in ("sessions", "events"):
        for row in con.execute(f"SELECT * FROM {table}"):
            text = " ".join(x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in row)
            assert "data:image/png" not in text and "<svg" not in text, (table, text[:200])
    # One QR event per session at rest (each new one supersedes the last), whatever the number of rotations.
    per = dict(con.execute("SELECT session_id, COUNT(*) FROM events WHERE action = 'qr_generated' GROUP BY session_id").fetchall())
    assert per and all(n == 1 for n in per.values()), per
    seq, payload = con.execute("SELECT seq, payload FROM events WHERE session_id = 'r0' AND action = 'qr_generated'").fetchone()
    stored = json.loads(payload)
    assert stored["qrText"].startswith("2@") and "qrCode" not in stored and "qrSvg" not in stored
    size = os.path.getsize(db)
    con.close()

    # Back with the same store, quiet now: the client that saw seq-1 gets the QR event again, with pictures.
    g2 = gateway_factory({**spinning, "poll": {"intervalSeconds": 30}, "simulator": {"firstQrSeconds": 300, "nextQrSeconds": 300}})

    async def main():
        async with websockets.connect(g2.ws, max_size=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"op": "subscribe", "session": "r0", "since": seq - 1, "formats": ["code", "png", "svg"]}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert m["action"] != "snapshot", "a snapshot instead of the replay"
                if m["action"] == "qr_generated":
                    return m
    frame = asyncio.run(asyncio.wait_for(main(), 30))
    assert frame["seq"] == seq and frame["qrText"] == stored["qrText"]
    assert frame["qrSvg"].startswith("<svg")
    assert decode_png_data_url(frame["qrCode"], tmp_path) == stored["qrText"]
    assert size < 512 << 10, f"{size // 1024} KiB after 200+ rotations of 4 sessions"
