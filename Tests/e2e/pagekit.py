"""Helpers shared by test_page.py and screenshots.py: headless Chromium, the simulator's controls, QR decoding."""
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException, TimeoutException,
                                        WebDriverException)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import Gateway

CHROMIUM = os.environ.get("QRGATE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("QRGATE_CHROMEDRIVER", "/usr/bin/chromedriver")
MMSS = re.compile(r"^\d\d:\d\d$")


def chrome(width=480, height=900):
    opts = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}",
                "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def wait(driver, condition, timeout=10, message="", poll=0.1):
    """WebDriverWait with a short poll; `condition(driver)` returns a truthy value when done. On timeout the
    message says what the page showed then (state, status, countdown)."""
    def safe(d):
        try:
            return condition(d)
        except (StaleElementReferenceException,):
            return False
    try:
        return WebDriverWait(driver, timeout, poll_frequency=poll).until(safe)
    except TimeoutException:
        raise TimeoutException(f"{message or 'condition not met'} within {timeout}s; page: {describe(driver)}; "
                               f"console: {console(driver)}") from None


def console(driver, last=15):
    """The page's recent console lines (its view changes and reconnects)."""
    try:
        return [e.get("message", "")[-200:] for e in driver.get_log("browser")][-last:]
    except WebDriverException:
        return []


def describe(driver):
    try:
        return driver.execute_script(
            "const l = document.querySelector('qrgate-link'); const r = l && l.shadowRoot;"
            "const t = (id) => { const e = document.getElementById(id) || (r && r.getElementById(id)); return e ? e.textContent : null; };"
            "return {state: document.body.dataset.state, conn: t('conn-text'), status: t('status'), countdown: t('countdown'),"
            " attempt: t('attempt'), overlay: t('overlay-title'), refresh: t('refresh'), hint: t('hint'), url: location.href};")
    except WebDriverException as e:
        return f"<{type(e).__name__}>"


def by_id(driver, id_):
    """The element with this id in the page, or else inside the <qrgate-link> element's shadow root (the linking
    flow's own parts: qr, status, countdown, overlay, refresh…)."""
    found = driver.find_elements(By.ID, id_)
    if found:
        return found[0]
    for host in driver.find_elements(By.CSS_SELECTOR, "qrgate-link"):
        inner = host.shadow_root.find_elements(By.CSS_SELECTOR, "#" + id_)
        if inner:
            return inner[0]
    raise NoSuchElementException(f"no #{id_} in the page nor in <qrgate-link>")


def text(driver, id_):
    return by_id(driver, id_).text


def classes(driver, id_):
    return set((by_id(driver, id_).get_attribute("class") or "").split())


def state(driver):
    return driver.find_element(By.ID, "app").get_attribute("data-state")


def visible(driver, id_):
    return by_id(driver, id_).is_displayed()


def seconds(mmss):
    """Seconds of an "MM:SS" countdown; None when it shows none ("--:--" offline, blank)."""
    if not MMSS.match(mmss or ""):
        return None
    m, s = mmss.split(":")
    return int(m) * 60 + int(s)


def request(g, method, path, body=None, key=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(g.http + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def browser_token(g, session, service_key):
    """A browser token for one session, as a backend would mint it for the link it sends (docs/API.md)."""
    status, body = request(g, "POST", f"/api/v1/sessions/{session}/token", {}, key=service_key)
    assert status == 200, (status, body)
    return body["data"]["token"]


def sim_code(g, instance="demo"):
    _, body = request(g, "GET", "/simulator/state")
    return next(i for i in body["instances"] if i["name"] == instance).get("code")


def scan(g, instance="demo"):
    """The phone scans: only possible once the instance shows a QR, so wait (bounded) for one."""
    deadline = time.monotonic() + 10
    while not sim_code(g, instance):
        assert time.monotonic() < deadline, f"{instance} never showed a QR to scan"
        time.sleep(0.05)
    status, _ = request(g, "POST", f"/simulator/scan/{instance}")
    assert status == 200


def faults(g, **f):
    status, _ = request(g, "POST", "/simulator/faults", f)
    assert status == 200, status


def clear_faults(g):
    status, _ = request(g, "DELETE", "/simulator/faults")
    assert status in (200, 204), status


def decode_qr(driver, element_id="qr", deadline=5.0):
    """Screenshots the QR <img> as the browser paints it and decodes it with zbarimg (retrying while it fades in)."""
    end = time.monotonic() + deadline
    last = ""
    while True:
        with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
            path = f.name
        try:
            by_id(driver, element_id).screenshot(path)
            # QR codes only: other symbologies can "find" a false barcode in the page around the code.
            out = subprocess.run(["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", path],
                                 capture_output=True, text=True, timeout=20)
            last = out.stdout.strip()
        except (WebDriverException, subprocess.TimeoutExpired) as e:
            last = f"<{type(e).__name__}>"
        finally:
            os.unlink(path)
        if last and not last.startswith("<") or time.monotonic() > end:
            return last
        time.sleep(0.2)


def free_port():
    """A loopback port nobody listens on now (for a gateway that must know its own address up front)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def restart_on(port, config, factory=None, deadline=15, extra_args=()):
    """Starts a gateway on a given port (the previous one on it just stopped), retrying while the port frees."""
    end = time.monotonic() + deadline
    while True:
        try:
            args = ("--port", str(port), *extra_args)  # the last --port wins over conftest's --port 0
            return factory(config, extra_args=args) if factory else Gateway(config, extra_args=args)
        except RuntimeError:
            if time.monotonic() > end:
                raise
            time.sleep(0.3)
