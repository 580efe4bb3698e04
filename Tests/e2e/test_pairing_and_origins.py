"""Linking by phone number (pairing codes) over REST, the WebSocket and the Supabase rows; the security headers on
everything served; CORS and the Origin allow-list, from raw clients and from a page on a second origin in headless
Chromium. Every wait has a deadline; network traffic stays on 127.0.0.1."""
import asyncio
import functools
import http.server
import json
import re
import socket
import threading
import time
import urllib.request

import pytest
import websockets

from apihelp import call
from pagekit import wait

SERVICE = "svc-key-0123456789"
ADMIN = "adm-key-0123456789"
KEYS = {"serviceKeys": [SERVICE], "adminKeys": [ADMIN]}
CODE = re.compile(r"^[A-Z0-9]{4}-[A-Z0-9]{4}$")


def run(coro, limit=60):
    return asyncio.run(asyncio.wait_for(coro, limit))


def sim(g, instance):
    with urllib.request.urlopen(g.http + "/simulator/state", timeout=5) as r:
        return next(i for i in json.loads(r.read())["instances"] if i["name"] == instance)


def shown(raw):
    """A pairing code as WhatsApp shows it (the simulator keeps Evolution's 8 bare characters)."""
    return raw[:4] + "-" + raw[4:] if raw else raw


