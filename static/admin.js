/* QRGate dashboard: /admin[?token=KEY].
 *
 * One watch of "*" on the qrgate.js client (a service or admin key; everyone in demo mode; a tenant's key sees its
 * own sessions): the client applies the snapshot batches and every session's events, skips what is stale, resumes
 * after a reconnect and drops sessions gone after a full stream. This file lists them with status, QR age and last
 * error, live, with a link to each page and (admins) a refresh button that shows the rate limit's wait.
 *
 * Built for thousands of sessions: a change only marks its session dirty; one render per animation frame touches
 * the rows of the page on screen (50 at a time) and the counts. Status filters, search by id and pages narrow what
 * is drawn; the full list is re-sorted only when the set of sessions, a status, the filter or the search changes.
 */
import { QRGate, mmss, phaseOf } from "./qrgate.js";
import { takeToken, storeToken, setText, tokenForm, showConnection } from "./page.js";

const $ = (id) => document.getElementById(id);
const el = {
  dash: $("dash"), roleBadge: $("role-badge"), summary: $("summary"), table: $("sessions"), rows: $("rows"),
  empty: $("empty"), hint: $("hint"), filters: $("filters"), search: $("search"), pager: $("pager"), prev: $("prev"),
  next: $("next"), range: $("range"),
};
const PAGE = 50;

const S = {
  conn: "connecting",
  subscribed: false,
  refused: null,
  rows: new Map(),     // id → {id, status, note, retryUntil, busy, dom}
  hint: "",
  filter: "",          // status shown ("" = all)
  query: "",           // search by id (substring, case-insensitive)
  page: 0,
  list: [],            // ids matching filter and search, sorted
  listDirty: true,     // `list` must be rebuilt (sessions, statuses, filter or search changed)
  frame: 0,            // a render is scheduled
};

const gate = QRGate.connect(location.origin, { token: takeToken() });
// The raw code is all the table needs to know a QR is there (a few hundred bytes instead of ~12 KB).
const watch = gate.watch({ all: true }, { formats: ["code"] });

const keyForm = tokenForm((token) => {
  S.refused = null;
  gate.setToken(token);
  schedule();
});

gate.on("connection", (c) => {
  S.conn = c.state;
  if (c.state !== "online") {
    S.subscribed = false;
    for (const r of S.rows.values()) r.busy = false;
  }
  schedule();
});

watch.on("subscribed", () => {
  S.subscribed = true;
  S.refused = null;
  keyForm.hide();
  schedule();
});

watch.on("change", (st) => {
  let r = S.rows.get(st.sessionId);
  if (!r) {
    r = { id: st.sessionId, status: null, note: "", retryUntil: 0, busy: false, dom: null };
    S.rows.set(r.id, r);
  }
  if (r.status !== st.status) { r.status = st.status; S.listDirty = true; }
  schedule();
});

watch.on("removed", (id) => {
  const r = S.rows.get(id);
  if (r && r.dom) r.dom.tr.remove();
  S.rows.delete(id);
  S.listDirty = true;
  schedule();
});

watch.on("error", (e) => {
  if (e.code === "failed" || e.code === "upstream_error") return; // a session's own news: its row shows it
  if (e.code === "unauthorized") {
    storeToken(null);
    S.refused = "That access key was not recognised.";
    keyForm.show(S.refused + " The dashboard needs a service or admin key.");
  } else if (e.code === "forbidden") {
    S.refused = "The dashboard needs a service or admin key.";
    keyForm.show(S.refused);
  } else {
    S.hint = e.message;
  }
  schedule();
});

async function onRefresh(id) {
  const r = S.rows.get(id);
  if (!r) return;
  r.busy = true;
  r.note = "";
  schedule();
  try {
    const answer = await watch.refresh(id);
    r.note = answer.alreadyConnected ? "Already linked: no QR needed." : "Refresh requested.";
  } catch (e) {
    if (e.code === "rate_limited") {
      r.retryUntil = Date.now() + Math.max(1, e.retryAfter || 1) * 1000;
      r.note = "Refreshed moments ago.";
    } else if (e.code === "forbidden") {
      r.note = "Needs an admin key.";
      keyForm.show("Refreshing a session needs an admin key.");
    } else {
      r.note = e.message;
    }
  } finally {
    r.busy = false;
    schedule();
  }
}

function age(ms) {
  const t = Math.max(0, Math.floor(ms / 1000));
  if (t < 60) return t + " s";
  if (t < 3600) return Math.floor(t / 60) + " min " + String(t % 60).padStart(2, "0") + " s";
  return Math.floor(t / 3600) + " h " + String(Math.floor((t % 3600) / 60)).padStart(2, "0") + " min";
}

