/* QRGate dashboard: /admin[?token=KEY].
 *
 * Subscribes to "*" (a service or admin key; everyone in demo mode; a tenant's key sees its own sessions):
 * the snapshots arrive as `snapshots` batches paced by the gateway, then every session's events. Lists
 * the sessions with status, QR age and last error, live, with a link to each page and (admins) a refresh
 * button that shows the rate limit's wait.
 *
 * Built for thousands of sessions: events only update the model and mark the session dirty; one render
 * per animation frame touches the rows of the page on screen (50 at a time) and the counts. Status
 * filters, search by id and pages narrow what is drawn; the full list is re-sorted only when the set of
 * sessions, a status, the filter or the search changes.
 */
"use strict";
(function () {
  const L = window.QRGateLive;
  const $ = (id) => document.getElementById(id);
  const el = {
    dash: $("dash"), conn: $("conn"), connText: $("conn-text"), roleBadge: $("role-badge"), summary: $("summary"),
    table: $("sessions"), rows: $("rows"), empty: $("empty"), hint: $("hint"),
    tokenForm: $("token-form"), tokenReason: $("token-reason"), tokenInput: $("token-input"), enterKey: $("enter-key"),
    filters: $("filters"), search: $("search"), pager: $("pager"), prev: $("prev"), next: $("next"), range: $("range"),
  };
  const PAGE = 50;

  const S = {
    token: L.takeToken(),
    role: null,
    conn: "connecting",
    subscribed: false,
    refused: null,
    sessions: new Map(), // id → row model
    dirty: new Set(),    // ids changed since the last render
    seen: null,          // ids confirmed by the snapshots after the last `subscribed`
    stream: null,        // the snapshot stream of the current subscription
    hint: "",
    filter: "",          // status shown ("" = all)
    query: "",           // search by id (substring, case-insensitive)
    page: 0,
    list: [],            // ids matching filter and search, sorted
    listDirty: true,     // `list` must be rebuilt (sessions, statuses, filter or search changed)
    frame: 0,            // a render is scheduled
  };

  const live = new L.Connection({
    onOpen(hello) {
      S.role = hello.role;
      S.subscribed = false;
      subscribe();
      schedule();
    },
    onMessage: handle,
    onStatus(status) {
      S.conn = status;
      if (status !== "online") {
        S.subscribed = false;
        for (const s of S.sessions.values()) s.busy = false;
      }
      schedule();
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
      s = { id, seq: -1, status: "idle", hasQR: false, qrExpiresAt: null, qrUpdatedAt: null, attempt: 0, maxAttempts: null,
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
      S.stream = msg.stream;
      el.tokenForm.hidden = true;
      // Numbers may restart with the gateway: what the snapshots say is the truth from here on.
      for (const s of S.sessions.values()) s.seq = -1;
      // Snapshots follow in batches; rows they do not mention are gone once the last batch is in.
      S.seen = new Set();
      return schedule();
    }
    if (msg.action === "snapshots") {
      if (msg.stream !== S.stream) return;
      for (const item of msg.items || []) apply(item);
      if (msg.done && S.seen) {
        for (const id of [...S.sessions.keys()]) if (!S.seen.has(id)) drop(id);
        S.seen = null;
        S.listDirty = true;
      }
      return schedule();
    }
    apply(msg);
  }

  /** One frame about one session: the model changes, the session is marked for the next render. */
  function apply(msg) {
    const id = msg.sessionId;
    if (!id || id === "*") return;
    if (!S.sessions.has(id)) S.listDirty = true;
    const s = row(id);
    // A frame older than what the row already shows (a live event can overtake its snapshot) is skipped.
    // Any numbered frame proves the session exists (one created during the snapshot stream is in no batch).
    if (typeof msg.seq === "number" && S.seen) S.seen.add(id);
    if (typeof msg.seq === "number") {
      if (msg.seq < s.seq || (msg.seq === s.seq && msg.action !== "snapshot")) { if (S.seen && msg.action === "snapshot") S.seen.add(id); return; }
      s.seq = msg.seq;
    }
    const before = s.status;
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
    if (s.status !== before) S.listDirty = true;
    S.dirty.add(id);
    schedule();
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
    if (s) S.dirty.add(s.id);
    schedule();
  }

  function drop(id) {
    const s = S.sessions.get(id);
    if (s && s.dom) s.dom.tr.remove();
    S.sessions.delete(id);
    S.listDirty = true;
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
    setTimeout(() => { if (s.busy) { s.busy = false; schedule(); } }, 10000);
    schedule();
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  /** One render per animation frame, however many events arrived. */
  function schedule() {
    if (S.frame) return;
    S.frame = requestAnimationFrame(() => { S.frame = 0; render(); });
  }

  function matches(s) {
    return (!S.filter || s.status === S.filter) && (!S.query || s.id.toLowerCase().includes(S.query));
  }

  function paint(s, now, admin, online) {
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

  /** Draws the page on screen: only its rows are in the DOM; the clock-driven texts are redrawn on every tick. */
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

    if (S.listDirty) {
      S.list = [];
      for (const s of S.sessions.values()) if (matches(s)) S.list.push(s.id);
      S.list.sort();
      S.listDirty = false;
    }
    const pages = Math.max(1, Math.ceil(S.list.length / PAGE));
    S.page = Math.min(S.page, pages - 1);
    const first = S.page * PAGE;
    const shown = S.list.slice(first, first + PAGE);
    // Rows of the page, in order; rows of other pages leave the DOM (their models stay).
    let at = el.rows.firstChild;
    const keep = new Set(shown);
    for (const id of shown) {
      const s = S.sessions.get(id);
      const tr = s.dom ? s.dom.tr : build(s);
      if (tr !== at) el.rows.insertBefore(tr, at); else at = at.nextSibling;
      paint(s, now, admin, online);
    }
    while (at) { const nextRow = at.nextSibling; if (!keep.has(at.dataset.session)) at.remove(); at = nextRow; }
    S.dirty.clear();

    const counts = { "": S.sessions.size };
    for (const s of S.sessions.values()) counts[s.status] = (counts[s.status] || 0) + 1;
    for (const span of el.filters.querySelectorAll("[data-count]")) setText(span, String(counts[span.dataset.count] || 0));
    for (const chip of el.filters.querySelectorAll(".chip")) chip.setAttribute("aria-pressed", String(chip.dataset.status === S.filter));
    const n = S.sessions.size;
    const parts = [n + (n === 1 ? " session" : " sessions")];
    if (counts.connected) parts.push(counts.connected + " linked");
    if (counts.pending) parts.push(counts.pending + " pending");
    if (counts.failed) parts.push(counts.failed + " failed");
    if (counts.disconnected) parts.push(counts.disconnected + " disconnected");
    setText(el.summary, S.subscribed || n ? parts.join(" · ") : "");
    el.pager.hidden = S.list.length <= PAGE;
    setText(el.range, S.list.length ? (first + 1) + "–" + (first + shown.length) + " of " + S.list.length : "");
    el.prev.disabled = S.page === 0;
    el.next.disabled = S.page >= pages - 1;
    el.empty.hidden = n > 0 && S.list.length > 0;
    setText(el.empty, S.refused ? S.refused : !S.subscribed && !n ? (S.conn === "reconnecting" ? "Reconnecting…" : "Connecting to the gateway…")
      : n ? "No session matches." : "No sessions yet.");
    setText(el.hint, !online && n ? "Reconnecting… the list is not live." : S.hint);
  }

  el.filters.addEventListener("click", (ev) => {
    const chip = ev.target.closest(".chip");
    if (!chip) return;
    S.filter = chip.dataset.status;
    S.page = 0;
    S.listDirty = true;
    schedule();
  });
  el.search.addEventListener("input", () => {
    S.query = el.search.value.trim().toLowerCase();
    S.page = 0;
    S.listDirty = true;
    schedule();
  });
  el.prev.addEventListener("click", () => { S.page = Math.max(0, S.page - 1); schedule(); });
  el.next.addEventListener("click", () => { S.page += 1; schedule(); });

  L.onTokenForm(el.tokenForm, el.tokenInput, el.enterKey, showTokenForm, (token) => {
    S.token = token;
    S.refused = null;
    subscribe();
    schedule();
  });

  setInterval(schedule, 500);
  render();
  live.start();
})();
