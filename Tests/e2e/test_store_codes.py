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


def drawn(g):
    return metric(g, "qrgate_qr_pictures_drawn_total", '{format="svg"}'), metric(g, "qrgate_qr_pictures_drawn_total", '{format="png"}')


def test_rotations_nobody_watches_draw_no_picture_and_a_watcher_gets_only_what_it_asked_for(gateway_factory, tmp_path):
    """Issue 19: a QR's pictures are drawn when someone wants them. The embedded fleet rotates with nobody
    watching and draws nothing (the simulator's webhooks carry the code); a page's subscriber gets SVGs and no
    PNG is drawn for it; once it leaves, rotations draw nothing again; a PNG asked for later decodes to the code."""
    g = gateway_factory({"store": {"path": str(tmp_path / "q.sqlite")}, "log": {"level": "warning"},
                         "qr": {"ttlSeconds": 600, "maxAttempts": 5},
                         "simulator": {"firstQrSeconds": 0.3, "nextQrSeconds": 0.3, "maxRefs": 100000},
                         "sessions": [{"sessionId": f"w{i}"} for i in range(4)], "demoSession": ""})
    deadline = time.monotonic() + 60
    while metric(g, "qrgate_events_pushed_total", '{type="qr_generated"}') < 40:
        assert time.monotonic() < deadline, "fewer than 40 rotations in 60 s"
        time.sleep(0.2)
    # Only the connect answers' PNGs (Evolution's connect carries one; the simulator draws it): one per session.
    svg0, png0 = drawn(g)
    assert svg0 == 0 and png0 <= metric(g, "qrgate_upstream_requests_total", '{operation="connect",outcome="ok"}') <= 4, (svg0, png0)
    time.sleep(1)
    assert drawn(g) == (0, png0), "pictures drawn for rotations nobody watches"

    async def watch(session, formats, frames):
        """The session's snapshot, then `frames` qr_generated, as a subscriber with `formats` sees them."""
        async with websockets.connect(g.ws, max_size=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"op": "subscribe", "session": session, "formats": formats}))
            got = []
            while len(got) < frames + 1:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if m["action"] in ("snapshot", "qr_generated"):
                    got.append(m)
            return got
    page = asyncio.run(asyncio.wait_for(watch("w0", ["svg"], 5), 30))
    assert all(m["qrSvg"].startswith("<svg") and "qrCode" not in m and "qrText" not in m for m in page)
    svg, png = drawn(g)
    assert png == png0 and 6 <= svg <= 9, (svg, png)  # the snapshot's and five rotations' (one more may be on its way)

    # Nobody watches again: rotations go on and draw nothing.
    time.sleep(0.5)
    before = drawn(g)
    rotations = metric(g, "qrgate_events_pushed_total", '{type="qr_generated"}')
    time.sleep(2)
    assert metric(g, "qrgate_events_pushed_total", '{type="qr_generated"}') >= rotations + 10
    assert drawn(g) == before

    # A PNG asked for now is drawn now, and it is the code's.
    snap = asyncio.run(asyncio.wait_for(watch("w1", ["code", "png"], 0), 30))[0]
    assert decode_png_data_url(snap["qrCode"], tmp_path) == snap["qrText"]
    assert drawn(g)[1] == png0 + 1


def test_the_embedded_simulator_draws_webhook_pictures_only_when_told(gateway_factory):
    """`simulator.webhookPictures: always` puts Evolution's base64 PNG back into the in-process simulator's
    webhooks: every rotation is drawn then, watched or not (the default, `auto`, leaves it out in process)."""
    g = gateway_factory({"log": {"level": "warning"}, "qr": {"ttlSeconds": 600, "maxAttempts": 5},
                         "simulator": {"firstQrSeconds": 0.3, "nextQrSeconds": 0.3, "maxRefs": 100000, "webhookPictures": "always"},
                         "sessions": [{"sessionId": "p0"}], "demoSession": ""})
    deadline = time.monotonic() + 30
    while metric(g, "qrgate_events_pushed_total", '{type="qr_generated"}') < 10:
        assert time.monotonic() < deadline, "fewer than 10 rotations in 30 s"
        time.sleep(0.2)
    svg, png = drawn(g)
    assert svg == 0 and png >= 9, (svg, png)  # the webhooks' (and the first connect answer's), none of them watched
