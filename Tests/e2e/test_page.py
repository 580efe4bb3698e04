"""The page (/) and the dashboard (/admin) in real headless Chromium against the real gateway and its simulator.

Assertions are on what a person sees: texts, classes, and the QR image as painted, decoded by zbarimg and
compared with the simulator's current code. Every wait has a deadline.
"""
import json
import re
import signal
import time

import pytest
from selenium.webdriver.common.by import By
from websockets.sync.client import connect as ws_connect

from pagekit import (MMSS, browser_token, by_id, classes, clear_faults, decode_qr, faults, free_port, request,
                     restart_on, scan, seconds, sim_code, state, text, visible, wait)

# Polls every second and no webhooks (which would put polls off): an upstream fault shows within a second or two.
FAST = {"poll": {"intervalSeconds": 1}, "simulator": {"firstQrSeconds": 30, "nextQrSeconds": 20, "webhooks": False}}
ADMIN_KEY = "adm-key-0123456789"
SERVICE_KEY = "svc-key-0123456789"


def config(**over):
    c = {**FAST, "qr": {"ttlSeconds": 30, "maxAttempts": 2}}
    c.update(over)
    return c


@pytest.fixture(autouse=True)
def blank_between_tests(driver):
    yield
    driver.get("about:blank")  # closes the page's WebSocket before the gateway stops


def open_page(driver, g, path="/?session=demo", until="live", timeout=15):
    driver.get(g.http + path)
    if until:
        wait(driver, lambda d: state(d) == until, timeout, f"page never reached {until}")


def live_qr_matches_simulator(driver, g):
    code = sim_code(g)
    assert code, "the simulator has no current code"
    got = decode_qr(driver)
    assert got == code, f"QR on screen decodes to {got!r}, simulator's code is {code!r}"
    return code


def test_qr_countdown_urgent_expiry_and_regeneration(driver, gateway_factory):
    # ttl 20 s: the countdown starts above 15 s, turns red under it, and the QR expires soon after.
    g = gateway_factory(config(qr={"ttlSeconds": 20, "maxAttempts": 2}))
    open_page(driver, g, "/")  # no session parameter: the demo session
    assert text(driver, "session-id") == "demo"
    assert text(driver, "status") == "Scan this code with WhatsApp"
    assert text(driver, "attempt") == "First code"
    first = live_qr_matches_simulator(driver, g)
    # The QR box is square and large.
    box = by_id(driver, "qr-box").rect
    assert box["width"] == box["height"] and box["width"] >= 300

    cd = text(driver, "countdown")
    assert MMSS.match(cd) and 15 < seconds(cd) <= 20, cd
    assert "urgent" not in classes(driver, "countdown")
    wait(driver, lambda d: (seconds(text(d, "countdown")) or 99) < seconds(cd), 3,
         "the countdown did not go down")
    # Admins (everyone in demo mode) always see the refresh button; it does not pulse while the code is valid.
    assert visible(driver, "role-badge") and "is-hidden" not in classes(driver, "refresh")
    assert "pulse" not in classes(driver, "refresh")

    # Hold the next code back so the expired state stays on screen until we let it go.
    faults(g, instance="demo", countZero=True)
    wait(driver, lambda d: (seconds(text(d, "countdown")) or 99) <= 15 and "urgent" in classes(d, "countdown"), 10,
         "the countdown never turned red")
    assert state(driver) == "live" and (seconds(text(driver, "countdown")) or 0) > 10  # red from 15 s, not later

    wait(driver, lambda d: visible(d, "overlay") and text(d, "overlay-title") == "QR code expired", 22,
         "no expired overlay")
    wait(driver, lambda d: state(d) == "regenerating", 5)
    assert text(driver, "status") == "Generating a new QR code (attempt 1/2)"
    assert text(driver, "overlay-detail") == "A new one is being generated…"
    assert text(driver, "attempt") == "Attempt 1 of 2"
    assert text(driver, "countdown") == "00:00" and "urgent" in classes(driver, "countdown")
    assert "pulse" in classes(driver, "refresh") and by_id(driver, "refresh").is_enabled()
    assert "is-dim" in classes(driver, "qr")  # the old code is not presented as valid

    clear_faults(g)
    wait(driver, lambda d: state(d) == "live", 8, "the next QR never replaced the expired one")
    assert not visible(driver, "overlay")
    assert text(driver, "attempt") == "Attempt 1 of 2"
    assert "pulse" not in classes(driver, "refresh")
    cd = text(driver, "countdown")
    assert 15 < seconds(cd) <= 20 and "urgent" not in classes(driver, "countdown")
    second = live_qr_matches_simulator(driver, g)
    assert second != first


