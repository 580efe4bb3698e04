/* QRGate live connection, shared by the page (app.js) and the dashboard (admin.js).
 *
 * One WebSocket to ws(s)://<this host>/ws (docs/PROTOCOL.md) that
 *  - reconnects by itself with jittered exponential backoff (0.5 s doubling up to 10 s, "equal jitter":
 *    half the delay fixed, half random), reset once the server says hello again;
 *  - notices a silently dead link (an app-level ping every 20 s; no frame at all within 8 s of it closes
 *    the socket, which reconnects);
 *  - estimates the server clock: every server frame carries `timestamp` (server epoch ms). One sample is
 *    `timestamp - Date.now()` at receipt; delivery delays and replayed events (which keep their original
 *    timestamp) only make a sample smaller than the true offset, so the estimate is the largest sample of
 *    the last minute.
 * Vanilla JS, no dependencies; exposes window.QRGateLive.
 */
"use strict";
(function () {
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const PING_EVERY_MS = 20000;
  const PONG_DEADLINE_MS = 8000;
  const SKEW_WINDOW_MS = 60000;

  function socketURL() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/ws";
  }

  /** Reads `name` from the query string, or null. */
  function param(name) {
    return new URLSearchParams(location.search).get(name);
  }

  /** The access key: `?token=` (then removed from the address bar and kept for this tab) or the tab's stored one. */
  function takeToken() {
    const url = new URL(location.href);
    const fromURL = url.searchParams.get("token");
    if (fromURL) {
      storeToken(fromURL);
      url.searchParams.delete("token");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
      return fromURL;
    }
    try { return sessionStorage.getItem("qrgate.token") || null; } catch (e) { return null; }
  }

  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem("qrgate.token", token);
      else sessionStorage.removeItem("qrgate.token");
    } catch (e) { /* storage may be disabled: the key then lives only in memory */ }
  }

  /**
   * new Connection({onOpen(hello), onMessage(msg), onStatus(status, detail)})
   * status: "connecting" (first attempt), "online" (hello received), "reconnecting" (lost, retrying).
   * detail on "reconnecting": {closeCode, retryInMs}.
   */
  class Connection {
    constructor(handlers) {
      this.handlers = handlers;
      this.ws = null;
      this.status = "connecting";
      this.failures = 0;
      this.retryTimer = null;
      this.pingTimer = null;
      this.pongTimer = null;
      this.samples = [];
      this.everOnline = false;
      this.lastCloseCode = null;
      window.addEventListener("online", () => this.retryNow());
      document.addEventListener("visibilitychange", () => { if (!document.hidden) this.retryNow(); });
    }

    start() { this.open(); }

    open() {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      let ws;
      try {
        ws = new WebSocket(socketURL(), "qrgate.v1");
      } catch (e) {
        this.scheduleRetry(null);
        return;
      }
      this.ws = ws;
      ws.addEventListener("message", (ev) => {
        if (this.ws !== ws) return;
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        this.alive();
        if (typeof msg.timestamp === "number") this.sample(msg.timestamp);
        if (msg.action === "hello") {
          this.failures = 0;
          this.everOnline = true;
          this.setStatus("online");
          this.handlers.onOpen && this.handlers.onOpen(msg);
          return;
        }
        if (msg.action === "pong") return;
        this.handlers.onMessage && this.handlers.onMessage(msg);
      });
      ws.addEventListener("close", (ev) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.stopHeartbeat();
        this.lastCloseCode = ev.code;
        this.scheduleRetry(ev.code);
      });
      // "error" is always followed by "close"; nothing to do here.
    }

    scheduleRetry(code) {
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, this.failures));
      const delay = Math.round(base / 2 + Math.random() * base / 2);
      this.failures += 1;
      this.setStatus(this.everOnline ? "reconnecting" : "connecting", { closeCode: code, retryInMs: delay });
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.open(), delay);
    }

    /** Skips the wait when the browser says the network is back or the tab is visible again. */
    retryNow() {
      if (this.ws || !this.retryTimer) return;
      this.failures = 0;
      this.open();
    }

    setStatus(status, detail) {
      this.status = status;
      this.handlers.onStatus && this.handlers.onStatus(status, detail || {});
    }

    send(obj) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.status !== "online") return false;
      this.ws.send(JSON.stringify(obj));
      return true;
    }

    /** Any frame proves the link is alive: re-arm the heartbeat. */
    alive() {
      clearTimeout(this.pongTimer);
      this.pongTimer = null;
      clearTimeout(this.pingTimer);
      this.pingTimer = setTimeout(() => this.ping(), PING_EVERY_MS);
    }

    ping() {
      if (!this.send({ op: "ping" })) return;
      this.pongTimer = setTimeout(() => {
        // Nothing came back: the link is dead even if the browser has not noticed. Closing fires "close",
        // which schedules a reconnect.
        if (this.ws) this.ws.close(4000, "no answer to ping");
      }, PONG_DEADLINE_MS);
    }

    stopHeartbeat() {
      clearTimeout(this.pingTimer);
      clearTimeout(this.pongTimer);
      this.pingTimer = this.pongTimer = null;
    }

    sample(serverTimestamp) {
      const now = Date.now();
      this.samples.push({ at: now, skew: serverTimestamp - now });
      while (this.samples.length > 1 && now - this.samples[0].at > SKEW_WINDOW_MS) this.samples.shift();
      if (this.samples.length > 240) this.samples.splice(0, this.samples.length - 240);
    }

    /** Server clock minus local clock, in ms (0 before the first frame). */
    skew() {
      let best = null;
      for (const s of this.samples) if (best === null || s.skew > best) best = s.skew;
      return best === null ? 0 : best;
    }

    /** Now, on the server's clock (epoch ms). */
    serverNow() { return Date.now() + this.skew(); }
  }

  /** "MM:SS" for a number of whole seconds (minutes may exceed 59). */
  function mmss(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const m = Math.floor(s / 60);
    return String(m).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
  }

  /** A short local time ("17:31:42") for an ISO date. */
  function clockTime(iso) {
    const d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  /** Epoch ms of an ISO date, or null. */
  function ms(iso) {
    if (!iso) return null;
    const t = Date.parse(iso);
    return isNaN(t) ? null : t;
  }

  /** Wires an "enter an access key" form: the button opens it, a submitted key is stored for this tab
   *  and handed to `accept`. Shared by the link page and the dashboard. */
  function onTokenForm(form, input, openButton, showForm, accept) {
    openButton.addEventListener("click", () => { showForm(""); input.focus(); });
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      storeToken(token);
      input.value = "";
      form.hidden = true;
      accept(token);
    });
  }

  window.QRGateLive = { Connection, param, takeToken, storeToken, onTokenForm, mmss, clockTime, ms };
})();
