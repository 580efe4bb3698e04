"""Live sessions end to end: the real gateway, its built-in simulator, short timings, real WebSocket clients."""
import asyncio
import json
import re
import socket
import time
import urllib.request

import pytest
import websockets

SHORT = {"qr": {"ttlSeconds": 2, "maxAttempts": 2}, "poll": {"intervalSeconds": 1},
         "simulator": {"firstQrSeconds": 30, "nextQrSeconds": 20}}


def run(coro, limit=60):
    return asyncio.run(asyncio.wait_for(coro, limit))


async def recv(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws, action, timeout=10, seen=None):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {action} within {timeout}s; saw {[m['action'] for m in (seen or [])]}"
        m = await recv(ws, left)
        if seen is not None:
            seen.append(m)
        if m["action"] == action:
            return m


def post(g, path, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(g.http + path, data=json.dumps(body or {}).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_subscriber_sees_the_whole_lifecycle_to_failure(gateway_factory):
    g = gateway_factory(SHORT)

    async def main():
        async with websockets.connect(g.ws) as ws:
            assert (await recv(ws))["action"] == "hello"
            await ws.send(json.dumps({"op": "subscribe", "session": "demo"}))
            assert (await recv(ws))["action"] == "subscribed"
            snap = await recv(ws)
            assert snap["action"] == "snapshot" and snap["status"] == "pending" and snap["maxAttempts"] == 2
            seen = []
            err = await until(ws, "error", timeout=15, seen=seen)
            assert err["error"] == "QR code generation failed after 2 attempts. Please request a new validation."
            actions = [m["action"] for m in seen]
            # Each regeneration: expired → regenerating → a new QR with the next attempt number.
            regen = [m for m in seen if m["action"] == "qr_regenerating"]
            assert [(m["attempt"], m["maxAttempts"]) for m in regen] == [(1, 2), (2, 2)]
            qrs = [m for m in seen if m["action"] == "qr_generated"]
            assert [m["attempt"] for m in qrs][-2:] == [1, 2]
            assert all(m["qrCode"].startswith("data:image/png;base64,") and m["qrSvg"].startswith("<svg") for m in qrs)
            assert actions.count("qr_expired") >= 2
            assert "countdown" in actions
            cd = next(m for m in seen if m["action"] == "countdown")
            assert cd["remaining"] in (1, 2) and cd["qrExpiresAt"].endswith("Z")
            assert all("seq" not in m for m in seen if m["action"] == "countdown")
            seqs = [m["seq"] for m in seen if m["action"] != "countdown"]
            # Every numbered event, in order, none skipped: countdowns take no seq.
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    run(main())


def test_browsers_and_a_star_service_see_the_same_seq_numbers(gateway_factory):
    g = gateway_factory({**SHORT, "auth": {"serviceKeys": ["svc-key-0123456789"], "adminKeys": ["adm-key-0123456789"]}})

    async def collect(ws):
        """Numbered events of demo until the session fails (its `error` event); protocol errors apart."""
        out, errors = [], []
        while not out or out[-1][1] != "error":
            m = await recv(ws, 10)
            if m["action"] == "error" and "code" in m:
                errors.append(m["code"])
            elif m.get("sessionId") == "demo" and m["action"] == "countdown":
                assert "seq" not in m, m  # countdowns are computed, not numbered
            elif m.get("sessionId") == "demo" and "seq" in m and m["action"] != "snapshot":
                out.append((m["seq"], m["action"]))
        return out, errors

    async def main():
        a = await websockets.connect(g.ws)
        b = await websockets.connect(g.ws)
        s = await websockets.connect(g.ws)
        for ws in (a, b, s):
            await recv(ws)
        await s.send(json.dumps({"op": "subscribe", "session": "*"}))
        err = await recv(s)
        assert err["action"] == "error" and err["code"] == "forbidden"
        await s.send(json.dumps({"op": "subscribe", "session": "*", "token": "svc-key-0123456789"}))
        assert (await recv(s))["role"] == "service"
        # Browsers need a token for their session; a service hands them one.
        await a.send(json.dumps({"op": "subscribe", "session": "demo"}))
        denied = await recv(a)
        assert denied["action"] == "error" and denied["code"] == "unauthorized"
        status, body = post(g, "/api/v1/sessions/demo/token", key="svc-key-0123456789")
        assert status == 200 and body["data"]["role"] == "browser"
        for ws in (a, b):
            await ws.send(json.dumps({"op": "subscribe", "session": "demo", "token": body["data"]["token"]}))
            assert (await recv(ws))["role"] == "browser"
        # A browser may not refresh.
        await a.send(json.dumps({"op": "refresh", "session": "demo"}))
        got = await asyncio.gather(collect(a), collect(b), collect(s))
        assert got[0][1] == ["forbidden"] and got[1][1] == [] and got[2][1] == []
        start = max(events[0][0] for events, _ in got)
        window = [[e for e in events if e[0] >= start] for events, _ in got]
        assert len(window[0]) >= 3 and window[0] == window[1] == window[2], got
        for ws in (a, b, s):
            await ws.close()
    run(main())


def test_scan_connects_within_one_poll_interval(gateway_factory):
    g = gateway_factory({**SHORT, "qr": {"ttlSeconds": 30, "maxAttempts": 2}})

    async def main():
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "demo"}))
            snap = await until(ws, "snapshot")
            if not snap["qrCode"]:
                await until(ws, "qr_generated")  # the phone can only scan a QR that is shown
            status, _ = post(g, "/simulator/scan/demo")
            assert status == 200
            t0 = time.monotonic()
            m = await until(ws, "connected", timeout=3)
            assert time.monotonic() - t0 <= 1.5  # poll.intervalSeconds = 1, plus a little
            assert m["connectedAt"].endswith("Z")
            # Refresh when connected: "already connected".
            await ws.send(json.dumps({"op": "refresh", "session": "demo"}))
            r = await until(ws, "connected")
            assert r["message"] == "Session already connected. No QR needed."
    run(main())


