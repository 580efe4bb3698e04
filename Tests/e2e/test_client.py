"""The browser client (static/qrgate.js) and the <qrgate-link> element in headless Chromium, against the real
gateway and its simulator, under the gateway's own Content-Security-Policy.

What a person sees is asserted (the QR as painted, decoded by zbarimg; texts; colours); what an app's handlers
receive is recorded by a small test page that imports qrgate.js and compared, seq by seq, with the gateway's own
event log. Every wait has a deadline.
"""
import json
import os
import re
import shutil
import signal
import time
import urllib.request

import pytest
from websockets.sync.client import connect as ws_connect

from conftest import ROOT
from pagekit import (MMSS, by_id, classes, clear_faults, decode_qr, faults, request, restart_on, seconds, sim_code,
                     state, text, visible, wait)

URGENT = (180, 35, 42)
PLAIN = (27, 31, 36)

# A page of the test's own (served by the gateway, so under its CSP) that records what qrgate.js hands to on(...).
RECORDER_HTML = """<!doctype html><meta charset="utf-8"><title>qrgate.js recorder</title>
<script type="module" src="/recorder.js"></script>"""
RECORDER_JS = """
import { QRGate } from "/qrgate.js";
const rec = window.rec = { frames: [], named: {}, connection: [], resyncs: [], countdowns: [] };
const ping = Number(new URLSearchParams(location.search).get("ping")) || undefined;
const gate = QRGate.connect(undefined, { pingEveryMs: ping, pongDeadlineMs: ping });
const s = gate.session(new URLSearchParams(location.search).get("session") || "demo", { formats: ["svg", "code"] });
s.on("frame", (f) => rec.frames.push({ seq: f.seq, action: f.action, timestamp: f.timestamp }));
for (const name of ["qr", "pairing_code", "expired", "regenerating", "connected", "disconnected", "error"]) {
  rec.named[name] = [];
  s.on(name, (e) => rec.named[name].push({ seq: e.seq === undefined ? null : e.seq, resync: !!e.resync, local: !!e.local,
    text: e.qrText || e.code || null }));
}
s.on("countdown", (c) => rec.countdowns.push(c.remaining));
s.on("status", (st) => { rec.state = { seq: st.seq, status: st.status, qrText: st.qrText, synced: st.synced, phase: st.phase };
  if (st.resync) rec.resyncs.push(st.seq); });
gate.on("connection", (c) => rec.connection.push({ state: c.state, newBoot: !!c.newBoot }));
window.gate = gate;
if (new URLSearchParams(location.search).get("watch")) {
  rec.watch = [];
  gate.watch({ all: true }).on("frame", (f) => { if (f.sessionId === s.id) rec.watch.push({ seq: f.seq, action: f.action }); });
}
"""


@pytest.fixture(autouse=True)
def blank_between_tests(driver):
    yield
    driver.get("about:blank")  # closes the page's WebSocket before the gateway stops


@pytest.fixture
def static_with_recorder(tmp_path):
    """static/ plus the recorder page, as a directory the gateway serves."""
    d = tmp_path / "static"
    shutil.copytree(os.path.join(ROOT, "static"), d)
    (d / "recorder.html").write_text(RECORDER_HTML)
    (d / "recorder.js").write_text(RECORDER_JS)
    return str(d)


def fast(**over):
    c = {"poll": {"intervalSeconds": 1}, "simulator": {"firstQrSeconds": 60, "nextQrSeconds": 60},
         "qr": {"ttlSeconds": 20, "maxAttempts": 2}}
    c.update(over)
    return c


def color(driver, id_):
    """The element's text colour as (r, g, b)."""
    return tuple(int(n) for n in re.findall(r"\d+", by_id(driver, id_).value_of_css_property("color"))[:3])


def csp_messages(driver):
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e.get("message", "")]


