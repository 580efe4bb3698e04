/* QRGate link page: /?session=ID[&token=KEY] (no session: "demo").
 *
 * Subscribes to one session over the gateway's WebSocket (docs/PROTOCOL.md) and shows its QR code, its
 * status in words, the attempt counter and a countdown, live. Everything the page shows is derived from one
 * state object by render(); messages only change that state.
 *
 * Attempt counter (a decision): the server counts regenerations, attempt 0 being the first code of a round
 * and `maxAttempts` the number of regenerations allowed. The page shows "First code" for attempt 0 and
 * "Attempt k of N" (k = attempt, N = maxAttempts) afterwards, the same numbers as the server's
 * "Generating a new QR code (attempt k/N)".
 *
 * Validity: the QR is shown as valid only while the page is in sync with the gateway and its countdown
 * (qrExpiresAt against the local clock corrected by the server's timestamps) is above zero. Offline, the
 * code is dimmed and covered by "Reconnecting…"; after a reconnect the page resumes with `since` and a
 * snapshot always replaces what it held. A countdown announcing another expiry than the QR held means the
 * page missed something: it asks for a fresh snapshot.
 */
"use strict";
(function () {
  const L = window.QRGateLive;
  const URGENT_SECONDS = 15;
  const $ = (id) => document.getElementById(id);

  const el = {
    app: $("app"), conn: $("conn"), connText: $("conn-text"), sessionId: $("session-id"), roleBadge: $("role-badge"),
    qrBox: $("qr-box"), qr: $("qr"), placeholder: $("placeholder"), linked: $("linked"), linkedAt: $("linked-at"),
    overlay: $("overlay"), overlayIcon: $("overlay-icon"), overlayTitle: $("overlay-title"), overlayDetail: $("overlay-detail"),
    status: $("status"), attempt: $("attempt"), countdown: $("countdown"), countdownSR: $("countdown-sr"),
    warning: $("warning"), message: $("message"), refresh: $("refresh"), hint: $("hint"),
    tokenForm: $("token-form"), tokenReason: $("token-reason"), tokenInput: $("token-input"),
    sessionForm: $("session-form"), sessionReason: $("session-reason"), sessionInput: $("session-input"),
    steps: $("steps"), otherSession: $("other-session"), enterKey: $("enter-key"),
  };

  const SESSION_ID = /^[A-Za-z0-9._:@-]{1,128}$/;
  const S = {
    session: L.param("session") || "demo",
    token: L.takeToken(),
    role: null,
    conn: "connecting",
    subscribed: false,   // `subscribed` received on the current socket
    verifying: false,    // subscribed, but what we hold is not yet confirmed current (see confirm())
    verifyTimer: null,
    everSynced: false,
    lastSeq: null,
    forceSnapshot: false,
    lastResyncAt: 0,
    status: null,        // the server's: idle, pending, connected, failed, disconnected
    qrCode: null,
    qrSvg: null,
    qrExpiresAt: null,   // epoch ms, server clock
    qrGone: false,       // the gateway expired or dropped this code; the image is kept, dimmed, as a backdrop
    attempt: 0,
    maxAttempts: null,
    regenerating: null,  // {attempt, message, requested}
    connectedAt: null,
    failure: null,
    upstreamWarning: null,
    notice: null,
    fatal: null,         // {title, reason}: nothing to subscribe to
    locked: null,        // the gateway wants a credential for this session: {reason}
    tokenRefusal: null,  // why the last key or link was refused
    refreshBusy: false,
    refreshBusyTimer: null,
    retryUntil: 0,       // local ms until which a refresh is rate-limited
    announced: null,
  };

  const live = new L.Connection({
    onOpen(hello) {
      S.role = hello.role;
      S.subscribed = false;
      subscribe();
      render();
    },
    onMessage: handle,
    onStatus(status, detail) {
      if (status !== "online") console.debug("qrgate connection:", status, "close code:", detail.closeCode, "retry in ms:", detail.retryInMs);
      S.conn = status;
      if (status !== "online") {
        S.subscribed = false;
        S.refreshBusy = false;
        // "going away" (1001): the gateway process is ending, its sequence numbers die with it.
        if (detail.closeCode === 1001) S.forceSnapshot = true;
      }
      render();
    },
  });

  function subscribe() {
    if (S.fatal || S.locked) return;
    // Only the SVG: the page draws nothing else (a third of the standard frame's bytes).
    const msg = { op: "subscribe", session: S.session, formats: ["svg"] };
    if (S.token) msg.token = S.token;
    if (S.lastSeq !== null && !S.forceSnapshot) msg.since = S.lastSeq;
    S.forceSnapshot = false;
    live.send(msg);
  }

  /** Asks for a snapshot (subscribing again answers one); at most once a second. */
  function resync() {
    const now = Date.now();
    if (now - S.lastResyncAt < 1000) return;
    console.debug("qrgate: asking for a snapshot (out of step)");
    S.lastResyncAt = now;
    S.forceSnapshot = true;
    subscribe();
  }

  /**
   * After `subscribed` the gateway sends a snapshot, or (with `since`) the missed events, or nothing when
   * nothing was missed. Until one of them confirms what the page holds, the page does not claim a live QR;
   * with nothing confirming it within 1.5 s (a pending session sends a countdown every second), it asks for
   * a snapshot.
   */
  function confirm() {
    S.verifying = false;
    S.everSynced = true;
    clearTimeout(S.verifyTimer);
  }

  function handle(msg) {
    if (msg.sessionId !== undefined && msg.sessionId !== S.session) return;
    if (msg.action === "error" && msg.code) return handleRefusal(msg);
    if (typeof msg.seq === "number") S.lastSeq = msg.seq;
    switch (msg.action) {
      case "subscribed":
        S.role = msg.role || S.role;
        S.subscribed = true;
        S.verifying = true;
        clearTimeout(S.verifyTimer);
        S.verifyTimer = setTimeout(() => { if (S.verifying) resync(); }, 1500);
        break;
      case "snapshot":
        confirm();
        applySnapshot(msg);
        break;
      case "qr_generated":
        confirm();
        S.status = "pending";
        setQR(msg.qrSvg);
        S.qrExpiresAt = L.ms(msg.qrExpiresAt);
        S.qrGone = false;
        S.attempt = msg.attempt;
        S.maxAttempts = msg.maxAttempts;
        S.regenerating = null;
        S.failure = null;
        S.upstreamWarning = null;
        if (S.notice && S.notice.kind === "refresh") S.notice = null;
        break;
      case "countdown":
        if (!S.qrCode || S.qrGone || S.qrExpiresAt !== L.ms(msg.qrExpiresAt)) resync();
        else confirm();
        break;
      case "qr_expired":
        confirm();
        S.qrGone = true;
        S.attempt = msg.attempt;
        S.maxAttempts = msg.maxAttempts;
        break;
      case "qr_regenerating":
        confirm();
        S.status = "pending";
        S.qrGone = true;
        S.attempt = msg.attempt;
        S.maxAttempts = msg.maxAttempts;
        S.regenerating = { attempt: msg.attempt, message: msg.message, requested: false };
        break;
      case "connected":
        if (typeof msg.seq !== "number") {
          // The answer to a refresh of a session that is already linked (sent to us only).
          S.refreshBusy = false;
          notice("info", msg.message || "Session already connected. No QR needed.");
          if (S.status !== "connected") resync();
          break;
        }
        confirm();
        S.status = "connected";
        S.connectedAt = msg.connectedAt || new Date().toISOString();
        clearQR();
        S.failure = null;
        S.upstreamWarning = null;
        S.notice = null;
        break;
      case "error":
        confirm();
        S.status = "failed";
        S.failure = msg.error;
        S.qrGone = true;
        S.regenerating = null;
        if (typeof msg.maxAttempts === "number") { S.maxAttempts = msg.maxAttempts; S.attempt = msg.maxAttempts; }
        break;
      case "upstream_error":
        S.upstreamWarning = msg.error;
        break;
      case "disconnected":
        confirm();
        S.status = "disconnected";
        clearQR();
        S.connectedAt = null;
        break;
      case "refreshing":
        S.refreshBusy = false;
        S.status = "pending";
        S.qrGone = true;
        S.failure = null;
        S.attempt = 0;
        S.regenerating = { attempt: 0, message: "Generating a new QR code…", requested: true };
        notice("refresh", "New QR code requested.", 15000);
        break;
      default:
        return;
    }
    render();
  }

  function applySnapshot(m) {
    S.status = m.status;
    setQR(m.qrSvg);
    S.qrExpiresAt = L.ms(m.qrExpiresAt);
    S.qrGone = false;
    S.attempt = m.attempt || 0;
    S.maxAttempts = m.maxAttempts;
    S.connectedAt = m.connectedAt;
    S.failure = m.status === "failed" ? (m.lastError || "QR code generation failed.") : null;
    S.regenerating = m.status === "pending" && !m.qrSvg && S.attempt > 0
      ? { attempt: S.attempt, message: "Generating a new QR code (attempt " + S.attempt + "/" + S.maxAttempts + ")", requested: false }
      : null;
    // A snapshot's lastError may be old news while a QR is shown; it explains a missing code, though.
    S.upstreamWarning = m.status === "pending" && !m.qrSvg && m.lastError ? m.lastError : null;
  }

  function handleRefusal(msg) {
    switch (msg.code) {
      case "rate_limited":
        S.refreshBusy = false;
        S.retryUntil = Date.now() + Math.max(1, msg.retryAfter || 1) * 1000;
        notice("info", "A new code was requested moments ago.", Math.max(1, msg.retryAfter || 1) * 1000);
        break;
      case "unauthorized":
        if (S.token) {
          // The key or link was refused (unknown, expired…): forget it and try without one, which a gateway in
          // demo mode allows; if that is refused too, the page asks for a key.
          S.token = null;
          L.storeToken(null);
          S.tokenRefusal = msg.reason || "key not recognised";
          showTokenForm(tokenReason(S.tokenRefusal) + " You can keep watching without it, or enter another key.");
          S.forceSnapshot = true;
          subscribe();
        } else {
          // Nothing to watch without a credential: stop asking until one is typed in.
          S.locked = { reason: msg.reason || "" };
          clearQR();
          S.status = null;
          showTokenForm(S.tokenRefusal
            ? tokenReason(S.tokenRefusal) + " Enter an access key, or ask for a new link."
            : "This session needs an access key, or a link that carries one.");
        }
        break;
      case "forbidden":
        S.refreshBusy = false;
        showTokenForm("Requesting a new QR code needs an admin key.");
        break;
      case "unknown_session":
      case "invalid_message":
        if (msg.sessionId === S.session || msg.code === "unknown_session") {
          S.fatal = { title: "Unknown session", reason: "There is no session “" + S.session + "” on this gateway." };
          showSessionForm(S.fatal.reason + " Enter the id you were given.");
        } else {
          notice("info", msg.reason);
        }
        break;
      default:
        S.refreshBusy = false;
        notice("info", msg.reason || msg.code);
    }
    render();
  }

  /** A short-lived line under the button. */
  function notice(kind, text, ms) {
    S.notice = { kind, text, until: Date.now() + (ms || 8000) };
  }

  function tokenReason(reason) {
    if (/expired/.test(reason)) return "Your access link has expired.";
    return "That access key was not recognised.";
  }

  /** Shows a QR code from its SVG (a data URL: the CSP allows images from data:, never inline code). */
  function setQR(svg) {
    const src = svg ? "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg) : null;
    if (src !== S.qrCode) {
      S.qrCode = src;
      S.qrSvg = svg || null;
      if (src) el.qr.src = src;
      else el.qr.removeAttribute("src");
      sizeQR();
    }
  }

  function clearQR() {
    setQR(null);
    S.qrExpiresAt = null;
    S.qrGone = false;
    S.regenerating = null;
  }

  /** Whole seconds left on the current code, on the server's clock (0 when none). */
  function remaining() {
    if (!S.qrExpiresAt) return 0;
    return Math.max(0, Math.ceil((S.qrExpiresAt - live.serverNow()) / 1000));
  }

  /** What the page is showing, from the state: one name per screen. */
  function view() {
    if (S.fatal) return "unknown";
    if (S.locked) return "locked";
    if (!S.everSynced || S.status === null) return S.conn === "reconnecting" ? "offline" : "connecting";
    if (S.conn !== "online" || !S.subscribed || S.verifying) return "offline";
    switch (S.status) {
      case "connected": return "linked";
      case "failed": return "failed";
      case "disconnected": return "disconnected";
      case "idle": return "idle";
    }
    if (S.regenerating) return "regenerating";
    if (S.qrCode && !S.qrGone) return remaining() > 0 ? "live" : "expired";
    if (S.qrGone) return "expired";
    return "waiting";
  }

  /** Sizes the image so each QR module is a whole number of device pixels when that fills most of the box. */
  function sizeQR() {
    const box = el.qrBox.clientWidth;
    const dpr = window.devicePixelRatio || 1;
    const m = S.qrSvg && /viewBox="0 0 (\d+) \d+"/.exec(S.qrSvg);
    let px = box;
    if (m && box > 0) {
      const modules = parseInt(m[1], 10);
      const scale = Math.floor((box * dpr) / modules);
      const crisp = (scale * modules) / dpr;
      if (scale >= 1 && crisp >= box * 0.85) px = crisp;
    }
    el.qr.style.width = px + "px";
    el.qr.style.height = px + "px";
  }

  const ATTEMPT_VIEWS = new Set(["live", "expired", "regenerating", "waiting", "failed", "offline"]);
  const EXPIRED_VIEWS = new Set(["expired", "failed"]);

  function attemptText() {
    if (S.maxAttempts === null || S.maxAttempts === undefined) return "";
    const k = S.regenerating ? S.regenerating.attempt : S.attempt;
    return k > 0 ? "Attempt " + k + " of " + S.maxAttempts : "First code";
  }

  function seconds(n) {
    const m = Math.floor(n / 60), s = n % 60;
    const parts = [];
    if (m) parts.push(m + (m === 1 ? " minute" : " minutes"));
    if (s || !m) parts.push(s + (s === 1 ? " second" : " seconds"));
    return parts.join(" ");
  }

  function render() {
    const v = view();
    const left = remaining();
    const admin = S.role === "admin";
    const expiredBackdrop = v === "expired" || (v === "regenerating" && !S.regenerating.requested) || v === "failed";

    if (v !== S.lastView) {
      // One line per screen change, for whoever debugs a page (and the e2e tests' failure reports).
      console.debug("qrgate view:", v, "status:", S.status, "conn:", S.conn, "seq:", S.lastSeq);
      S.lastView = v;
    }
    el.app.dataset.state = v;
    document.body.dataset.state = v;
    setText(el.sessionId, S.session);
    el.roleBadge.hidden = !admin;

    // Connection pill.
    el.conn.className = "conn is-" + S.conn;
    setText(el.connText, S.conn === "online" ? "Live" : S.conn === "reconnecting" ? "Reconnecting…" : "Connecting…");

    // The QR box: image, placeholder, linked panel, overlay. Its size never changes.
    const showImage = !!S.qrCode && ["live", "expired", "regenerating", "offline", "failed"].includes(v);
    el.qr.hidden = !showImage;
    el.qr.alt = v === "live" ? "QR code to scan with WhatsApp" : "Expired or not live QR code";
    el.qr.classList.toggle("is-dim", showImage && v !== "live");
    el.placeholder.hidden = showImage || ["linked", "unknown", "locked", "disconnected", "idle", "failed"].includes(v);
    el.linked.hidden = v !== "linked";
    if (v === "linked") setText(el.linkedAt, S.connectedAt ? "at " + L.clockTime(S.connectedAt) : "");

    let ov = null; // [icon, title, detail]
    switch (v) {
      case "offline": ov = ["spin", "Reconnecting…", "This code is not live until the page is back in touch with the gateway."]; break;
      case "expired": ov = ["clock", "QR code expired", S.qrGone && S.attempt >= S.maxAttempts ? "That was the last attempt." : "A new code is on its way."]; break;
      case "regenerating":
        ov = S.regenerating.requested ? ["spin", "Generating a new QR code…", ""] : ["spin", "QR code expired", "A new one is being generated…"];
        break;
      case "waiting": ov = ["spin", "Waiting for the QR code…", ""]; break;
      case "failed": ov = ["stop", "QR code expired", "No attempts left"]; break;
      case "disconnected": ov = ["stop", "Disconnected", "The phone unlinked this session."]; break;
      case "idle": ov = ["clock", "Not started", ""]; break;
      case "unknown": ov = ["stop", "Unknown session", ""]; break;
      case "locked": ov = ["lock", "Access key needed", "Enter it below to see this session."]; break;
    }
    el.overlay.hidden = !ov;
    el.qrBox.classList.toggle("has-overlay", !!ov);
    el.qrBox.classList.toggle("is-expired", expiredBackdrop);
    if (ov) {
      el.overlayIcon.className = "overlay-icon icon-" + ov[0];
      setText(el.overlayTitle, ov[1]);
      setText(el.overlayDetail, ov[2]);
      el.overlayDetail.hidden = !ov[2];
    }

    // Status in words.
    const words = {
      connecting: "Connecting to the gateway…",
      offline: "Reconnecting…",
      waiting: "Waiting for the first QR code…",
      live: "Scan this code with WhatsApp",
      expired: "QR code expired",
      regenerating: S.regenerating ? S.regenerating.message : "",
      failed: "Validation failed",
      linked: "WhatsApp linked successfully",
      disconnected: "Disconnected",
      idle: "This session has not started yet",
      unknown: "Unknown session",
      locked: "Access key needed",
    };
    setText(el.status, words[v]);
    el.status.className = "status status-" + v;

    // Attempt counter and countdown.
    setText(el.attempt, ATTEMPT_VIEWS.has(v) ? attemptText() : "");
    let cd = "";
    if (v === "live") cd = L.mmss(left);
    else if (EXPIRED_VIEWS.has(v) || v === "regenerating") cd = "00:00";
    else if (v === "offline" || v === "waiting" || v === "connecting") cd = "--:--";
    setText(el.countdown, cd);
    el.countdown.classList.toggle("urgent", (v === "live" && left <= URGENT_SECONDS) || EXPIRED_VIEWS.has(v) || (v === "regenerating" && !S.regenerating.requested));
    el.countdown.classList.toggle("stale", v === "offline" || v === "waiting" || v === "connecting");
    el.countdown.classList.toggle("is-blank", cd === "");
    announce(v, left);

    // Notices.
    const warn = S.upstreamWarning && ["live", "expired", "regenerating", "waiting"].includes(v)
      ? (S.qrCode && v === "live"
        ? "Trouble reaching WhatsApp (" + S.upstreamWarning + "). The code shown stays valid until its countdown ends."
        : "Trouble reaching WhatsApp (" + S.upstreamWarning + "). Retrying…")
      : "";
    el.warning.hidden = !warn;
    setText(el.warning, warn);
    let message = "";
    if (v === "failed") message = S.failure || "QR code generation failed.";
    else if (v === "disconnected") message = admin ? "Request a new QR code to link a phone again." : "Ask whoever sent you this link for a new one.";
    else if (v === "unknown") message = S.fatal.reason;
    el.message.hidden = !message;
    setText(el.message, message);
    if (S.notice && Date.now() > S.notice.until) S.notice = null;
    setText(el.hint, S.notice ? S.notice.text : "");

    renderButton(v, admin, expiredBackdrop);
    el.steps.classList.toggle("is-muted", v !== "live");
    el.steps.hidden = v === "linked" || v === "unknown" || v === "locked";
  }

  function renderButton(v, admin, expiredBackdrop) {
    const b = el.refresh;
    const wait = Math.ceil((S.retryUntil - Date.now()) / 1000);
    const visible = v !== "unknown" && v !== "locked" && (admin || ["expired", "regenerating", "failed", "disconnected"].includes(v));
    let label = v === "failed" ? "Start again" : "Request new QR code";
    if (wait > 0 && admin) label = "Try again in " + wait + "s";
    else if (S.refreshBusy) label = "Requesting…";
    setText(b, label);
    b.classList.toggle("is-hidden", !visible);
    b.disabled = !visible || S.conn !== "online" || S.refreshBusy || (admin && wait > 0);
    b.classList.toggle("pulse", visible && expiredBackdrop && !b.disabled);
    b.classList.toggle("btn-danger", v === "failed");
  }

  /** The polite live region says something only when the countdown crosses a threshold. */
  function announce(v, left) {
    let key = v, text = "";
    if (v === "live") {
      key = (left <= URGENT_SECONDS ? "urgent:" : "live:") + S.qrExpiresAt;
      text = left <= URGENT_SECONDS ? seconds(left) + " left to scan this code" : "New QR code, valid for " + seconds(left);
    } else if (v === "expired" || (v === "regenerating" && !S.regenerating.requested)) {
      key = "expired:" + S.qrExpiresAt;
      text = "QR code expired";
    }
    if (key !== S.announced) {
      S.announced = key;
      setText(el.countdownSR, text);
    }
  }

  function onRefreshClick() {
    const v = view();
    if (S.role === "admin") {
      if (!live.send({ op: "refresh", session: S.session })) return;
      S.refreshBusy = true;
      S.notice = null;
      clearTimeout(S.refreshBusyTimer);
      S.refreshBusyTimer = setTimeout(() => { S.refreshBusy = false; render(); }, 10000);
    } else {
      resync();
      notice("info", v === "failed" || v === "disconnected"
        ? "This session has stopped. Only an administrator can start a new validation: ask whoever sent you this link, or enter an admin key below."
        : "New codes are generated automatically and this page shows the latest one. Only an administrator can force a new code.",
      20000);
      if (v === "failed" || v === "disconnected") showTokenForm("Enter an admin key to start again.");
    }
    render();
  }

  function showTokenForm(reason) {
    el.sessionForm.hidden = true;
    el.tokenForm.hidden = false;
    setText(el.tokenReason, reason || "");
  }

  function showSessionForm(reason) {
    el.tokenForm.hidden = true;
    el.sessionForm.hidden = false;
    setText(el.sessionReason, reason || "");
    el.sessionInput.value = S.fatal ? "" : S.session;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  el.refresh.addEventListener("click", onRefreshClick);
  el.otherSession.addEventListener("click", () => { showSessionForm(""); el.sessionInput.focus(); });
  L.onTokenForm(el.tokenForm, el.tokenInput, el.enterKey, showTokenForm, (token) => {
    S.token = token;
    S.notice = null;
    S.fatal = null;
    S.locked = null;
    S.forceSnapshot = true;
    subscribe();
    render();
  });
  el.sessionForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = el.sessionInput.value.trim();
    if (!id) return;
    location.assign("/?session=" + encodeURIComponent(id));
  });
  window.addEventListener("resize", sizeQR);
  if (!SESSION_ID.test(S.session)) {
    S.fatal = { title: "Unknown session", reason: "“" + S.session + "” is not a valid session id." };
    showSessionForm(S.fatal.reason + " Enter the id you were given.");
  }
  el.qr.addEventListener("load", sizeQR);

  setInterval(render, 250);
  render();
  live.start();
})();