def test_since_recovers_missed_events_after_a_dropped_connection(gateway_factory):
    g = gateway_factory({**SHORT, "qr": {"ttlSeconds": 1, "maxAttempts": 3}})

    async def main():
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "demo"}))
            await until(ws, "subscribed")
            last = (await until(ws, "qr_generated"))["seq"]
        # Events happen while we are away: the QR expires and regenerating begins, but no new QR comes yet.
        post(g, "/simulator/faults", {"countZero": True})
        await asyncio.sleep(2.5)
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "demo", "since": last}))
            await until(ws, "subscribed")
            first = await recv(ws)
            assert first["action"] == "qr_expired" and first["seq"] == last + 1, first
            await ws.send(json.dumps({"op": "unsubscribe", "session": "demo"}))
            await until(ws, "unsubscribed")
        # A newer QR came meanwhile: it supersedes the QR at `last` and everything before it, so a client that
        # never saw `last` gets a snapshot with the newest QR rather than a replay of every rotation (one that saw
        # it still gets its replay).
        urllib.request.urlopen(urllib.request.Request(g.http + "/simulator/faults", method="DELETE"), timeout=5)
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "demo"}))
            await until(ws, "subscribed")
            newest = await until(ws, "qr_generated", timeout=10)
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "demo", "since": last - 1}))
            await until(ws, "subscribed")
            snap = await recv(ws)
            assert snap["action"] == "snapshot" and snap["recovered"] is False and snap["seq"] >= newest["seq"], snap
            await ws.send(json.dumps({"op": "unsubscribe", "session": "demo"}))
            await until(ws, "unsubscribed")
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "demo", "since": 100000}))
            await until(ws, "subscribed")
            snap = await recv(ws)
            assert snap["action"] == "snapshot" and snap["recovered"] is False
    run(main())