def test_element_qr_decodes_countdown_ticks_locally_turns_urgent_and_expires(driver, gateway_factory):
    # Server countdown frames only every 5 s: the element's seconds come from its own clock.
    g = gateway_factory(fast(qr={"ttlSeconds": 20, "maxAttempts": 2, "countdownIntervalSeconds": 5}))
    with urllib.request.urlopen(g.http + "/?session=demo", timeout=5) as r:
        csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "'unsafe-inline'" not in csp, csp
    driver.get_log("browser")  # start with an empty console
    driver.get(g.http + "/?session=demo")
    wait(driver, lambda d: state(d) == "live", 15, "the element never showed a live QR")

    # The element: a shadow root styled by one adopted stylesheet, no <style>, no inline handlers.
    shape = driver.execute_script("""
        const r = document.querySelector('qrgate-link').shadowRoot;
        const handlers = [...r.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length;
        return {sheets: r.adoptedStyleSheets.length, styles: r.querySelectorAll('style').length + document.querySelectorAll('style').length,
                inlineScripts: document.querySelectorAll('script:not([src])').length, handlers};""")
    assert shape == {"sheets": 1, "styles": 0, "inlineScripts": 0, "handlers": 0}, shape

    code = sim_code(g)
    assert decode_qr(driver) == code, "the QR on screen is not the simulator's code"
    assert text(driver, "status") == "Scan this code with WhatsApp" and text(driver, "attempt") == "First code"
    box = by_id(driver, "qr-box").rect
    assert box["width"] == box["height"] >= 300

    # Ticks every second although the gateway says the time only every 5 s.
    seen = []
    end = time.monotonic() + 3.6
    while time.monotonic() < end:
        s = seconds(text(driver, "countdown"))
        if s is not None and (not seen or seen[-1] != s):
            seen.append(s)
        time.sleep(0.1)
    assert len(seen) >= 3 and all(b == a - 1 for a, b in zip(seen, seen[1:])), seen
    assert seen[0] > 15 and color(driver, "countdown") == PLAIN and "urgent" not in classes(driver, "countdown")

    # The last 15 seconds: the urgent colour, which a page may restyle through --qrgate-urgent.
    faults(g, instance="demo", countZero=True)  # hold the next code back so the expired state stays
    wait(driver, lambda d: "urgent" in classes(d, "countdown"), 10, "the countdown never turned urgent")
    assert 10 < seconds(text(driver, "countdown")) <= 15
    wait(driver, lambda d: color(d, "countdown") == URGENT, 2, "not the urgent colour")  # after a 0.2 s transition
    driver.execute_script("document.querySelector('qrgate-link').style.setProperty('--qrgate-urgent', 'rgb(0, 0, 255)')")
    wait(driver, lambda d: color(d, "countdown") == (0, 0, 255), 2, "--qrgate-urgent did not restyle the countdown")
    driver.execute_script("document.querySelector('qrgate-link').style.removeProperty('--qrgate-urgent')")

    # Expiry: the overlay covers the dimmed code, the countdown stays at 00:00 in the urgent colour.
    wait(driver, lambda d: visible(d, "overlay") and text(d, "overlay-title") == "QR code expired", 20, "no expired overlay")
    assert "is-dim" in classes(driver, "qr") and text(driver, "countdown") == "00:00"
    wait(driver, lambda d: color(d, "countdown") == URGENT, 2, "not the urgent colour")
    wait(driver, lambda d: state(d) == "regenerating", 5)
    assert text(driver, "status") == "Generating a new QR code (attempt 1/2)"
    clear_faults(g)
    wait(driver, lambda d: state(d) == "live", 10, "no new QR after the expiry")
    new = wait(driver, lambda d: (lambda c: c if c and c == sim_code(g) else None)(decode_qr(d, deadline=0)), 6,
               "the new QR on screen is not the simulator's code")
    assert new != code
    assert csp_messages(driver) == []


def record(driver):
    return driver.execute_script("return window.rec")


def assert_in_order(rec):
    """What reached the handlers: per handler, seqs only grow (no duplicate, nothing older), except right after a
    resync, which starts from the snapshot it carries."""
    resyncs = set(rec["resyncs"])
    for name, events in [("frame", rec["frames"])] + sorted(rec["named"].items()):
        last = None
        for e in events:
            if e["seq"] is None:
                continue  # local events (an expiry seen on the clock) carry no seq
            restart = name != "frame" and e.get("resync") or name == "frame" and e["seq"] in resyncs and e["action"] == "snapshot"
            assert last is None or e["seq"] > last or restart, f"{name}: seq {e['seq']} after {last}: {events}"
            last = e["seq"]