def pair_on_phone(g, instance, code):
    req = urllib.request.Request(f"{g.http}/simulator/pair/{instance}", data=json.dumps({"code": code}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_pairing_codes_over_rest_websocket_and_rows(gateway_factory):
    g = gateway_factory({"auth": KEYS, "qr": {"ttlSeconds": 30}, "poll": {"intervalSeconds": 1},
                         "refresh": {"minIntervalSeconds": 0}, "simulator": {"firstQrSeconds": 30}})

    # REST: a bad number is refused naming the field, with nothing created.
    for bad in ("55 11 98765-4321", "1234567", "+", "5511987654321000"):
        status, _, body = call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "p-bad", "phoneNumber": bad}, key=SERVICE)
        assert status == 400 and "phoneNumber" in body["error"], (bad, status, body)
    status, _, body = call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "p-bad", "phoneNumber": 5511987654321}, key=SERVICE)
    assert status == 400 and "phoneNumber" in body["error"], body
    assert call(g, "GET", "/api/v1/sessions/status?sessionId=p-bad", key=SERVICE)[0] == 404

    # init with a number: the first answer already carries the code the upstream gave (as WhatsApp shows it).
    status, _, body = call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "p1", "phoneNumber": "+5511987654321"}, key=SERVICE)
    assert status == 200, body
    code = body["data"]["pairingCode"]
    assert CODE.match(code) and code == shown(sim(g, "p1")["pairingCode"]), (code, sim(g, "p1"))
    status, _, body = call(g, "GET", "/api/v1/sessions/status?sessionId=p1", key=SERVICE)
    assert body["data"]["pairingCode"] == code and body["data"]["pairingPhone"] == "•••• 4321"
    assert "987654321" not in json.dumps(body)
    # A session linking by QR only has no code.
    status, _, body = call(g, "GET", "/api/v1/sessions/status?sessionId=demo", key=SERVICE)
    assert body["data"]["pairingCode"] is None and body["data"]["pairingPhone"] is None
    status, _, body = call(g, "POST", "/api/v1/sessions/refresh-qr", {"sessionId": "p1", "phoneNumber": "abc"}, key=SERVICE)
    assert status == 400 and "phoneNumber" in body["error"]

    token = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{g.http}/api/v1/sessions/p1/token", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {SERVICE}", "Content-Type": "application/json"}), timeout=5).read())["data"]["token"]

    async def main():
        # The Supabase rows carry the code too: one UPDATE per new code, with pairing_code set.
        rows = await websockets.connect(f"ws://{g.host}:{g.port}/realtime/v1/websocket?apikey={SERVICE}&vsn=1.0.0")
        await rows.send(json.dumps({"topic": "realtime:rows", "event": "phx_join", "ref": "1", "join_ref": "1", "payload": {"config": {
            "postgres_changes": [{"event": "UPDATE", "schema": "public", "table": "evolution_instances", "filter": "instance_name=eq.p1"}]}}}))
        while json.loads(await asyncio.wait_for(rows.recv(), 5))["event"] != "phx_reply":
            pass

        # The person at the page, with a browser token for p1 only: the snapshot has the code.
        async with websockets.connect(f"ws://{g.host}:{g.port}/ws?token={token}") as ws:
            async def next_of(*actions, seconds=10):
                end = time.monotonic() + seconds
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, end - time.monotonic())))
                    if m["action"] in actions:
                        return m
            await next_of("hello")
            await ws.send(json.dumps({"op": "subscribe", "session": "p1", "formats": ["code"]}))
            snap = await next_of("snapshot")
            assert snap["pairingCode"] == code and snap["pairingPhone"] == "•••• 4321"
            # Another session: not theirs.
            await ws.send(json.dumps({"op": "pair", "session": "demo", "phoneNumber": "5511999990000"}))
            err = await next_of("error")
            assert err["code"] == "unauthorized" and err["sessionId"] == "demo"
            # A bad number: an error naming the field; the session is untouched.
            await ws.send(json.dumps({"op": "pair", "session": "p1", "phoneNumber": "12-34"}))
            err = await next_of("error")
            assert err["code"] == "invalid_message" and "phoneNumber" in err["reason"]
            # Another number: a new round whose QR comes with a new code.
            await ws.send(json.dumps({"op": "pair", "session": "p1", "phoneNumber": "+4915112345678"}))
            got = {}
            while "pairing_code" not in got:
                m = await next_of("pairing_requested", "qr_regenerating", "qr_generated", "pairing_code")
                got[m["action"]] = m
            assert got["pairing_requested"]["pairingPhone"] == "•••• 5678"
            assert got["qr_regenerating"]["attempt"] == 1  # a browser's request spends an attempt
            new = got["pairing_code"]
            assert CODE.match(new["code"]) and new["code"] == shown(sim(g, "p1")["pairingCode"]) and new["code"] != code
            assert new["expiresAt"] == got["qr_generated"]["qrExpiresAt"] and new["seq"] == got["qr_generated"]["seq"] + 1
            # The row: one UPDATE with the new code (the qr_code beside it).
            while True:
                change = json.loads(await asyncio.wait_for(rows.recv(), 10))
                if change["event"] == "postgres_changes" and change["payload"]["data"]["record"]["pairing_code"] == new["code"]:
                    break
            assert change["payload"]["data"]["record"]["qr_code"].startswith("data:image/png;base64,")
            # Typed on the phone: a wrong code is refused, the right one links, and the page hears it.
            assert pair_on_phone(g, "p1", "ZZZZ-ZZZZ")[0] == 400
            assert pair_on_phone(g, "p1", new["code"])[0] == 200
            linked = await next_of("connected", seconds=5)
            assert linked["sessionId"] == "p1"
            await ws.send(json.dumps({"op": "pair", "session": "p1", "phoneNumber": "+4915112345678"}))
            again = await next_of("connected", "error")
            assert again["action"] == "connected" and "already connected" in again["message"]
        await rows.close()
    run(main())
    status, _, body = call(g, "GET", "/api/v1/sessions/status?sessionId=p1", key=SERVICE)
    assert body["data"]["status"] == "connected" and body["data"]["pairingCode"] is None


