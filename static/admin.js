/* QRGate dashboard: /admin[?token=KEY].
 *
 * Subscribes to "*" (a service or admin key; everyone in demo mode): one snapshot per session, then every
 * session's events. Lists each session with its status, the age of its QR and its last error, live, with a
 * link to its page and (admins) a refresh button that shows the rate limit's wait.
 */
"use strict";
(function () {
  const L = window.QRGateLive;
  const $ = (id) => document.getElementById(id);
  const el = {
    dash: $("dash"), conn: $("conn"), connText: $("conn-text"), roleBadge: $("role-badge"), summary: $("summary"),
    table: $("sessions"), rows: $("rows"), empty: $("empty"), hint: $("hint"),
    tokenForm: $("token-form"), tokenReason: $("token-reason"), tokenInput: $("token-input"), enterKey: $("enter-key"),
  };

  const S = {
    token: L.takeToken(),
    role: null,
    conn: "connecting",
    subscribed: false,
    refused: null,
    sessions: new Map(), // id → row model
    seen: null,          // ids confirmed by the snapshots after the last `subscribed`
    sweepTimer: null,
    hint: "",
  };

  const live = new L.Connection({
    onOpen(hello) {
      S.role = hello.role;
      S.subscribed = false;
      subscribe();
      render();
    },
    onMessage: handle,
    onStatus(status) {
      S.conn = status;
      if (status !== "online") {
        S.subscribed = false;
        for (const s of S.sessions.values()) s.busy = false;
      }
      render();
    },
  });

  function subscribe() {
    // The raw code is all the table needs to know a QR is there (a few hundred bytes instead of ~12 KB).
    const msg = { op: "subscribe", session: "*", formats: ["code"] };
    if (S.token) msg.token = S.token;
    live.send(msg);
  }

  function row(id) {
    let s = S.sessions.get(id);
    if (!s) {
      s = { id, status: "idle", hasQR: false, qrExpiresAt: null, qrUpdatedAt: null, attempt: 0, maxAttempts: null,
            lastError: null, connectedAt: null, phase: null, note: "", retryUntil: 0, busy: false, dom: null };
      S.sessions.set(id, s);
    }
    return s;
  }

  function handle(msg) {
    if (msg.action === "error" && msg.code) return refusal(msg);
    if (msg.action === "subscribed") {
      if (msg.sessionId !== "*") return;
      S.role = msg.role || S.role;
      S.subscribed = true;
      S.refused = null;
      el.tokenForm.hidden = true;
      // Snapshots follow at once; rows they do not mention are gone.
      S.seen = new Set();
      clearTimeout(S.sweepTimer);
      S.sweepTimer = setTimeout(() => {
        for (const id of [...S.sessions.keys()]) if (!S.seen.has(id)) drop(id);
        S.seen = null;
        render();
      }, 1500);
      return render();
    }
    const id = msg.sessionId;
    if (!id || id === "*") return;
    const s = row(id);
    switch (msg.action) {
      case "snapshot":
        if (S.seen) S.seen.add(id);
        s.status = msg.status;
        s.hasQR = !!msg.qrText;
        s.qrExpiresAt = L.ms(msg.qrExpiresAt);
        s.qrUpdatedAt = L.ms(msg.qrUpdatedAt);
        s.attempt = msg.attempt || 0;
        s.maxAttempts = msg.maxAttempts;
        s.lastError = msg.lastError || null;
        s.connectedAt = msg.connectedAt;
        s.phase = msg.status === "pending" && !msg.qrText ? (s.attempt > 0 ? "regenerating" : "waiting") : null;
        break;
      case "qr_generated":
        s.status = "pending";
        s.hasQR = true;
        s.qrExpiresAt = L.ms(msg.qrExpiresAt);
        s.qrUpdatedAt = msg.timestamp;
        s.attempt = msg.attempt;
        s.maxAttempts = msg.maxAttempts;
        s.phase = null;
        break;
      case "countdown":
        s.qrExpiresAt = L.ms(msg.qrExpiresAt);
        break;
      case "qr_expired":
        s.hasQR = false;
        s.phase = "expired";
        s.attempt = msg.attempt;
        break;
      case "qr_regenerating":
        s.status = "pending";
        s.hasQR = false;
        s.phase = "regenerating";
        s.attempt = msg.attempt;
        s.maxAttempts = msg.maxAttempts;
        break;
      case "connected":
        s.busy = false;
        if (typeof msg.seq !== "number") { s.note = "Already linked: no QR needed."; break; }
        s.status = "connected";
        s.connectedAt = msg.connectedAt;
        s.hasQR = false;
        s.phase = null;
        s.lastError = null;
        break;
      case "error":
        s.status = "failed";
        s.hasQR = false;
        s.phase = null;
        s.lastError = msg.error;
        if (typeof msg.maxAttempts === "number") s.attempt = s.maxAttempts = msg.maxAttempts;
        break;
      case "upstream_error":
        s.lastError = msg.error;
        break;
      case "disconnected":
        s.status = "disconnected";
        s.hasQR = false;
        s.phase = null;
        break;
      case "refreshing":
        s.busy = false;
        s.status = "pending";
        s.hasQR = false;
        s.phase = "waiting";
        s.attempt = 0;
        s.note = "Refresh requested.";
        break;
      default:
        return;
    }
    render();
  }

  function refusal(msg) {
    const s = msg.sessionId && msg.sessionId !== "*" ? S.sessions.get(msg.sessionId) : null;
    switch (msg.code) {
      case "rate_limited":
        if (s) {
          s.busy = false;
          s.retryUntil = Date.now() + Math.max(1, msg.retryAfter || 1) * 1000;
          s.note = "Refreshed moments ago.";
        }
        break;
      case "unauthorized":
        S.token = null;
        L.storeToken(null);
        S.refused = "That access key was not recognised.";
        showTokenForm(S.refused + " The dashboard needs a service or admin key.");
        break;
      case "forbidden":
        if (s) {
          s.busy = false;
          s.note = "Needs an admin key.";
          showTokenForm("Refreshing a session needs an admin key.");
        } else {
          S.refused = "The dashboard needs a service or admin key.";
          showTokenForm(S.refused);
        }
        break;
      default:
        if (s) { s.busy = false; s.note = msg.reason || msg.code; } else S.hint = msg.reason || msg.code;
    }
    render();
  }

  function drop(id) {
    const s = S.sessions.get(id);
    if (s && s.dom) s.dom.tr.remove();
    S.sessions.delete(id);
  }

  function showTokenForm(reason) {
    el.tokenForm.hidden = false;
    el.tokenReason.textContent = reason || "";
  }

  function age(ms) {
    const t = Math.max(0, Math.floor(ms / 1000));
    if (t < 60) return t + " s";
    if (t < 3600) return Math.floor(t / 60) + " min " + String(t % 60).padStart(2, "0") + " s";
    return Math.floor(t / 3600) + " h " + String(Math.floor((t % 3600) / 60)).padStart(2, "0") + " min";
  }

  function attemptText(s) {
    if (s.maxAttempts === null || s.maxAttempts === undefined) return "";
    return s.attempt > 0 ? "Attempt " + s.attempt + " of " + s.maxAttempts : "First code";
  }

  /** [pill class, pill text, detail line] for a session. */
  function describe(s, now) {
    switch (s.status) {
      case "connected": return ["connected", "Linked", s.connectedAt ? "since " + L.clockTime(s.connectedAt) : ""];
      case "failed": return ["failed", "Failed", s.maxAttempts ? "after " + s.maxAttempts + " attempts" : ""];
      case "disconnected": return ["disconnected", "Disconnected", "the phone unlinked"];
      case "idle": return ["idle", "Idle", "not started"];
    }
    if (s.phase === "expired") return ["expiring", "Expired", attemptText(s)];
    if (s.phase === "regenerating") return ["regenerating", "Regenerating", attemptText(s)];
    if (!s.hasQR) return ["pending", "Pending", "waiting for a QR code"];
    const left = s.qrExpiresAt ? Math.max(0, Math.ceil((s.qrExpiresAt - now) / 1000)) : 0;
    return [left <= 15 ? "expiring" : "pending", "Pending", attemptText(s) + " · expires in " + L.mmss(left)];
  }

  function build(s) {
    const tr = document.createElement("tr");
    tr.dataset.session = s.id;
    const cell = (cls, label) => {
      const td = document.createElement("td");
      td.className = cls;
      td.dataset.label = label;
      tr.appendChild(td);
      return td;
    };
    const cSession = cell("cell-session", "Session");
    const link = document.createElement("a");
    link.className = "session-name";
    link.href = "/?session=" + encodeURIComponent(s.id);
    link.textContent = s.id;
    cSession.appendChild(link);

    const cStatus = cell("cell-status", "Status");
    const wrap = document.createElement("span");
    const pill = document.createElement("span");
    const sub = document.createElement("span");
    sub.className = "sub";
    wrap.append(pill, sub);
    cStatus.appendChild(wrap);

    const cAge = cell("cell-age num", "QR age");
    const cError = cell("cell-error", "Last error");
    const err = document.createElement("span");
    cError.appendChild(err);

    const cActions = cell("cell-actions", "");
    const actions = document.createElement("div");
    actions.className = "row-actions";
    const open = document.createElement("a");
    open.className = "btn btn-small open";
    open.href = link.href;
    open.textContent = "Open";
    open.setAttribute("aria-label", "Open " + s.id);
    const refresh = document.createElement("button");
    refresh.type = "button";
    refresh.className = "btn btn-small refresh";
    refresh.addEventListener("click", () => onRefresh(s.id));
    actions.append(open, refresh);
    const note = document.createElement("span");
    note.className = "row-note";
    note.setAttribute("aria-live", "polite");
    cActions.append(actions, note);
    s.dom = { tr, pill, sub, age: cAge, err, refresh, note };
    return tr;
  }

  function onRefresh(id) {
    const s = S.sessions.get(id);
    if (!s || !live.send({ op: "refresh", session: id })) return;
    s.busy = true;
    s.note = "";
    setTimeout(() => { if (s.busy) { s.busy = false; render(); } }, 10000);
    render();
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function render() {
    const now = live.serverNow();
    const online = S.conn === "online" && S.subscribed;
    const admin = S.role === "admin";
    el.dash.dataset.state = S.refused ? "refused" : online ? "live" : S.conn;
    el.conn.className = "conn is-" + S.conn;
    setText(el.connText, S.conn === "online" ? "Live" : S.conn === "reconnecting" ? "Reconnecting…" : "Connecting…");
    el.roleBadge.hidden = !S.role || S.role === "browser";
    setText(el.roleBadge, S.role || "");
    el.table.classList.toggle("is-stale", !online);

    const ids = [...S.sessions.keys()].sort();
    let before = null;
    for (let i = ids.length - 1; i >= 0; i--) {
      const s = S.sessions.get(ids[i]);
      const tr = s.dom ? s.dom.tr : build(s);
      if (tr.nextSibling !== before || tr.parentNode !== el.rows) el.rows.insertBefore(tr, before);
      before = tr;
      const [kind, label, detail] = describe(s, now);
      s.dom.tr.dataset.status = s.status;
      s.dom.pill.className = "pill pill-" + kind;
      setText(s.dom.pill, label);
      setText(s.dom.sub, detail);
      setText(s.dom.age, s.qrUpdatedAt && s.status !== "connected" ? age(now - s.qrUpdatedAt) : "—");
      s.dom.err.className = "last-error" + (s.lastError ? "" : " none");
      setText(s.dom.err, s.lastError || "—");
      const wait = Math.ceil((s.retryUntil - Date.now()) / 1000);
      setText(s.dom.refresh, wait > 0 ? "Try again in " + wait + "s" : s.busy ? "Refreshing…" : "Refresh");
      s.dom.refresh.disabled = !admin || !online || s.busy || wait > 0;
      s.dom.refresh.title = admin ? "Request a new QR code for " + s.id : "Needs an admin key";
      s.dom.refresh.setAttribute("aria-label", (wait > 0 ? "Try again in " + wait + " seconds: refresh " : "Refresh ") + s.id);
      if (wait <= 0 && s.note === "Refreshed moments ago.") s.note = "";
      setText(s.dom.note, s.note);
    }

    const counts = {};
    for (const s of S.sessions.values()) counts[s.status] = (counts[s.status] || 0) + 1;
    const n = S.sessions.size;
    const parts = [n + (n === 1 ? " session" : " sessions")];
    if (counts.connected) parts.push(counts.connected + " linked");
    if (counts.pending) parts.push(counts.pending + " pending");
    if (counts.failed) parts.push(counts.failed + " failed");
    if (counts.disconnected) parts.push(counts.disconnected + " disconnected");
    setText(el.summary, S.subscribed || n ? parts.join(" · ") : "");
    el.empty.hidden = n > 0;
    setText(el.empty, S.refused ? S.refused : !S.subscribed ? (S.conn === "reconnecting" ? "Reconnecting…" : "Connecting to the gateway…") : "No sessions yet.");
    setText(el.hint, !online && n ? "Reconnecting… the list is not live." : S.hint);
  }

  L.onTokenForm(el.tokenForm, el.tokenInput, el.enterKey, showTokenForm, (token) => {
    S.token = token;
    S.refused = null;
    subscribe();
    render();
  });

  setInterval(render, 500);
  render();
  live.start();
})();