def gateway_log(g, since):
    """Every event the gateway still holds after `since`, as a fresh subscriber with `since` gets them."""
    got = []
    with ws_connect(g.ws) as ws:
        json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"op": "subscribe", "session": "demo", "formats": ["code"], "since": since}))
        ws.send(json.dumps({"op": "ping"}))
        while True:
            m = json.loads(ws.recv(timeout=5))
            if m["action"] == "pong":
                return got
            if m["action"] == "snapshot":
                raise AssertionError(f"the gateway no longer holds the events after {since}: {m}")
            if m.get("seq") is not None:
                got.append(m)


def test_client_resumes_across_a_restart_with_no_duplicate_or_missing_event(driver, gateway_factory, tmp_path, static_with_recorder):
    # One store for both processes: the second restores the session and its seqs; the client resumes with `since`.
    cfg = fast(store={"path": str(tmp_path / "qrgate.sqlite")})
    args = ("--static-dir", static_with_recorder)
    g = gateway_factory(cfg, extra_args=args)
    driver.get(g.http + "/recorder.html?session=demo")
    wait(driver, lambda d: (record(d) or {}).get("state", {}).get("synced") and len(record(d)["countdowns"]) >= 2, 10,
         "the recorder never got in step")
    first = record(driver)["frames"][0]
    assert first["action"] == "snapshot"
    time.sleep(1.5)
    # The log keeps one QR: after the new process's code it reaches back to the QR held before the kill.
    held_before = max(f["seq"] for f in record(driver)["frames"] if f["seq"] is not None)

    g.stop(sig=signal.SIGKILL)
    wait(driver, lambda d: any(c["state"] == "reconnecting" for c in record(d)["connection"]), 5, "the loss went unnoticed")
    time.sleep(1)
    g2 = restart_on(g.port, cfg, gateway_factory, extra_args=args)
    wait(driver, lambda d: any(c["newBoot"] for c in record(d)["connection"]) and record(d)["state"]["synced"], 20,
         "the client never came back in step")
    # A few seconds of the new process: its first poll brings the new simulator's code.
    wait(driver, lambda d: record(d)["state"]["qrText"] == sim_code(g2) and record(d)["state"]["phase"] == "live", 10,
         "the client does not hold the new process's code")
    time.sleep(1.5)
    rec = record(driver)

    assert rec["resyncs"] == [], "with the same store, the events resume: no snapshot replaces them"
    assert_in_order(rec)
    frames = rec["frames"]
    # Countdowns are outside the numbering (the gateway sends them unnumbered, or coalesces them); the rest is numbered.
    assert all(f["seq"] is not None for f in frames if f["action"] != "countdown"), frames
    last = max(f["seq"] for f in frames if f["seq"] is not None)
    held = {(f["seq"], f["action"]) for f in frames}
    truth = [m for m in gateway_log(g2, held_before) if m["seq"] <= last]
    # Countdowns may be coalesced (the gateway keeps only the newest one it owes); every other event arrives once.
    missing = [(m["seq"], m["action"]) for m in truth if m["action"] != "countdown" and (m["seq"], m["action"]) not in held]
    assert missing == [], f"events the handlers never got: {missing}"
    numbered = [f["seq"] for f in frames if f["action"] != "snapshot" and f["seq"] is not None]
    assert numbered == sorted(set(numbered))
    assert any(m["action"] == "qr_generated" for m in truth), "the restart brought no new code: nothing was tested"
    assert len(rec["named"]["qr"]) == len({e["seq"] for e in rec["named"]["qr"]})