def metric_total(g, name):
    body = urllib.request.urlopen(g.http + "/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.split("{")[0].split(" ")[0] == name)


def slow_consumers_closed(g):
    return metric_total(g, "qrgate_slow_consumers_closed_total")


def test_a_slow_reader_is_closed_and_the_others_are_unaffected(gateway_factory):
    """A service subscribed to every session stops reading: QR frames of 40 sessions pile up past the
    outbox bound (frames of one session coalesce, different sessions do not) and it is closed; a browser
    on one session keeps getting its frames. Frames go straight to the kernel while it takes them, so the
    outbox only fills once the kernel's send buffer for the socket is full (it grows to a few MB): the
    admin refreshes round after round until the gateway reports the reader closed."""
    sessions = [{"sessionId": f"s{i}"} for i in range(40)]
    g = gateway_factory({"qr": {"ttlSeconds": 60}, "refresh": {"minIntervalSeconds": 0}, "server": {"outboxBytes": 16384, "slowConsumerSeconds": 1, "messagesPerSecond": 5000},
                         "sessions": sessions})

    async def main():
        admin = await websockets.connect(g.ws, max_size=None)
        browser = await websockets.connect(g.ws, max_size=None)
        for ws in (admin, browser):
            await recv(ws)
        await browser.send(json.dumps({"op": "subscribe", "session": "s0"}))
        await until(browser, "snapshot")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((g.host, g.port))
        slow = await websockets.connect(g.ws, sock=sock, max_size=None, max_queue=1)
        await recv(slow)
        await slow.send(json.dumps({"op": "subscribe", "session": "*"}))
        # The slow reader stops reading; an admin refreshes every session, round after round.
        browser_qrs, closed_at = 0, None
        for round_ in range(60):
            for i in range(40):
                await admin.send(json.dumps({"op": "refresh", "session": f"s{i}"}))
                assert (await until(admin, "refreshing"))["sessionId"] == f"s{i}"
            browser_qrs += 1
            await until(browser, "qr_generated")
            if await asyncio.to_thread(slow_consumers_closed, g) >= 1:
                closed_at = round_
                break
        assert closed_at is not None, "60 rounds of 40 QR frames and the reader that never reads is still open"
        assert browser_qrs == closed_at + 1
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(slow.recv(), 10)
        code = closed.value.rcvd.code if closed.value.rcvd else None
        assert code in (4008, None), code  # 4008 when the close frame fits, else the TCP close
        await browser.send(json.dumps({"op": "ping"}))
        assert (await until(browser, "pong"))["action"] == "pong"
        await admin.close()
        await browser.close()
        return code
    code = run(main(), limit=120)
    print("slow reader closed with", code)
    assert g.alive()


def test_refresh_endpoint_answers_the_cron_json(gateway_factory):
    g = gateway_factory({**SHORT, "qr": {"ttlSeconds": 30}, "auth": {"serviceKeys": ["svc-key-0123456789"]},
                         "sessions": [{"sessionId": "shop-a"}, {"sessionId": "shop-b", "instanceName": "shop-b"}]})
    time.sleep(0.5)
    status, body = post(g, "/functions/v1/refresh-qr-codes")
    assert status == 401 and body["success"] is False and body["error"]
    status, body = post(g, "/functions/v1/refresh-qr-codes", key="svc-key-0123456789")
    assert status == 200
    assert set(body) == {"success", "total_instances", "refreshed", "failed", "results"}
    assert body["success"] is True and body["total_instances"] == 3 and body["refreshed"] == 3 and body["failed"] == 0
    names = sorted(r["instance_name"] for r in body["results"])
    assert names == ["demo", "shop-a", "shop-b"]
    for r in body["results"]:
        assert r["success"] is True and r["qr_updated"] is False and set(r) == {"instance_name", "success", "qr_updated"}
    # "count 0 forever" for one instance: success, no QR, the original message.
    post(g, "/simulator/faults", {"instance": "shop-a", "countZero": True})
    post(g, "/simulator/faults", {"instance": "shop-b", "errorRate": 1})
    status, body = post(g, "/functions/v1/refresh-qr-codes", key="svc-key-0123456789")
    by = {r["instance_name"]: r for r in body["results"]}
    assert by["shop-a"] == {"instance_name": "shop-a", "success": True, "qr_updated": False, "error": "No QR code available from Evolution API"}
    assert by["shop-b"]["success"] is False and "500" in by["shop-b"]["error"]
    assert body["refreshed"] == 2 and body["failed"] == 1


def test_sessions_are_added_over_rest_and_bad_requests_get_reasons(gateway_factory):
    g = gateway_factory({**SHORT, "qr": {"ttlSeconds": 30}, "auth": {"adminKeys": ["adm-key-0123456789"]}})
    assert post(g, "/api/v1/sessions", {"sessionId": "new-1"})[0] == 401
    status, body = post(g, "/api/v1/sessions", {"sessionId": "new-1", "numberId": "5511"}, key="adm-key-0123456789")
    assert status == 201 and body["data"]["sessionId"] == "new-1"
    assert post(g, "/api/v1/sessions", {"sessionId": "new-1"}, key="adm-key-0123456789")[0] == 409
    assert post(g, "/api/v1/sessions", {"sessionId": "bad id"}, key="adm-key-0123456789")[0] == 400
    assert post(g, "/api/v1/sessions", {"sessionId": "x", "nope": 1}, key="adm-key-0123456789")[0] == 400

    async def main():
        async with websockets.connect(g.ws + "?token=adm-key-0123456789") as ws:
            assert (await recv(ws))["role"] == "admin"
            await ws.send(json.dumps({"op": "subscribe", "session": "new-1"}))
            await until(ws, "subscribed")
            snap = await until(ws, "snapshot")
            assert snap["numberId"] == "5511"
            m = snap if snap["qrCode"] else await until(ws, "qr_generated", timeout=5)
            assert m["numberId"] == "5511" and m["qrCode"].startswith("data:image/png;base64,")
    run(main(), limit=20)
    async def unknown():
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "ghost"}))
            e = await recv(ws)  # no credentials: nothing is revealed about which sessions exist
            assert e["action"] == "error" and e["code"] == "unauthorized"
        async with websockets.connect(g.ws + "?token=adm-key-0123456789") as ws:
            await recv(ws)
            await ws.send(json.dumps({"op": "subscribe", "session": "ghost"}))
            e = await recv(ws)
            assert e["action"] == "error" and e["code"] == "unknown_session" and e["sessionId"] == "ghost"
    run(unknown())


