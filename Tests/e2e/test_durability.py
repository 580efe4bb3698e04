"""Durable state and operations: restart without loss, crashes mid-write, metrics, readiness, operator commands."""
import asyncio
import json
import os
import random
import signal
import sqlite3
import tempfile
import threading
import time
import urllib.request

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from apihelp import call
from conftest import qrgate


def run(coro, limit=60):
    return asyncio.run(asyncio.wait_for(coro, limit))


async def recv(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def status_of(g, sid):
    return call(g, "GET", f"/api/v1/sessions/status/?sessionId={sid}")[2]["data"]


def wait_for(pred, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            v = pred()
        except KeyError:  # not there yet: a session the gateway is still starting answers 404 without data
            v = None
        if v:
            return v
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_kill_9_and_restart_loses_nothing(gateway_factory, tmp_path):
    db = str(tmp_path / "qrgate.sqlite")
    cfg = {"store": {"path": db}, "qr": {"ttlSeconds": 4, "maxAttempts": 3}, "poll": {"intervalSeconds": 1}, "demoSession": "",
           "simulator": {"firstQrSeconds": 60, "nextQrSeconds": 60}}
    g = gateway_factory(cfg)
    for sid in ("linked", "waiting", "worn"):
        assert call(g, "POST", "/api/v1/sessions/init/", {"sessionId": sid})[0] == 200
    call(g, "POST", "/simulator/scan/linked")
    wait_for(lambda: status_of(g, "linked")["status"] == "connected", 5, "linked to connect")
    # "worn" uses up one attempt before the crash.
    wait_for(lambda: status_of(g, "worn")["attempt"] == 1 and status_of(g, "worn")["qrCode"], 10, "worn to regenerate once")

    async def watch():
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "worn"}))
            await recv(ws)
            snap = await recv(ws)
            return snap["seq"]
    last_seq = run(watch())
    before = {sid: status_of(g, sid) for sid in ("linked", "waiting", "worn")}
    g.proc.send_signal(signal.SIGKILL)
    g.proc.wait(timeout=10)
    time.sleep(4.5)  # the QRs lapse while the gateway is down

    g2 = gateway_factory(cfg)
    after = {sid: status_of(g2, sid) for sid in ("linked", "waiting", "worn")}
    assert after["linked"]["status"] == "connected" and after["linked"]["connectedAt"] == before["linked"]["connectedAt"]
    assert after["worn"]["status"] in ("pending", "failed")

    async def resume():
        async with websockets.connect(g2.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "worn", "since": last_seq}))
            await recv(ws)
            seen = []
            while not any(m["action"] == "qr_regenerating" for m in seen):
                seen.append(await recv(ws, 10))
            return seen
    seen = run(resume())
    # Continued by the same rules: the lapsed QR expired with attempt 1, the next is attempt 2 — not a fresh start.
    assert seen[0]["action"] != "snapshot", "since should have been served from the stored log"
    # A countdown follows a replay and carries no seq (PROTOCOL.md); every other frame continues the numbering.
    assert {m["action"] for m in seen if "seq" not in m} <= {"countdown"}
    events = [m for m in seen if "seq" in m]
    assert [m["seq"] for m in events] == list(range(last_seq + 1, last_seq + 1 + len(events)))
    expired = next(m for m in seen if m["action"] == "qr_expired")
    regen = next(m for m in seen if m["action"] == "qr_regenerating")
    assert expired["attempt"] == 1 and regen["attempt"] == 2
    assert before["waiting"]["attempt"] <= status_of(g2, "waiting")["attempt"]


def test_crashes_during_writes_never_leave_the_database_broken(gateway_factory, tmp_path):
    db = str(tmp_path / "qrgate.sqlite")
    sessions = [{"sessionId": f"w{i}"} for i in range(12)]
    cfg = {"store": {"path": db}, "qr": {"ttlSeconds": 30}, "refresh": {"minIntervalSeconds": 0}, "demoSession": "",
           "server": {"messagesPerSecond": 5000}, "sessions": sessions}
    rnd = random.Random(7)
    for round_ in range(5):
        g = gateway_factory(cfg)
        stop = threading.Event()

        def hammer():
            async def main():
                async with websockets.connect(g.ws, max_size=None) as ws:
                    await recv(ws)
                    while not stop.is_set():
                        await ws.send(json.dumps({"op": "refresh", "session": f"w{rnd.randrange(12)}"}))
                        try:
                            await asyncio.wait_for(ws.recv(), 1)
                        except asyncio.TimeoutError:
                            pass
            try:
                asyncio.run(main())
            except Exception:
                pass  # the gateway is killed under us: expected
        t = threading.Thread(target=hammer)
        t.start()
        time.sleep(0.3 + rnd.random())
        g.proc.send_signal(signal.SIGKILL)
        g.proc.wait(timeout=10)
        stop.set()
        t.join(timeout=10)
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute("SELECT id, status, seq, qr_code_text, qr_png, qr_svg, qr_expires_at FROM sessions").fetchall()
        assert len(rows) == 12
        for sid, status, seq, code, png, svg, exp in rows:
            assert status in ("idle", "pending", "connected", "failed", "disconnected")
            # A QR is stored as its code (and expiry), never its drawn pictures (the simulator's PNG is the
            # gateway's own drawing here, so no upstream image is kept either).
            assert png is None and svg is None, (sid, png and png[:40], svg and svg[:40])
            assert (code is None) == (exp is None)
            top = con.execute("SELECT MAX(seq) FROM events WHERE session_id = ?", (sid,)).fetchone()[0]
            # Events never run ahead of their session row: both are in one transaction.
            assert top is None or top <= seq, (sid, top, seq)
        con.close()
    g = gateway_factory(cfg)
    assert len(call(g, "GET", "/api/v1/sessions/")[2]["data"]["sessions"]) == 12