def test_failure_after_the_last_attempt_and_start_again(driver, gateway_factory):
    g = gateway_factory(config(qr={"ttlSeconds": 4, "maxAttempts": 1}))
    open_page(driver, g, until=None)
    wait(driver, lambda d: state(d) == "failed", 25, "never failed")
    assert text(driver, "status") == "Validation failed"
    assert re.fullmatch(r"QR code generation failed after 1 attempts?\. Please request a new validation\.",
                        text(driver, "message")), text(driver, "message")
    assert text(driver, "attempt") == "Attempt 1 of 1"
    assert text(driver, "overlay-title") == "QR code expired"
    button = by_id(driver, "refresh")
    assert button.text == "Start again" and button.is_displayed() and button.is_enabled()
    assert {"pulse", "btn-danger"} <= classes(driver, "refresh")
    assert text(driver, "countdown") == "00:00" and "urgent" in classes(driver, "countdown")

    button.click()  # an admin starts again: a fresh round
    wait(driver, lambda d: state(d) == "live", 8, "no new QR after Start again")
    assert text(driver, "attempt") == "First code"
    assert not visible(driver, "message")


def test_admin_refresh_brings_a_new_qr_and_too_soon_shows_the_wait(driver, gateway_factory):
    g = gateway_factory(config(refresh={"minIntervalSeconds": 5}))
    open_page(driver, g)
    first = live_qr_matches_simulator(driver, g)
    old_src = by_id(driver, "qr").get_attribute("src")

    by_id(driver, "refresh").click()
    wait(driver, lambda d: state(d) == "live" and by_id(d, "qr").get_attribute("src") != old_src, 8,
         "refresh brought no new QR")
    by_id(driver, "refresh").click()  # too soon: the gateway says when it may be pressed again
    wait(driver, lambda d: re.fullmatch(r"Try again in [1-5]s", text(d, "refresh")), 5, "no rate-limit wait")
    assert not by_id(driver, "refresh").is_enabled() and "pulse" not in classes(driver, "refresh")
    n = int(re.search(r"\d+", text(driver, "refresh")).group())
    assert text(driver, "attempt") == "First code"
    second = live_qr_matches_simulator(driver, g)
    assert second != first
    wait(driver, lambda d: text(d, "refresh") == "Request new QR code" and by_id(d, "refresh").is_enabled(), n + 3,
         "the button never came back")
    assert state(driver) == "live" and decode_qr(driver) == second  # the refused press changed nothing

    # The upstream fails: a discreet warning, and the last good QR stays live.
    assert not visible(driver, "warning")
    faults(g, instance="demo", errorRate=1)
    wait(driver, lambda d: visible(d, "warning"), 5, "no upstream warning")
    assert text(driver, "warning").startswith("Trouble reaching WhatsApp (") and "500" in text(driver, "warning")
    assert state(driver) == "live" and "is-dim" not in classes(driver, "qr") and decode_qr(driver) == second


def test_scan_shows_linked_within_one_poll_interval(driver, gateway_factory):
    g = gateway_factory(config())
    open_page(driver, g)
    t0 = time.monotonic()
    scan(g)
    wait(driver, lambda d: state(d) == "linked", 5, "never linked")
    elapsed = time.monotonic() - t0
    assert elapsed < 3, f"linked after {elapsed:.2f}s with a 1 s poll interval"  # 1 s + slack for a busy machine
    assert text(driver, "status") == "WhatsApp linked successfully"
    assert visible(driver, "linked") and not visible(driver, "qr") and not visible(driver, "overlay")
    assert re.fullmatch(r"at \d\d:\d\d:\d\d( [AP]M)?", text(driver, "linked-at")), text(driver, "linked-at")
    assert text(driver, "countdown") == "" and text(driver, "attempt") == ""
    # Refreshing a linked session: the gateway says no QR is needed.
    by_id(driver, "refresh").click()
    wait(driver, lambda d: text(d, "hint") == "Session already connected. No QR needed.", 5)
    assert state(driver) == "linked"