function clockTime(iso) {
  const d = new Date(iso);
  return isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function attemptText(st) {
  if (st.maxAttempts === null || st.maxAttempts === undefined) return "";
  return st.attempt > 0 ? "Attempt " + st.attempt + " of " + st.maxAttempts : "First code";
}

/** [pill class, pill text, detail line] for a session. */
function describe(st, now) {
  switch (phaseOf(st, now)) {
    case "connected": return ["connected", "Linked", st.connectedAt ? "since " + clockTime(st.connectedAt) : ""];
    case "failed": return ["failed", "Failed", st.maxAttempts ? "after " + st.maxAttempts + " attempts" : ""];
    case "disconnected": return ["disconnected", "Disconnected", "the phone unlinked"];
    case "idle": case null: return ["idle", "Idle", "not started"];
    case "expired": return ["expiring", "Expired", attemptText(st)];
    case "regenerating": return ["regenerating", "Regenerating", attemptText(st)];
    case "waiting": return ["pending", "Pending", "waiting for a QR code"];
  }
  const left = Math.max(0, Math.ceil((st.qrExpiresAt - now) / 1000));
  const phone = st.pairingPhone ? " · by phone " + st.pairingPhone : "";
  return [left <= 15 ? "expiring" : "pending", "Pending", attemptText(st) + " · expires in " + mmss(left) + phone];
}

function build(r) {
  const tr = document.createElement("tr");
  tr.dataset.session = r.id;
  const cell = (cls, label) => {
    const td = document.createElement("td");
    td.className = cls;
    td.dataset.label = label;
    tr.appendChild(td);
    return td;
  };
  const link = document.createElement("a");
  link.className = "session-name";
  link.href = "/?session=" + encodeURIComponent(r.id);
  link.textContent = r.id;
  cell("cell-session", "Session").appendChild(link);

  const wrap = document.createElement("span");
  const pill = document.createElement("span");
  const sub = document.createElement("span");
  sub.className = "sub";
  wrap.append(pill, sub);
  cell("cell-status", "Status").appendChild(wrap);

  const cAge = cell("cell-age num", "QR age");
  const err = document.createElement("span");
  cell("cell-error", "Last error").appendChild(err);

  const cActions = cell("cell-actions", "");
  const actions = document.createElement("div");
  actions.className = "row-actions";
  const open = document.createElement("a");
  open.className = "btn btn-small open";
  open.href = link.href;
  open.textContent = "Open";
  open.setAttribute("aria-label", "Open " + r.id);
  const refresh = document.createElement("button");
  refresh.type = "button";
  refresh.className = "btn btn-small refresh";
  refresh.addEventListener("click", () => onRefresh(r.id));
  actions.append(open, refresh);
  const note = document.createElement("span");
  note.className = "row-note";
  note.setAttribute("aria-live", "polite");
  cActions.append(actions, note);
  r.dom = { tr, pill, sub, age: cAge, err, refresh, note };
  return tr;
}

/** One render per animation frame, however many events arrived. */
function schedule() {
  if (S.frame) return;
  S.frame = requestAnimationFrame(() => { S.frame = 0; render(); });
}

function matches(r) {
  return (!S.filter || r.status === S.filter) && (!S.query || r.id.toLowerCase().includes(S.query));
}

function paint(r, st, now, admin, online) {
  const [kind, label, detail] = describe(st, now);
  r.dom.tr.dataset.status = st.status;
  r.dom.pill.className = "pill pill-" + kind;
  setText(r.dom.pill, label);
  setText(r.dom.sub, detail);
  setText(r.dom.age, st.qrUpdatedAt && st.status !== "connected" ? age(now - st.qrUpdatedAt) : "—");
  r.dom.err.className = "last-error" + (st.lastError ? "" : " none");
  setText(r.dom.err, st.lastError || "—");
  const wait = Math.ceil((r.retryUntil - Date.now()) / 1000);
  setText(r.dom.refresh, wait > 0 ? "Try again in " + wait + "s" : r.busy ? "Refreshing…" : "Refresh");
  r.dom.refresh.disabled = !admin || !online || r.busy || wait > 0;
  r.dom.refresh.title = admin ? "Request a new QR code for " + r.id : "Needs an admin key";
  r.dom.refresh.setAttribute("aria-label", (wait > 0 ? "Try again in " + wait + " seconds: refresh " : "Refresh ") + r.id);
  if (wait <= 0 && r.note === "Refreshed moments ago.") r.note = "";
  setText(r.dom.note, r.note);
}

/** Draws the page on screen: only its rows are in the DOM; the clock-driven texts are redrawn on every tick. */
function render() {
  const now = gate.serverNow();
  const online = S.conn === "online" && S.subscribed;
  const role = watch.role;
  const admin = role === "admin";
  el.dash.dataset.state = S.refused ? "refused" : online ? "live" : S.conn;
  showConnection(S.conn);
  el.roleBadge.hidden = !role || role === "browser";
  setText(el.roleBadge, role || "");
  el.table.classList.toggle("is-stale", !online);

  if (S.listDirty) {
    S.list = [];
    for (const r of S.rows.values()) if (matches(r)) S.list.push(r.id);
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
    const r = S.rows.get(id);
    const tr = r.dom ? r.dom.tr : build(r);
    if (tr !== at) el.rows.insertBefore(tr, at); else at = at.nextSibling;
    paint(r, watch.get(id), now, admin, online);
  }
  while (at) { const nextRow = at.nextSibling; if (!keep.has(at.dataset.session)) at.remove(); at = nextRow; }

  const counts = { "": S.rows.size };
  for (const r of S.rows.values()) counts[r.status] = (counts[r.status] || 0) + 1;
  for (const span of el.filters.querySelectorAll("[data-count]")) setText(span, String(counts[span.dataset.count] || 0));
  for (const chip of el.filters.querySelectorAll(".chip")) chip.setAttribute("aria-pressed", String(chip.dataset.status === S.filter));
  const n = S.rows.size;
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

setInterval(schedule, 500);
render();