def test_client_resumes_after_a_dropped_socket_with_every_event_once(driver, gateway_factory, static_with_recorder):
    # The socket dies under the page (same gateway): the session and a "*" watch resume with `since`.
    g = gateway_factory(fast(), extra_args=("--static-dir", static_with_recorder))
    driver.get(g.http + "/recorder.html?session=demo&watch=1")
    wait(driver, lambda d: (record(d) or {}).get("state", {}).get("synced") and len(record(d)["countdowns"]) >= 2, 10,
         "the recorder never got in step")
    # The gateway's log keeps one QR: after the refresh it reaches back to the QR held before the drop, not
    # necessarily to the first frame (a recorder that came before the first QR began with a snapshot at 0).
    held_before = max(f["seq"] for f in record(driver)["frames"] if f["seq"] is not None)
    old = record(driver)["state"]["qrText"]
    driver.execute_script("window.gate.ws.close()")
    # While it is away, an operator refreshes: a regeneration and a new code it must not miss.
    assert request(g, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "demo"})[0] == 200
    wait(driver, lambda d: [c["state"] for c in record(d)["connection"]][-2:] == ["reconnecting", "online"], 5, "no reconnect")
    wait(driver, lambda d: record(d)["state"]["qrText"] not in (None, old) and record(d)["state"]["synced"], 10,
         "the client never held the refreshed code")
    time.sleep(1.5)
    rec = record(driver)
    assert rec["resyncs"] == [] and not any(c["newBoot"] for c in rec["connection"])
    assert_in_order(rec)
    last = max(f["seq"] for f in rec["frames"] if f["seq"] is not None)
    truth = [(m["seq"], m["action"]) for m in gateway_log(g, held_before) if m["seq"] <= last and m["action"] != "countdown"]
    assert ("qr_regenerating" in {a for _, a in truth}) and ("qr_generated" in {a for _, a in truth}), truth
    held = {(f["seq"], f["action"]) for f in rec["frames"]}
    assert [t for t in truth if t not in held] == [], "events the session handlers never got"
    watched = [w for w in rec["watch"] if w["seq"] is not None]
    assert [w["seq"] for w in watched] == sorted({w["seq"] for w in watched}), watched
    seen = {(w["seq"], w["action"]) for w in rec["watch"]}
    assert [t for t in truth if t[0] > watched[0]["seq"] and t not in seen] == [], "events the watch never got"


def test_client_notices_a_silently_dead_link_and_comes_back(driver, gateway_factory, static_with_recorder):
    # A gateway that stops answering without closing anything (SIGSTOP): only the client's own ping can tell.
    g = gateway_factory(fast(), extra_args=("--static-dir", static_with_recorder))
    driver.get(g.http + "/recorder.html?session=demo&ping=1000")
    wait(driver, lambda d: (record(d) or {}).get("state", {}).get("synced"), 10, "the recorder never got in step")
    g.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wait(driver, lambda d: record(d)["connection"][-1]["state"] == "reconnecting" and not record(d)["state"]["synced"], 6,
             "the dead link went unnoticed")
        assert time.monotonic() - t0 < 4.5  # up to 1 s of quiet, a ping, 1 s without its pong (and polling slack)
    finally:
        g.proc.send_signal(signal.SIGCONT)
    wait(driver, lambda d: record(d)["connection"][-1]["state"] == "online" and record(d)["state"]["synced"], 15,
         "never came back once the gateway answered again")
    wait(driver, lambda d: record(d)["state"]["qrText"] == sim_code(g) and record(d)["state"]["phase"] == "live", 5)
    rec = record(driver)
    assert rec["resyncs"] == []
    assert_in_order(rec)


def test_client_resyncs_when_a_restarted_gateway_reuses_seqs(driver, gateway_factory, static_with_recorder):
    # An in-memory store: the second process numbers from scratch, so `since` would mean another history.
    cfg = fast(store={"mode": "memory"})
    args = ("--static-dir", static_with_recorder)
    g = gateway_factory(cfg, extra_args=args)
    driver.get(g.http + "/recorder.html?session=demo")
    wait(driver, lambda d: (record(d) or {}).get("state", {}).get("synced") and len(record(d)["countdowns"]) >= 2, 10,
         "the recorder never got in step")
    g.stop(sig=signal.SIGKILL)
    wait(driver, lambda d: any(c["state"] == "reconnecting" for c in record(d)["connection"]), 5, "the loss went unnoticed")
    old_run = len(record(driver)["frames"])
    g2 = restart_on(g.port, cfg, gateway_factory, extra_args=args)
    wait(driver, lambda d: record(d)["resyncs"] and record(d)["state"]["qrText"] == sim_code(g2), 20,
         "the client never replaced the old state with the new process's")
    rec = record(driver)
    assert_in_order(rec)
    # The new code reached "qr" handlers as a resync: the old seqs meant nothing to the new process.
    qr = rec["named"]["qr"]
    assert any(e["resync"] for e in qr) and qr[-1]["text"] == sim_code(g2), qr
    # The first thing handed on from the new process is its snapshot: nothing numbered in another history.
    first_new = rec["frames"][old_run]
    assert first_new["action"] == "snapshot" and first_new["seq"] in rec["resyncs"], rec["frames"][old_run:]