def test_phone_unlinking_shows_disconnected_and_an_admin_starts_again(driver, gateway_factory):
    # A linked session is not polled: the unlink reaches the gateway as the simulator's webhook.
    port = free_port()
    g = gateway_factory(config(simulator={**FAST["simulator"], "webhooks": True, "webhookURL": f"http://127.0.0.1:{port}/webhooks/evolution"}),
                        extra_args=("--port", str(port)))
    open_page(driver, g)
    scan(g)
    wait(driver, lambda d: state(d) == "linked", 5, "never linked")
    status, _ = request(g, "POST", "/simulator/disconnect/demo")
    assert status == 200
    wait(driver, lambda d: state(d) == "disconnected", 5, "unlink not shown")
    assert text(driver, "status") == "Disconnected" and text(driver, "overlay-title") == "Disconnected"
    assert text(driver, "message") == "Request a new QR code to link a phone again."
    by_id(driver, "refresh").click()
    wait(driver, lambda d: state(d) == "live", 8, "no new QR after the unlink")
    live_qr_matches_simulator(driver, g)


@pytest.mark.parametrize("sig,durable", [(signal.SIGTERM, False), (signal.SIGKILL, True)],
                         ids=["sigterm-new-state", "sigkill-restored-state"])
def test_gateway_restart_reconnects_and_never_shows_the_old_qr_as_live(driver, gateway_factory, tmp_path, sig, durable):
    # durable: both processes share one store, so the second restores the session (and its sequence numbers)
    # and the page resumes with `since`; otherwise the second process starts from scratch.
    cfg = config(store={"path": str(tmp_path / "qrgate.sqlite")}) if durable else config()
    g = gateway_factory(cfg)
    open_page(driver, g)
    old = live_qr_matches_simulator(driver, g)
    time.sleep(1.2)  # a few countdowns: the page holds a seq to resume from

    g.stop(sig=sig)
    wait(driver, lambda d: state(d) == "offline", 5, "no offline state")
    assert text(driver, "status") == "Reconnecting…"
    assert text(driver, "conn-text") == "Reconnecting…"
    assert text(driver, "overlay-title") == "Reconnecting…"
    assert "is-dim" in classes(driver, "qr") and text(driver, "countdown") == "--:--"
    assert not by_id(driver, "refresh").is_enabled()
    time.sleep(0.5)
    assert state(driver) == "offline"

    g2 = restart_on(g.port, cfg, gateway_factory)
    wait(driver, lambda d: state(d) == "live", 20, "never came back")
    assert text(driver, "conn-text") == "Live" and "is-dim" not in classes(driver, "qr")
    # The new process's simulator has a new code; the page shows it (a restored session replaces its
    # stored code at its first poll, within a second).
    new = wait(driver, lambda d: (lambda c: c if c and c == sim_code(g2) else None)(decode_qr(d, deadline=0)), 6,
               "the QR on screen is not the simulator's current code")
    assert new != old
    cd = text(driver, "countdown")
    assert MMSS.match(cd) and seconds(cd) > 20