def test_security_headers_on_everything_served(gateway_factory):
    g = gateway_factory({"auth": KEYS, "server": {"frameAncestors": "https://portal.example.com"}})
    for path, key in (("/", None), ("/admin", None), ("/style.css", None), ("/favicon.svg", None), ("/healthz", None),
                      ("/api/v1/sessions", SERVICE), ("/api/v1/sessions", None), ("/nowhere", None)):
        req = urllib.request.Request(g.http + path, headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            r = urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as e:
            r = e
        csps = r.headers.get_all("Content-Security-Policy") or []
        assert len(csps) == 1, (path, csps)
        directives = {d.split()[0]: d.split()[1:] for d in csps[0].split(";") if d.strip()}
        assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"], (path, csps)
        assert directives["default-src"] == ["'none'"] and directives["frame-ancestors"] == ["https://portal.example.com"]
        assert "'unsafe-inline'" not in csps[0] and "'unsafe-eval'" not in csps[0]
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "no-referrer", path
        assert r.headers.get("Access-Control-Allow-Origin") is None, path


def test_cors_and_websocket_origins_from_raw_clients(gateway_factory):
    allowed, other = "http://127.0.0.1:9", "http://evil.example"
    g = gateway_factory({"auth": KEYS, "server": {"allowedOrigins": [allowed]}})

    def preflight(origin, path="/api/v1/sessions/status"):
        req = urllib.request.Request(g.http + path, method="OPTIONS", headers={
            "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
        try:
            r = urllib.request.urlopen(req, timeout=5)
        except urllib.error.HTTPError as e:
            r = e
        return r.status, r.headers, r.read()

    status, headers, _ = preflight(allowed)
    assert status == 204 and headers["Access-Control-Allow-Origin"] == allowed and "Vary" in headers
    assert "Authorization" in headers["Access-Control-Allow-Headers"] and "POST" in headers["Access-Control-Allow-Methods"]
    status, headers, body = preflight(other)
    assert status == 403 and headers.get("Access-Control-Allow-Origin") is None and b"allowedOrigins" in body
    # Real requests: the allowed origin is named, another is not (its page cannot read the answer).
    for origin, expect in ((allowed, allowed), (other, None)):
        for path in ("/api/v1/sessions", "/app.js"):
            req = urllib.request.Request(g.http + path, headers={"Origin": origin, "Authorization": f"Bearer {SERVICE}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.headers.get("Access-Control-Allow-Origin") == expect, (origin, path)

    async def main():
        async with websockets.connect(g.ws, origin=allowed) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["action"] == "hello"
        with pytest.raises(websockets.InvalidHandshake):
            async with websockets.connect(g.ws, origin=other, open_timeout=5):
                pass
    run(main())
    # What the refused client got: a 403 with the reason (libwebsockets answers a refused upgrade as HTTP/1.0).
    with socket.create_connection((g.host, g.port), timeout=5) as raw:
        raw.sendall((f"GET /ws HTTP/1.1\r\nHost: {g.host}\r\nOrigin: {other}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        answer = b""
        while b"origin not allowed" not in answer:
            chunk = raw.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert b" 403 " in answer.split(b"\r\n", 1)[0] and b"origin not allowed" in answer, answer


class SecondOrigin:
    """A static site on another port of 127.0.0.1: another origin, as an app embedding QRGate would be."""

    def __init__(self, directory):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
        handler.log_message = lambda *a: None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


PROBE = """<!doctype html><meta charset="utf-8"><title>probe</title><script src="probe.js"></script>"""
PROBE_JS = """
window.probe = {};
const gw = new URLSearchParams(location.search).get("gw");
fetch(gw + "/api/v1/sessions/status?sessionId=demo", {headers: {Authorization: "Bearer " + new URLSearchParams(location.search).get("key")}})
  .then(r => r.json()).then(b => { window.probe.fetch = "ok:" + b.data.sessionId; })
  .catch(e => { window.probe.fetch = "blocked:" + e.name; });
const ws = new WebSocket(gw.replace("http", "ws") + "/ws");
ws.onmessage = (m) => { window.probe.ws = "open:" + JSON.parse(m.data).action; ws.close(); };
ws.onerror = () => { if (!window.probe.ws) window.probe.ws = "refused"; };
"""


def test_in_chromium_csp_blocks_injected_inline_script_and_origins_are_enforced(driver, gateway_factory, tmp_path):
    (tmp_path / "index.html").write_text(PROBE)
    (tmp_path / "probe.js").write_text(PROBE_JS)
    site = SecondOrigin(tmp_path)
    try:
        g = gateway_factory({"auth": KEYS, "server": {"allowedOrigins": [site.origin]}})
        # A served page: an inline <script> someone manages to inject does not run; the page's own code does.
        driver.get(g.http + "/?session=demo")
        wait(driver, lambda d: d.execute_script("return document.readyState") == "complete", 10, "page never loaded")
        driver.execute_script("""
            const s = document.createElement('script'); s.textContent = 'window.__injected = 1'; document.body.appendChild(s);
            const d = document.createElement('div'); d.innerHTML = '<img src=x onerror="window.__injected2 = 1">'; document.body.appendChild(d);""")
        time.sleep(0.5)
        assert driver.execute_script("return [window.__injected === undefined, window.__injected2 === undefined]") == [True, True]
        assert driver.execute_script("return document.querySelectorAll('script[src]').length") >= 1

        # The allowed second origin reads the REST answer and opens the socket.
        driver.get(f"{site.origin}/index.html?gw={g.http}&key={SERVICE}")
        wait(driver, lambda d: d.execute_script("return window.probe && window.probe.fetch && window.probe.ws"), 10, "probe did not finish")
        assert driver.execute_script("return window.probe") == {"fetch": "ok:demo", "ws": "open:hello"}

        # The same page on an origin the gateway does not list: neither.
        g2 = gateway_factory({"auth": KEYS, "server": {"allowedOrigins": ["https://app.example.com"]}})
        driver.get(f"{site.origin}/index.html?gw={g2.http}&key={SERVICE}")
        wait(driver, lambda d: d.execute_script("return window.probe && window.probe.fetch && window.probe.ws"), 10, "probe did not finish")
        assert driver.execute_script("return window.probe") == {"fetch": "blocked:TypeError", "ws": "refused"}
    finally:
        driver.get("about:blank")
        site.close()


EMBED = """<!doctype html><meta charset="utf-8"><title>Shop: link your WhatsApp</title>
<h1>Shop</h1>
<main id="app" data-state="none"><qrgate-link session="{session}" token="{token}" gateway="{gateway}"></qrgate-link></main>
<script type="module" src="{gateway}/qrgate-link.js"></script>
<script src="embed.js"></script>"""
# The embedding app's own script: it follows the element's state, as an app would (qrgate-change events).
EMBED_JS = """document.addEventListener("qrgate-change", (e) => { document.getElementById("app").dataset.state = e.detail.view; });"""


def test_an_app_on_another_origin_embeds_the_element_through_the_whole_flow(driver, gateway_factory, tmp_path):
    """What docs/CLIENT.md promises: a page on another origin, a browser token its backend minted, the origin in
    server.allowedOrigins — the QR (decoded with zbar), a ticking countdown, the phone-number view with a code the
    phone accepts, and the linked state; the same page on an origin the gateway does not list gets nothing."""
    from pagekit import by_id, decode_qr, request, seconds, sim_code, state, text, visible
    site = SecondOrigin(tmp_path)
    try:
        g = gateway_factory({"auth": KEYS, "server": {"allowedOrigins": [site.origin]}, "poll": {"intervalSeconds": 1},
                             "qr": {"ttlSeconds": 30, "maxAttempts": 3}, "simulator": {"firstQrSeconds": 30}})
        token = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{g.http}/api/v1/sessions/demo/token", data=b"{}", method="POST",
            headers={"Authorization": f"Bearer {SERVICE}", "Content-Type": "application/json"}), timeout=5).read())["data"]["token"]
        (tmp_path / "embed.js").write_text(EMBED_JS)
        (tmp_path / "shop.html").write_text(EMBED.format(session="demo", token=token, gateway=g.http))
        driver.get(f"{site.origin}/shop.html")
        wait(driver, lambda d: state(d) == "live", 15, "the embedded element never showed a live QR")
        assert driver.execute_script("return location.origin") == site.origin != g.http
        code = sim_code(g)
        assert decode_qr(driver) == code, "the embedded QR does not decode to the simulator's code"
        first = seconds(text(driver, "countdown"))
        wait(driver, lambda d: (seconds(text(d, "countdown")) or 99) < first, 3, "the countdown does not tick")

        # "Link with phone number instead": the code shown is the one the phone accepts.
        by_id(driver, "switch").click()
        wait(driver, lambda d: visible(d, "phone-form"), 3, "no phone view")
        by_id(driver, "phone").send_keys("+55 11 98765-4321")
        by_id(driver, "phone-submit").click()
        wait(driver, lambda d: visible(d, "pairing-code") and sim(g, "demo")["pairingCode"] is not None
             and text(d, "pairing-code") == shown(sim(g, "demo")["pairingCode"]), 10, "no pairing code in the element")
        assert pair_on_phone(g, "demo", "AAAA-0000")[0] == 400 and state(driver) == "live"
        assert pair_on_phone(g, "demo", text(driver, "pairing-code"))[0] == 200
        wait(driver, lambda d: state(d) == "linked", 5, "the embedded element never showed the link")
        assert visible(driver, "linked")

        # The same page against a gateway that does not list this origin: the module is refused (CORS) and the
        # element never comes to life; neither would its socket (test above).
        g2 = gateway_factory({"auth": KEYS, "server": {"allowedOrigins": ["https://shop.example.com"]}})
        (tmp_path / "shop2.html").write_text(EMBED.format(session="demo", token=token, gateway=g2.http))
        driver.get_log("browser")
        driver.get(f"{site.origin}/shop2.html")
        wait(driver, lambda d: any("CORS" in m["message"] for m in d.get_log("browser")), 5, "no CORS refusal of the module")
        assert driver.execute_script("return customElements.get('qrgate-link') === undefined")
        assert state(driver) == "none"
    finally:
        driver.get("about:blank")
        site.close()


def test_pairing_codes_arriving_by_webhook_reach_the_page_without_a_poll(gateway_factory):
    """Evolution's `qrcode.updated` webhook carries `pairingCode` beside the new QR: it feeds the session as a poll
    would (polls are a minute apart here, so only the webhook can bring the rotated code in time)."""
    from pagekit import free_port
    port = free_port()
    g = gateway_factory({"poll": {"intervalSeconds": 60}, "qr": {"ttlSeconds": 60}, "refresh": {"minIntervalSeconds": 0},
                         "simulator": {"firstQrSeconds": 60, "pairingFirstSeconds": 1, "nextQrSeconds": 1,
                                       "webhookURL": f"http://127.0.0.1:{port}/webhooks/evolution"}},
                        extra_args=("--port", str(port)))

    async def main():
        async with websockets.connect(g.ws) as ws:
            async def next_of(action, seconds=10):
                end = time.monotonic() + seconds
                while True:
                    m = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, end - time.monotonic())))
                    if m["action"] == action:
                        return m
            await next_of("hello")
            await ws.send(json.dumps({"op": "subscribe", "session": "demo", "formats": ["code"]}))
            # Asked while the session's first connect is still out, the pair request's logout can reach the
            # upstream before that connect: the number then joins the attempt the late connect opened, and the
            # code rotates on that attempt's clock (a minute here), as Evolution's would. Pair once a QR shows.
            if (await next_of("snapshot"))["remaining"] is None:
                await next_of("qr_generated")
            await ws.send(json.dumps({"op": "pair", "session": "demo", "phoneNumber": "5511987654321"}))
            first = await next_of("pairing_code")
            # The simulator rotates after a second and says so by webhook: a new QR, then its new code right
            # after it. (Webhooks of the round the pair request ended may arrive late and start another round:
            # what counts is that a new code comes, beside its QR, with no poll.)
            last_qr, end, seen = None, time.monotonic() + 8, []
            while True:
                try:
                    m = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, end - time.monotonic())))
                except TimeoutError:
                    pytest.fail(f"no new pairing code within 8 s of {first}; saw {seen}")
                seen.append({k: m.get(k) for k in ("action", "seq", "code", "attempt", "remaining", "message") if k in m})
                if m["action"] == "qr_generated":
                    last_qr = m
                elif m["action"] == "pairing_code" and m["code"] != first["code"]:
                    break
            assert last_qr is not None and m["seq"] == last_qr["seq"] + 1, (last_qr, m)
            assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}", m["code"])
    run(main(), 30)