@pytest.mark.parametrize("event_loop", ["poll", "libev"])
def test_idle_peers_are_pinged_and_dropped_when_they_stop_answering(gateway_factory, event_loop):
    import base64, os
    g = gateway_factory({"server": {"pingIntervalSeconds": 2, "eventLoop": event_loop}})
    # A peer that completes the handshake, then never reads or answers: dropped.
    raw = socket.create_connection((g.host, g.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall((f"GET /ws HTTP/1.1\r\nHost: {g.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b"101" in raw.recv(4096).split(b"\r\n")[0]

    async def healthy():
        # A peer that answers pings (websockets does) stays connected meanwhile.
        async with websockets.connect(g.ws) as ws:
            await recv(ws)
            await asyncio.sleep(4)
            await ws.send(json.dumps({"op": "ping"}))
            assert (await until(ws, "pong"))["action"] == "pong"
    run(healthy())
    raw.settimeout(6)
    deadline = time.monotonic() + 6
    closed = False
    while time.monotonic() < deadline:
        try:
            chunk = raw.recv(4096)
        except ConnectionResetError:
            closed = True
            break
        except socket.timeout:
            break
        if chunk == b"":
            closed = True
            break
    raw.close()
    assert closed, "the silent peer was never dropped"
    assert metric_total(g, "qrgate_idle_peers_dropped_total") >= 1


def upstream_connects(g):
    """Connect requests the gateway made upstream so far (its own /metrics)."""
    with urllib.request.urlopen(g.http + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("qrgate_upstream_requests_total{") and 'operation="connect"' in line)


def frames_seen(g, seconds):
    """Every frame a subscriber of the demo session is shown within `seconds` (codes as text)."""
    async def main():
        async with websockets.connect(g.ws) as ws:
            assert (await recv(ws))["action"] == "hello"
            await ws.send(json.dumps({"op": "subscribe", "session": "demo", "formats": ["code"]}))
            frames = []
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                try:
                    frames.append(await recv(ws, left))
                except asyncio.TimeoutError:
                    break
            return frames
    return run(main(), seconds + 30)


def rotations_seen(g, seconds):
    """Distinct QR codes a subscriber of the demo session is shown within `seconds`."""
    codes = []
    for m in frames_seen(g, seconds):
        if m["action"] in ("snapshot", "qr_generated") and m.get("qrText") and m["qrText"] not in codes:
            codes.append(m["qrText"])
    return codes


def test_a_webhook_target_that_refuses_is_said_in_the_log(gateway_factory):
    """The embedded simulator's webhooks to a path the gateway does not take them on (it answers 405): failures it reports."""
    from pagekit import free_port
    port = free_port()
    g = gateway_factory({"simulator": {"firstQrSeconds": 0.5, "nextQrSeconds": 0.5, "maxRefs": 100,
                                       "webhookURL": f"http://127.0.0.1:{port}/no-such-webhook"}},
                        extra_args=("--port", str(port)))
    time.sleep(2)  # rotations every 0.5 s, each with a webhook
    g.stop()
    logs = g.proc.stderr.read()
    assert re.search(r"simulator webhooks failed: \d+, the last: HTTP 4\d\d", logs), logs[-2000:]


# The timed refresh cycle (every 1.5 s here) asks only the sessions that heard nothing from the upstream for a
# cycle: polls are 30 s apart, so what the cycle asks shows in the gateway's connect count.
CYCLING = {"refresh": {"cycleSeconds": 1.5}, "poll": {"intervalSeconds": 30, "afterWebhookSeconds": 30}}


def test_the_timed_cycle_asks_a_session_the_upstream_is_silent_about(gateway_factory):
    g = gateway_factory({**CYCLING, "simulator": {"webhooks": False}})
    rotations_seen(g, 1)  # the first QR is there
    before = upstream_connects(g)
    time.sleep(6.5)
    # Four cycles: each asks when the session's last news (the previous cycle's answer, or the first QR) is a
    # cycle old, at least every other one.
    assert upstream_connects(g) - before >= 2


def test_the_timed_cycle_leaves_sessions_the_webhooks_keep_current(gateway_factory):
    g = gateway_factory({**CYCLING, "simulator": {"firstQrSeconds": 0.3, "nextQrSeconds": 0.3, "maxRefs": 1000}})
    codes = rotations_seen(g, 6)
    assert len(codes) >= 10, codes
    assert upstream_connects(g) <= 2


# WhatsApp's first code lives 60 s, as long as the default TTL, so its first rotation races the expiry. Here both
# are 2 s, with polls 30 s apart and no webhooks: only the gateway's last look at expiry can find the rotation.
RACING = {"qr": {"ttlSeconds": 2, "maxAttempts": 5}, "poll": {"intervalSeconds": 30},
          "simulator": {"firstQrSeconds": 2, "nextQrSeconds": 2, "maxRefs": 50, "webhooks": False}}


def test_a_code_rotated_at_expiry_is_shown_instead_of_regenerating(gateway_factory):
    g = gateway_factory(RACING)
    frames = frames_seen(g, 7)
    actions = [f["action"] for f in frames if f["action"] != "countdown"]
    codes = [f["qrText"] for f in frames if f["action"] in ("snapshot", "qr_generated") and f.get("qrText")]
    assert len(set(codes)) >= 3, actions
    assert "qr_expired" not in actions and "qr_regenerating" not in actions, actions
    assert all(f["attempt"] == 0 for f in frames if f["action"] == "qr_generated"), actions


def test_without_the_last_look_the_same_race_spends_an_attempt(gateway_factory):
    g = gateway_factory({**RACING, "qr": {**RACING["qr"], "expiryCheckSeconds": 0}})
    frames = frames_seen(g, 5)
    actions = [f["action"] for f in frames if f["action"] != "countdown"]
    assert "qr_expired" in actions, actions
    assert any(f["action"] == "qr_regenerating" and f["attempt"] == 1 for f in frames), actions


# Polls every 30 s could not show a QR that rotates every second; the simulator's webhooks can.
ROTATING = {"qr": {"ttlSeconds": 30}, "poll": {"intervalSeconds": 30, "afterWebhookSeconds": 30},
            "simulator": {"firstQrSeconds": 1, "nextQrSeconds": 1, "maxRefs": 20}}


def test_embedded_simulator_rotations_arrive_by_webhook_without_polls(gateway_factory):
    g = gateway_factory(ROTATING)
    codes = rotations_seen(g, 6)
    # The first QR comes from the session's first poll; each later one from a webhook.
    assert len(codes) >= 4, codes
    assert upstream_connects(g) <= 2


def test_embedded_simulator_without_webhooks_shows_what_polls_find(gateway_factory):
    g = gateway_factory({**ROTATING, "simulator": {**ROTATING["simulator"], "webhooks": False}})
    codes = rotations_seen(g, 4)
    assert len(codes) == 1, codes