def test_credentials_browser_token_link_key_form_and_unknown_session(driver, gateway_factory):
    g = gateway_factory(config(auth={"adminKeys": [ADMIN_KEY], "serviceKeys": [SERVICE_KEY]}))
    # No credential: the page shows nothing of the session and asks for a key.
    open_page(driver, g, "/?session=demo", until="locked", timeout=10)
    assert text(driver, "status") == "Access key needed" and not visible(driver, "qr")
    assert visible(driver, "token-form") and "needs an access key" in text(driver, "token-reason")
    # A wrong key is refused with a reason.
    by_id(driver, "token-input").send_keys("not-a-key-0123456789")
    by_id(driver, "token-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: state(d) == "locked" and "not recognised" in text(d, "token-reason"), 5, "wrong key not refused")

    # The link a backend sends: a browser token for this one session. A plain browser sees no refresh button.
    token = browser_token(g, "demo", SERVICE_KEY)
    open_page(driver, g, f"/?session=demo&token={token}")
    assert "token=" not in driver.current_url  # the credential does not stay in the address bar
    assert not visible(driver, "role-badge") and "is-hidden" in classes(driver, "refresh")
    live_qr_matches_simulator(driver, g)

    # An admin key typed into the form: the refresh button appears and works.
    by_id(driver, "enter-key").click()
    by_id(driver, "token-input").send_keys(ADMIN_KEY)
    by_id(driver, "token-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: visible(d, "role-badge") and "is-hidden" not in classes(d, "refresh"), 5, "no admin role")
    assert not visible(driver, "token-form") and state(driver) == "live"
    src = by_id(driver, "qr").get_attribute("src")
    by_id(driver, "refresh").click()
    wait(driver, lambda d: state(d) == "live" and by_id(d, "qr").get_attribute("src") != src, 8, "admin refresh failed")

    # An unknown session (the admin key is kept for this tab): a form to type another id.
    driver.get(g.http + "/?session=ghost")
    wait(driver, lambda d: state(d) == "unknown", 8)
    assert visible(driver, "session-form") and "There is no session “ghost”" in text(driver, "session-reason")
    by_id(driver, "session-input").send_keys("demo")
    by_id(driver, "session-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: state(d) == "live" and text(d, "session-id") == "demo", 8)

    # The dashboard needs a service or admin key; the form takes it.
    driver.execute_script("sessionStorage.clear()")
    driver.get(g.http + "/admin")
    wait(driver, lambda d: visible(d, "token-form"), 8, "no key form on the dashboard")
    assert "service or admin key" in text(driver, "token-reason")
    by_id(driver, "token-input").send_keys(SERVICE_KEY)
    by_id(driver, "token-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-session=demo]"), 5, "no rows with the key")
    # A service key may watch but not refresh.
    assert not driver.find_element(By.CSS_SELECTOR, "tr[data-session=demo] button.refresh").is_enabled()


def test_dashboard_lists_every_session_live(driver, gateway_factory):
    g = gateway_factory(config(sessions=[{"sessionId": "shop-a"}, {"sessionId": "shop-b"}], refresh={"minIntervalSeconds": 10}))
    driver.get(g.http + "/admin")

    def row(d, sid):
        return d.find_element(By.CSS_SELECTOR, f"tr[data-session='{sid}']")

    def cell(d, sid, cls):
        return row(d, sid).find_element(By.CSS_SELECTOR, "." + cls).text

    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 3 and
         all(cell(d, s, "cell-age").endswith(" s") for s in ("demo", "shop-a", "shop-b")), 10, "rows never filled")
    assert [r.get_attribute("data-session") for r in driver.find_elements(By.CSS_SELECTOR, "#rows tr")] == ["demo", "shop-a", "shop-b"]
    assert text(driver, "summary") == "3 sessions · 3 pending"
    for sid in ("demo", "shop-a", "shop-b"):
        assert cell(driver, sid, "pill") == "Pending"
        assert re.search(r"First code · expires in \d\d:\d\d", cell(driver, sid, "sub"))
        assert cell(driver, sid, "last-error") == "—"
        assert row(driver, sid).find_element(By.CSS_SELECTOR, "a.open").get_attribute("href") == f"{g.http}/?session={sid}"
    # QR age grows by itself.
    age = int(cell(driver, "shop-a", "cell-age").split()[0])
    wait(driver, lambda d: int(cell(d, "shop-a", "cell-age").split()[0]) > age, 4, "QR age does not move")

    # An upstream failing for one session shows as its last error, live.
    faults(g, instance="shop-b", errorRate=1)
    wait(driver, lambda d: "500" in cell(d, "shop-b", "last-error"), 8, "no last error")
    clear_faults(g)

    # Refresh one session: its QR becomes new; pressing again at once shows the wait.
    wait(driver, lambda d: int(cell(d, "shop-a", "cell-age").split()[0]) >= 2, 5)
    row(driver, "shop-a").find_element(By.CSS_SELECTOR, "button.refresh").click()
    wait(driver, lambda d: cell(d, "shop-a", "row-note") == "Refresh requested.", 5)
    row(driver, "shop-a").find_element(By.CSS_SELECTOR, "button.refresh").click()
    wait(driver, lambda d: re.fullmatch(r"Try again in \d+s", cell(d, "shop-a", "refresh")), 5, "no rate-limit wait")
    assert not row(driver, "shop-a").find_element(By.CSS_SELECTOR, "button.refresh").is_enabled()
    wait(driver, lambda d: int(cell(d, "shop-a", "cell-age").split()[0]) <= 1 and cell(d, "shop-a", "pill") == "Pending", 6,
         "the refreshed session's QR age did not restart")

    # A phone scans the demo session: the dashboard shows it linked.
    scan(g)
    wait(driver, lambda d: cell(d, "demo", "pill") == "Linked", 5)
    assert cell(driver, "demo", "cell-age") == "—"
    wait(driver, lambda d: text(d, "summary") == "3 sessions · 1 linked · 2 pending", 3)


def test_dashboard_at_scale_pages_searches_filters_and_stays_live(driver, gateway_factory):
    """2 000 sessions: the dashboard loads them (a page of 50 rows at a time), shows the counts per status,
    narrows by search and by status, and a session linked on the phone shows as linked within a second."""
    n = 2000
    port = free_port()
    g = gateway_factory({**config(sessions=[{"sessionId": f"shop-{i:04d}"} for i in range(n)], demoSession="", poll={"intervalSeconds": 5},
                                  store={"mode": "memory"}, log={"level": "warning"}, qr={"ttlSeconds": 600},
                                  simulator={"firstQrSeconds": 600, "nextQrSeconds": 600,
                                             "webhookURL": f"http://127.0.0.1:{port}/webhooks/evolution"})},
                        extra_args=("--port", str(port)))
    # The sessions come up (2 000 QR renders in a debug build) before the page is judged.
    deadline = time.monotonic() + 120
    while True:
        _, body = request(g, "GET", "/api/v1/sessions")
        if sum(1 for s in body["data"]["sessions"] if s["qrExpiresAt"]) == n:
            break
        assert time.monotonic() < deadline, "sessions never all had a QR"
        time.sleep(1)

    driver.get(g.http + "/admin")
    count = lambda d, status="": d.find_element(By.CSS_SELECTOR, f"[data-count='{status}']").text
    wait(driver, lambda d: count(d) == str(n) and count(d, "pending") == str(n), 20, "the counts never reached 2 000")
    rows = lambda d: [r.get_attribute("data-session") for r in d.find_elements(By.CSS_SELECTOR, "#rows tr")]
    assert rows(driver) == [f"shop-{i:04d}" for i in range(50)]
    assert text(driver, "range") == f"1–50 of {n}" and text(driver, "summary") == f"{n} sessions · {n} pending"
    by_id(driver, "next").click()
    wait(driver, lambda d: rows(d)[:1] == ["shop-0050"] and text(d, "range") == f"51–100 of {n}", 3, "next page")

    # Search narrows the list; the row stays live.
    by_id(driver, "search").send_keys("shop-1234")
    wait(driver, lambda d: rows(d) == ["shop-1234"] and text(d, "range") == "", 3, "search did not narrow")
    row = lambda d: d.find_element(By.CSS_SELECTOR, "tr[data-session='shop-1234']")
    assert row(driver).find_element(By.CSS_SELECTOR, ".pill").text == "Pending"
    # The gateway's own `connected` frame, seen by a socket of the test, starts the clock for the page.
    with ws_connect(g.http.replace("http", "ws") + "/ws", max_size=None) as ws:
        json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"op": "subscribe", "session": "shop-1234", "formats": ["code"]}))
        status, _ = request(g, "POST", "/simulator/scan/shop-1234")
        assert status == 200
        deadline = time.monotonic() + 20
        while json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))["action"] != "connected":
            pass
        linked = time.monotonic()
    wait(driver, lambda d: row(d).find_element(By.CSS_SELECTOR, ".pill").text == "Linked", 3, "link not shown")
    took = time.monotonic() - linked
    assert took < 1.0, f"the dashboard showed the link {took:.2f} s after the gateway announced it"
    assert count(driver, "connected") == "1" and count(driver, "pending") == str(n - 1)

    # A status filter: only the linked one, whatever the search says once it is cleared.
    by_id(driver, "search").clear()
    by_id(driver, "search").send_keys(" ")  # an input event with an empty query
    driver.find_element(By.CSS_SELECTOR, ".chip[data-status='connected']").click()
    wait(driver, lambda d: rows(d) == ["shop-1234"], 3, "the linked filter")
    assert driver.find_element(By.CSS_SELECTOR, ".chip[data-status='connected']").get_attribute("aria-pressed") == "true"
    driver.find_element(By.CSS_SELECTOR, ".chip[data-status='pending']").click()
    wait(driver, lambda d: len(rows(d)) == 50 and "shop-1234" not in rows(d) and text(d, "range") == f"1–50 of {n - 1}", 3,
         "the pending filter")
    # No full re-render per event: with 2 000 sessions ticking, the table holds one page of rows.
    assert len(driver.find_elements(By.CSS_SELECTOR, "#rows tr")) == 50