def metrics(g):
    with urllib.request.urlopen(g.http + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples, name, **labels):
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == v2 for k, v2 in labels.items()))


def test_metrics_parse_and_move_with_traffic(gateway_factory):
    g = gateway_factory({"qr": {"ttlSeconds": 30}, "refresh": {"minIntervalSeconds": 0}, "poll": {"intervalSeconds": 1}})
    wait_for(lambda: status_of(g, "demo")["qrCode"], 10, "the demo QR")
    m1 = metrics(g)

    async def traffic():
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "demo"}))
            for _ in range(3):
                await ws.send(json.dumps({"op": "refresh", "session": "demo"}))
                while (await recv(ws))["action"] != "qr_generated":
                    pass
            m = metrics(g)
            assert total(m, "qrgate_connections", role="admin") >= 1
            assert total(m, "qrgate_subscriptions") >= 1
            return m
    m2 = run(traffic())
    assert total(m2, "qrgate_events_pushed_total", type="qr_generated") >= total(m1, "qrgate_events_pushed_total", type="qr_generated") + 3
    assert total(m2, "qrgate_upstream_requests_total", operation="connect", outcome="ok") > total(m1, "qrgate_upstream_requests_total", operation="connect", outcome="ok")
    assert total(m2, "qrgate_upstream_request_duration_seconds_count", operation="logout") >= 3
    # Each new QR waited for its SQLite write before the subscriber saw it.
    assert total(m2, "qrgate_store_write_duration_seconds_count") >= total(m1, "qrgate_store_write_duration_seconds_count") + 3
    assert total(m2, "qrgate_sessions", status="pending") == 1
    assert total(m2, "qrgate_upstream_credential_state", state="valid") == 1
    call(g, "POST", "/functions/v1/refresh-qr-codes")
    m3 = metrics(g)
    assert total(m3, "qrgate_refresh_cycle_duration_seconds_count") >= 1


def test_readiness_reports_reasons(gateway_factory):
    g = gateway_factory({})
    status, _, body = call(g, "GET", "/readyz")
    assert status == 200 and body["status"] == "ready" and body["upstream"] == "simulator in-process"
    bad = gateway_factory({"upstream": {"mode": "evolution", "baseURL": "http://127.0.0.1:9", "apiKey": "key-0123456789abcdef"}})
    status, _, body = call(bad, "GET", "/readyz")
    assert status == 503 and any("upstream unreachable" in r for r in body["reasons"])
    assert call(bad, "GET", "/healthz")[0] == 200  # alive all the same


def test_operator_commands_answer_from_the_store(gateway_factory, tmp_path):
    db = str(tmp_path / "qrgate.sqlite")
    cfg = {"store": {"path": db}, "qr": {"ttlSeconds": 30}, "poll": {"intervalSeconds": 1}, "demoSession": "",
           "sessions": [{"sessionId": "op-1"}, {"sessionId": "op-2"}]}
    g = gateway_factory(cfg)
    wait_for(lambda: status_of(g, "op-1")["qrCode"] and status_of(g, "op-2")["qrCode"], 10, "QRs")
    assert call(g, "POST", "/simulator/scan/op-1")[0] == 200
    wait_for(lambda: status_of(g, "op-1")["status"] == "connected", 5, "op-1 linked")
    call(g, "POST", "/functions/v1/refresh-qr-codes")
    time.sleep(1.2)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg))
    out = qrgate("sessions", "--config", str(cfg_file))
    assert out.returncode == 0 and "op-1" in out.stdout and "connected" in out.stdout and "2 session(s)" in out.stdout
    out = qrgate("sessions", "--stale", "1", "--json", "--config", str(cfg_file))
    rows = [json.loads(l) for l in out.stdout.splitlines()]
    assert [r["sessionId"] for r in rows] == ["op-2"] and rows[0]["qrAgeSeconds"] >= 1
    assert qrgate("sessions", "--stale", "300", "--json", "--config", str(cfg_file)).stdout == ""
    out = qrgate("cycles", "--config", str(cfg_file))
    assert out.returncode == 0 and len(out.stdout.strip().splitlines()) >= 2
