#!/usr/bin/env python3
"""Regenerates docs/screenshots/*.png: the page in each of its states and the dashboard, from a real gateway
(the built-in simulator, short timings) and headless Chromium.

    python3 Tests/e2e/screenshots.py            # from the repository root; about a minute

Needs .build/debug/qrgate (or QRGATE_BIN_FOR_TESTS), /usr/bin/chromium and /usr/bin/chromedriver, like the
e2e tests. Talks to 127.0.0.1 only.
"""
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from selenium.webdriver.common.by import By  # noqa: E402

from conftest import ROOT, Gateway  # noqa: E402
from pagekit import by_id, chrome, faults, scan, seconds, state, text, wait  # noqa: E402

OUT = os.path.join(ROOT, "docs", "screenshots")
FAST = {"poll": {"intervalSeconds": 1}, "simulator": {"firstQrSeconds": 60, "nextQrSeconds": 20}}
PHONE = (480, 1000)
DESKTOP = (1120, 780)


def shot(driver, name):
    driver.execute_script("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur()")
    time.sleep(0.35)  # let transitions (dimming, colours) settle
    path = os.path.join(OUT, name + ".png")
    driver.save_screenshot(path)
    print("wrote", os.path.relpath(path, ROOT))


def page_in(driver, g, until, timeout=30, path="/?session=demo"):
    driver.get(g.http + path)
    wait(driver, lambda d: state(d) == until, timeout, f"page never reached {until}")


def main():
    os.makedirs(OUT, exist_ok=True)
    gateways = []

    def start(config, **kw):
        g = Gateway({**FAST, **config}, **kw)
        gateways.append(g)
        return g

    driver = chrome(*PHONE)
    try:
        # Started first so its session has failed by the time it is photographed.
        failing = start({"qr": {"ttlSeconds": 3, "maxAttempts": 2}})
        # A QR that outlives its lifetime on the page: each poll takes 6 s, so the gateway only expires the
        # 4 s code when the poll in flight returns, and the page shows its own "expired" meanwhile.
        slow = start({"qr": {"ttlSeconds": 4, "maxAttempts": 5}})
        faults(slow, instance="demo", latencyMs=6000)
        main_gw = start({"qr": {"ttlSeconds": 45, "maxAttempts": 2}})

        # 1. A live code, then the last 15 seconds.
        page_in(driver, main_gw, "live")
        shot(driver, "live")
        # The last 15 seconds, on a gateway whose codes live 20 s.
        urgent_gw = start({"qr": {"ttlSeconds": 20, "maxAttempts": 2}})
        page_in(driver, urgent_gw, "live")
        wait(driver, lambda d: (seconds(text(d, "countdown")) or 99) <= 12, 15)
        shot(driver, "urgent")

        # The phone-number view: a pairing code for a number typed in.
        phone_gw = start({"qr": {"ttlSeconds": 60, "maxAttempts": 2}})
        page_in(driver, phone_gw, "live")
        by_id(driver, "switch").click()
        by_id(driver, "phone").send_keys("+55 11 98765-4321")
        by_id(driver, "phone-submit").click()
        wait(driver, lambda d: state(d) == "live" and text(d, "pairing-code"), 10)
        shot(driver, "phone")

        # 2. Expired (the page's own countdown ran out), then regenerating (attempt 1/3).
        page_in(driver, slow, "expired", timeout=40)
        shot(driver, "expired")
        wait(driver, lambda d: state(d) == "regenerating", 15)
        shot(driver, "regenerating")

        # 3. Failed after the last attempt.
        page_in(driver, failing, "failed", timeout=30)
        shot(driver, "failed")

        # 4. Linked: the phone scans.
        page_in(driver, main_gw, "live")
        scan(main_gw)
        wait(driver, lambda d: state(d) == "linked", 5)
        shot(driver, "linked")

        # 5. Reconnecting: the gateway goes away under a live page.
        gone = start({"qr": {"ttlSeconds": 60, "maxAttempts": 2}})
        page_in(driver, gone, "live")
        gone.stop(sig=signal.SIGKILL)
        wait(driver, lambda d: state(d) == "offline", 5)
        shot(driver, "reconnecting")

        # 6. An access key needed (keys configured, no credential in the link).
        keyed = start({"qr": {"ttlSeconds": 60}, "auth": {"adminKeys": ["adm-key-0123456789"]}})
        page_in(driver, keyed, "locked", timeout=10)
        shot(driver, "access-key")

        # 7. The dashboard: sessions in assorted states, live.
        dash = start({"qr": {"ttlSeconds": 60, "maxAttempts": 3},
                      "sessions": [{"sessionId": "acme-store"}, {"sessionId": "bistro-42"},
                                   {"sessionId": "clinic-north"}, {"sessionId": "florist.sp"}]})
        faults(dash, instance="bistro-42", errorRate=1)
        time.sleep(4)
        scan(dash, "clinic-north")
        time.sleep(2)
        driver.set_window_size(*DESKTOP)
        driver.get(dash.http + "/admin")
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 5, 10)
        row = driver.find_element(By.CSS_SELECTOR, "tr[data-session='acme-store'] button.refresh")
        row.click()
        wait(driver, lambda d: "Refresh requested." in d.find_element(
            By.CSS_SELECTOR, "tr[data-session='acme-store'] .row-note").text, 5)
        wait(driver, lambda d: "500" in d.find_element(By.CSS_SELECTOR, "tr[data-session='bistro-42'] .last-error").text, 10)
        shot(driver, "dashboard")
        driver.set_window_size(*PHONE)
        time.sleep(0.5)
        shot(driver, "dashboard-phone")
    finally:
        driver.quit()
        for g in gateways:
            g.stop()


if __name__ == "__main__":
    main()