def test_pairing_view_code_copy_expiry_and_link(driver, gateway_factory):
    g = gateway_factory(fast(qr={"ttlSeconds": 20, "maxAttempts": 3}))
    driver.get(g.http + "/?session=demo")
    wait(driver, lambda d: state(d) == "live", 15, "no live QR")
    by_id(driver, "switch").click()
    wait(driver, lambda d: state(d) == "phone" and visible(d, "phone-form"), 3, "no phone view")
    assert text(driver, "status") == "Link with your phone number" and not visible(driver, "qr")

    # Checked before anything is sent: 8–15 digits with the country code.
    for bad in ("1234567", "+55 11 98765-4321 0000", "abc12345678"):
        by_id(driver, "phone").clear()
        by_id(driver, "phone").send_keys(bad)
        by_id(driver, "phone-submit").click()
        wait(driver, lambda d: "8 to 15 digits" in text(d, "phone-error"), 3, f"{bad!r} was not refused")
        assert state(driver) == "phone" and by_id(driver, "phone").get_attribute("aria-invalid") == "true"

    by_id(driver, "phone").clear()
    by_id(driver, "phone").send_keys("+55 11 98765-4321")
    by_id(driver, "phone-submit").click()
    wait(driver, lambda d: state(d) == "live" and visible(d, "pairing-code"), 10, "no pairing code")
    code = text(driver, "pairing-code")
    raw = next(i for i in request(g, "GET", "/simulator/state")[1]["instances"] if i["name"] == "demo")["pairingCode"]
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", code) and code.replace("-", "") == raw, (code, raw)
    assert text(driver, "pairing-for") == "Code for •••• 4321"
    assert text(driver, "status") == "Enter this code in WhatsApp"
    cd = seconds(text(driver, "countdown"))
    wait(driver, lambda d: (seconds(text(d, "countdown")) or 99) < cd, 3, "the code's countdown does not tick")

    # Copy: the code lands on the clipboard.
    driver.execute_cdp_cmd("Browser.grantPermissions", {"origin": g.http, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    by_id(driver, "copy").click()
    wait(driver, lambda d: text(d, "copy") == "Copied", 3, "no copy confirmation")
    assert driver.execute_async_script("navigator.clipboard.readText().then(arguments[0], () => arguments[0](null))") == code

    # The code expires with its QR: the same overlay and countdown as the QR view; then a new code comes.
    faults(g, instance="demo", countZero=True)
    wait(driver, lambda d: visible(d, "overlay") and text(d, "overlay-title") == "Code expired", 25, "the code never expired")
    assert "is-dim" in classes(driver, "pairing") and text(driver, "countdown") == "00:00"
    assert "urgent" in classes(driver, "countdown")
    clear_faults(g)
    wait(driver, lambda d: state(d) == "live" and visible(d, "pairing-code") and text(d, "pairing-code") != code, 15,
         "no new code after the expiry")
    new = text(driver, "pairing-code")
    assert MMSS.match(text(driver, "countdown")) and seconds(text(driver, "countdown")) > 10

    # Typed on the phone: a wrong code is refused and changes nothing; the right one links.
    assert request(g, "POST", "/simulator/pair/demo", {"code": code})[0] == 400
    assert state(driver) == "live"
    status, _ = request(g, "POST", "/simulator/pair/demo", {"code": new})
    assert status == 200
    wait(driver, lambda d: state(d) == "linked", 5, "the element never showed the link")
    assert text(driver, "status") == "WhatsApp linked successfully" and visible(driver, "linked")
    assert not visible(driver, "pairing-code") and not visible(driver, "switch")
