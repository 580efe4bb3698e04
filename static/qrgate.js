/* QRGate browser client — an ES module, no dependencies, no build step (docs/CLIENT.md).
 *
 *   import { QRGate } from "https://GATEWAY/qrgate.js";
 *   const gate = QRGate.connect("https://GATEWAY", { token });
 *   const s = gate.session("shop-42");
 *   s.on("qr", (qr) => { img.src = qr.src; });
 *   s.on("countdown", (c) => { label.textContent = c.mmss; });
 *
 * One WebSocket per gate (docs/PROTOCOL.md) that
 *  - reconnects by itself with jittered exponential backoff (0.5 s doubling up to 10 s, half of each delay
 *    random), reset once the gateway says hello again;
 *  - notices a silently dead link: an app-level ping after 20 s without a frame; nothing back within 8 s
 *    closes the socket, which reconnects;
 *  - estimates the gateway's clock: every frame carries `timestamp` (server epoch ms); a sample is
 *    `timestamp - Date.now()` at receipt. Delivery delays and replayed events (which keep their original
 *    timestamp) only make a sample smaller than the true offset, so the estimate is the largest sample of
 *    the last minute. Countdowns are computed locally from `qrExpiresAt` with it and tick every second;
 *  - resumes each session with `since` (its last seq) after a reconnect. The gateway answers the missed
 *    events, a snapshot, or nothing; a ping sent right behind the subscribe comes back after that answer,
 *    so its pong says the session is in step again.
 *  - treats a new `bootId` with care: seqs survive a restart only with a durable store. It asks for the
 *    missed events and a fresh snapshot together, and hands the events on only when, applied to what it
 *    held, they end exactly in that snapshot; otherwise the snapshot replaces everything (`resync`).
 *
 * Handlers registered with on(...) never see the same numbered event twice nor one older than the last
 * (per session and event name); seqs go back only at a `resync` (the whole state replaced by a snapshot).
 * The gateway's countdown frames are outside the numbering: they only check that the code held is the right one.
 */

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;
const PING_EVERY_MS = 20000;
const PONG_DEADLINE_MS = 8000;
const SKEW_WINDOW_MS = 60000;
const REQUEST_TIMEOUT_MS = 10000;
const RESYNC_MIN_MS = 1000;
const TICK_MS = 250;

/** Session ids the gateway accepts. */
export const SESSION_ID = /^[A-Za-z0-9._:@-]{1,128}$/;

/** Seconds left at or under which a countdown is `urgent`. */
export const URGENT_SECONDS = 15;

/**
 * A phone number as typed ("+55 11 98765-4321") → its digits with the country code ("5511987654321"), or
 * null when it is not 8–15 digits with an optional leading "+" (spaces, dots, dashes and parentheses are
 * allowed between digits).
 * @param {string} input
 * @returns {string|null}
 */
export function phoneDigits(input) {
  const compact = String(input == null ? "" : input).trim().replace(/[\s().-]/g, "");
  return /^\+?\d{8,15}$/.test(compact) ? compact.replace(/^\+/, "") : null;
}

/**
 * "MM:SS" for a number of seconds (minutes may pass 59).
 * @param {number} seconds
 */
export function mmss(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return String(Math.floor(s / 60)).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
}

/**
 * Epoch ms of an ISO date, or null.
 * @param {string|null|undefined} iso
 * @returns {number|null}
 */
export function epochMs(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return isNaN(t) ? null : t;
}

/**
 * An <img src> for an SVG document (a data: URL; a strict CSP allows `img-src data:`, never inline code).
 * @param {string} svg
 */
export function svgDataURL(svg) {
  return "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg);
}

/** A refusal or a failed request: `code` is the protocol's error code (or "timeout", "offline", "closed"). */
export class QRGateError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{sessionId?: string, retryAfter?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = "QRGateError";
    this.code = code;
    this.sessionId = extra.sessionId;
    this.retryAfter = extra.retryAfter;
  }
}

/** on(name, fn) → unsubscribe; a handler that throws is logged and does not stop the others. */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
  }

  /**
   * @param {string} name
   * @param {(payload: any) => void} fn
   * @returns {() => void} unsubscribes this handler
   */
  on(name, fn) {
    let set = this._handlers.get(name);
    if (!set) this._handlers.set(name, (set = new Set()));
    set.add(fn);
    return () => { set.delete(fn); };
  }

  /** @protected */
  _emit(name, payload) {
    const set = this._handlers.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(payload); } catch (e) { console.error("qrgate: a " + name + " handler threw", e); }
    }
  }
}

/**
 * @typedef {Object} SessionState  What a session looks like; the payload of "status" and "change".
 * @property {string} sessionId
 * @property {number|null} seq  the last event applied
 * @property {"idle"|"pending"|"connected"|"failed"|"disconnected"|null} status  null before the first snapshot
 * @property {string|null} qrSvg  per the subscription's formats
 * @property {string|null} qrText
 * @property {string|null} qrCode  PNG data URL
 * @property {string|null} qrSrc  an <img src> for the QR (SVG preferred)
 * @property {number|null} qrExpiresAt  epoch ms, gateway clock
 * @property {number|null} qrUpdatedAt  epoch ms, gateway clock
 * @property {boolean} qrGone  the gateway expired or dropped the code held (kept as a backdrop)
 * @property {number} attempt
 * @property {number|null} maxAttempts
 * @property {{attempt: number, message: string, requested: boolean}|null} regenerating
 * @property {string|null} pairingCode  "ABCD-EFGH" while it is valid (it expires with the QR)
 * @property {string|null} pairingPhone  "•••• 4321" while the session links by phone number
 * @property {string|null} connectedAt  ISO date
 * @property {string|null} lastError  the latest error the gateway reported (upstream or failure)
 * @property {string|null} failure  why the session failed
 * @property {string|null} upstreamError  an upstream problem; the QR held stays valid
 * @property {string|null} numberId
 */

/** @returns {SessionState} */
function blankState(id) {
  return {
    sessionId: id, seq: null, status: null, qrSvg: null, qrText: null, qrCode: null, qrSrc: null,
    qrExpiresAt: null, qrUpdatedAt: null, qrGone: false, attempt: 0, maxAttempts: null, regenerating: null,
    pairingCode: null, pairingPhone: null, connectedAt: null, lastError: null, failure: null,
    upstreamError: null, numberId: null,
  };
}

const QR_FIELDS = ["qrSvg", "qrText", "qrCode"];

/**
 * One session's state from its frames, shared by sessions and watches. `apply` returns the named events the
 * frame makes ([name, payload] pairs), or null when the frame is older than what is held (skipped).
 */
class SessionModel {
  constructor(id) {
    this.state = blankState(id);
    this.expiredNotified = false; // "expired" told for the QR held (locally or by the gateway)
  }

  /** Forgets the numbering (a resync from another run may go back). */
  forgetSeq() { this.state.seq = null; }

  /**
   * @param {any} f a session frame
   * @param {{resync?: boolean}} [how]
   * @returns {Array<[string, any]>|null}
   */
  apply(f, how = {}) {
    const st = this.state;
    const numbered = typeof f.seq === "number";
    if (numbered && st.seq !== null && (f.seq < st.seq || (f.seq === st.seq && f.action !== "snapshot"))) return null;
    if (numbered) st.seq = f.seq;
    const base = { sessionId: st.sessionId, seq: numbered ? f.seq : undefined, timestamp: f.timestamp };
    /** @type {Array<[string, any]>} */
    const out = [];
    switch (f.action) {
      case "snapshot": return this.applySnapshot(f, base, how);
      case "qr_generated":
        st.status = "pending";
        this.setQR(f);
        st.qrExpiresAt = epochMs(f.qrExpiresAt);
        st.qrUpdatedAt = f.timestamp;
        st.qrGone = false;
        st.attempt = f.attempt;
        st.maxAttempts = f.maxAttempts;
        st.regenerating = null;
        st.failure = null;
        st.upstreamError = null;
        st.pairingCode = null; // its code follows in a pairing_code frame
        if (f.numberId !== undefined) st.numberId = f.numberId;
        out.push(["qr", this.qrPayload(base)]);
        break;
      case "pairing_code":
        st.pairingCode = f.code;
        out.push(["pairing_code", { ...base, code: f.code, expiresAt: epochMs(f.expiresAt), attempt: f.attempt,
          maxAttempts: f.maxAttempts, phone: st.pairingPhone }]);
        break;
      case "countdown":
        // Another expiry than the QR held means something was missed: the caller resyncs.
        if (!st.qrExpiresAt || st.qrGone || st.qrExpiresAt !== epochMs(f.qrExpiresAt)) {
          st.qrExpiresAt = epochMs(f.qrExpiresAt);
          out.push(["_outOfStep", null]);
        }
        break;
      case "qr_expired":
        st.qrGone = true;
        st.attempt = f.attempt;
        st.maxAttempts = f.maxAttempts;
        st.pairingCode = null;
        if (!this.expiredNotified) {
          this.expiredNotified = true;
          out.push(["expired", { ...base, attempt: f.attempt, maxAttempts: f.maxAttempts, local: false }]);
        }
        break;
      case "qr_regenerating":
        st.status = "pending";
        st.qrGone = true;
        st.attempt = f.attempt;
        st.maxAttempts = f.maxAttempts;
        st.pairingCode = null;
        st.failure = null;
        st.regenerating = { attempt: f.attempt, message: f.message, requested: f.attempt === 0 };
        out.push(["regenerating", { ...base, attempt: f.attempt, maxAttempts: f.maxAttempts, message: f.message,
          requested: f.attempt === 0 }]);
        break;
      case "connected":
        if (!numbered) return out; // a reply to this client's refresh or pair: the session is already linked
        st.status = "connected";
        st.connectedAt = f.connectedAt || new Date().toISOString();
        this.clearQR();
        st.lastError = st.failure = st.upstreamError = null;
        st.pairingPhone = null;
        out.push(["connected", { ...base, connectedAt: st.connectedAt, message: f.message }]);
        break;
      case "error":
        st.status = "failed";
        st.failure = st.lastError = f.error;
        st.qrGone = true;
        st.regenerating = null;
        st.pairingCode = null;
        if (typeof f.maxAttempts === "number") st.attempt = st.maxAttempts = f.maxAttempts;
        out.push(["error", { ...base, code: "failed", message: f.error, fatal: true }]);
        break;
      case "upstream_error":
        st.upstreamError = st.lastError = f.error;
        out.push(["error", { ...base, code: "upstream_error", message: f.error, fatal: false }]);
        break;
      case "disconnected":
        st.status = "disconnected";
        this.clearQR();
        st.connectedAt = null;
        st.pairingPhone = null;
        out.push(["disconnected", { ...base }]);
        break;
      case "refreshing": // reply to this client's refresh: the old code is no longer offered
        st.status = "pending";
        st.qrGone = true;
        st.failure = null;
        st.attempt = 0;
        st.pairingCode = null;
        st.regenerating = { attempt: 0, message: "Generating a new QR code…", requested: true };
        break;
      case "pairing_requested":
        st.pairingPhone = f.pairingPhone || null;
        st.pairingCode = null;
        break;
      default:
        return out;
    }
    return out;
  }

  applySnapshot(m, base, how) {
    const st = this.state;
    const before = { ...st };
    st.status = m.status;
    this.setQR(m);
    st.qrExpiresAt = epochMs(m.qrExpiresAt);
    st.qrUpdatedAt = epochMs(m.qrUpdatedAt);
    st.qrGone = false;
    st.attempt = m.attempt || 0;
    st.maxAttempts = m.maxAttempts;
    st.connectedAt = m.connectedAt || null;
    st.lastError = m.lastError || null;
    st.failure = m.status === "failed" ? (m.lastError || "QR code generation failed.") : null;
    const hasQR = QR_FIELDS.some((k) => m[k]);
    // A snapshot's lastError may be old news while a QR is shown; it explains a missing code, though.
    st.upstreamError = m.status === "pending" && !hasQR && m.lastError ? m.lastError : null;
    st.regenerating = m.status === "pending" && !hasQR && st.attempt > 0
      ? { attempt: st.attempt, message: "Generating a new QR code (attempt " + st.attempt + "/" + st.maxAttempts + ")", requested: false }
      : null;
    st.pairingCode = m.pairingCode || null;
    st.pairingPhone = m.pairingPhone || null;
    if (m.numberId !== undefined) st.numberId = m.numberId;
    if (st.qrExpiresAt !== before.qrExpiresAt || !hasQR) this.expiredNotified = false;
    // Named events only for what changed, so a handler of "qr" alone still follows a resync.
    const tag = { ...base, snapshot: true, resync: !!how.resync, recovered: m.recovered };
    /** @type {Array<[string, any]>} */
    const out = [];
    const same = (k) => st[k] === before[k];
    if (hasQR && !(same("qrSvg") && same("qrText") && same("qrCode") && same("qrExpiresAt"))) out.push(["qr", this.qrPayload(tag)]);
    if (st.pairingCode && st.pairingCode !== before.pairingCode) {
      out.push(["pairing_code", { ...tag, code: st.pairingCode, expiresAt: st.qrExpiresAt, attempt: st.attempt,
        maxAttempts: st.maxAttempts, phone: st.pairingPhone }]);
    }
    if (st.regenerating && !before.regenerating) {
      out.push(["regenerating", { ...tag, attempt: st.attempt, maxAttempts: st.maxAttempts, message: st.regenerating.message, requested: false }]);
    }
    if (st.status !== before.status) {
      if (st.status === "connected") out.push(["connected", { ...tag, connectedAt: st.connectedAt }]);
      if (st.status === "failed") out.push(["error", { ...tag, code: "failed", message: st.failure, fatal: true }]);
      if (st.status === "disconnected") out.push(["disconnected", { ...tag }]);
    }
    return out;
  }

  setQR(f) {
    const st = this.state;
    for (const k of QR_FIELDS) st[k] = f[k] || null;
    st.qrSrc = st.qrSvg ? svgDataURL(st.qrSvg) : st.qrCode || null;
    this.expiredNotified = false;
  }

  clearQR() {
    const st = this.state;
    for (const k of QR_FIELDS) st[k] = null;
    st.qrSrc = null;
    st.qrExpiresAt = null;
    st.qrGone = false;
    st.regenerating = null;
    st.pairingCode = null;
  }

  qrPayload(base) {
    const st = this.state;
    return { ...base, qrSvg: st.qrSvg, qrText: st.qrText, qrCode: st.qrCode, src: st.qrSrc, expiresAt: st.qrExpiresAt,
      attempt: st.attempt, maxAttempts: st.maxAttempts };
  }

  /** What a comparison of two states looks at (the resync check after a restart). */
  fingerprint() {
    const st = this.state;
    return JSON.stringify([st.seq, st.status, st.qrSvg, st.qrText, st.qrCode, st.qrExpiresAt, st.attempt, st.maxAttempts,
      st.connectedAt, st.pairingCode, !!st.regenerating]);
  }
}

/**
 * The phase a session is in at `now` (gateway clock): "live", "expired", "regenerating", "waiting",
 * "connected", "failed", "disconnected", "idle", or null before the first snapshot.
 * @param {SessionState} st
 * @param {number} now
 */
export function phaseOf(st, now) {
  if (st.status === null) return null;
  if (st.status !== "pending") return st.status;
  if (st.regenerating) return "regenerating";
  if (st.qrSrc || st.qrText) {
    if (st.qrGone) return "expired";
    return st.qrExpiresAt && st.qrExpiresAt > now ? "live" : "expired";
  }
  return st.qrGone ? "expired" : "waiting";
}

/**
 * Whole seconds left on the session's code at `now` (gateway clock); 0 when none.
 * @param {SessionState} st
 * @param {number} now
 */
export function remainingOf(st, now) {
  return st.qrExpiresAt ? Math.max(0, Math.ceil((st.qrExpiresAt - now) / 1000)) : 0;
}

/**
 * One session on a gate. Events (on(name, fn); each payload has sessionId, and seq when the gateway numbered it):
 *  "qr"            {qrSvg, qrText, qrCode, src, expiresAt, attempt, maxAttempts, snapshot?, resync?}
 *  "pairing_code"  {code, expiresAt, attempt, maxAttempts, phone}
 *  "countdown"     {remaining, mmss, expiresAt, urgent}  — a local tick, every second while a code is held
 *  "expired"       {attempt, maxAttempts, local}          — once per code
 *  "regenerating"  {attempt, maxAttempts, message, requested}
 *  "connected"     {connectedAt, message?}
 *  "disconnected"  {}
 *  "error"         {code, message, fatal, retryAfter?}    — "failed", "upstream_error", or a refusal's code
 *  "status"        {...SessionState, phase, remaining, synced, connection, role, refused, resync}
 *  "frame"         every server frame about the session, in order, never twice (raw JSON objects)
 */
export class Session extends Emitter {
  /**
   * @param {Gate} gate
   * @param {string} id
   * @param {{formats?: string[], token?: string|null}} opts
   */
  constructor(gate, id, opts) {
    super();
    this.gate = gate;
    this.id = id;
    this.formats = opts.formats || ["svg"];
    /** @type {string|null|undefined} own credential; undefined = the gate's */
    this.token = opts.token;
    this.model = new SessionModel(id);
    /** @type {string|null} the role the gateway granted this subscription */
    this.role = null;
    /** @type {{code: string, reason: string}|null} the gateway refused the subscription (waits for a new token) */
    this.refused = null;
    this.synced = false;
    this.closed = false;
    this.forceSnapshot = false;
    this.lastResyncAt = 0;
    this.lastTick = null;
    this.verify = null; // during the resume after a restart: {stage, buffer, snapshot}
    this.bootOfSeq = null;
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    if (gate.online) this.subscribe(false);
  }

  /** @returns {SessionState & {phase: string|null, remaining: number, synced: boolean, connection: string, role: string|null, refused: any}} */
  get state() {
    const now = this.gate.serverNow();
    return { ...this.model.state, phase: phaseOf(this.model.state, now), remaining: remainingOf(this.model.state, now),
      synced: this.synced, connection: this.gate.connection, role: this.role, refused: this.refused };
  }

  /** Asks an admin refresh of the session (a new code, attempts reset). Resolves {action:"refreshing"} or
   *  {action:"connected", alreadyConnected:true, message}; rejects with a QRGateError (rate_limited carries retryAfter). */
  refresh() { return this.gate.refresh(this.id); }

  /** Switches the session to linking by phone number: resolves {action:"pairing_requested", pairingPhone}; the
   *  code then arrives as a "pairing_code" event. Rejects with a QRGateError (invalid_message for a bad number). */
  requestPairingCode(phone) { return this.gate.requestPairingCode(this.id, phone); }

  /** A new credential for this session (null: none): subscribes again with it. */
  setToken(token) {
    this.token = token;
    this.refused = null;
    this.forceSnapshot = true;
    this.synced = false;
    if (this.gate.online) this.subscribe(false);
    this.emitStatus();
  }

  /** Asks for a fresh snapshot (at most once a second). */
  resync() {
    const now = Date.now();
    if (now - this.lastResyncAt < RESYNC_MIN_MS || !this.gate.online || this.refused) return;
    this.lastResyncAt = now;
    this.forceSnapshot = true;
    this.subscribe(false);
  }

  /** Unsubscribes and stops; the gate stays open. */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.ticker);
    this.gate._drop(this);
    if (this.gate.online && !this.refused) this.gate._send({ op: "unsubscribe", session: this.id }, "unsubscribe", this.id, {});
  }

  /** @private */
  subscribe(newBoot) {
    if (this.closed || this.refused) return;
    const msg = { op: "subscribe", session: this.id, formats: this.formats };
    const token = this.token === undefined ? this.gate.token : this.token;
    if (token) msg.token = token;
    const held = this.model.state.seq;
    const since = held !== null && !this.forceSnapshot ? held : null;
    this.forceSnapshot = false;
    this.synced = false;
    const onError = (f) => this.refusal(f);
    if (since !== null && newBoot) {
      // The numbering may be another run's: take the missed events and a snapshot, and judge (onFrame).
      this.verify = { stage: 0, buffer: [], snapshot: null };
      const onReply = (f) => { this.subscribed(f); if (this.verify) this.verify.stage += 1; };
      this.gate._send({ ...msg, since }, "subscribe", this.id, { onReply, onError });
      this.gate._send(msg, "subscribe", this.id, { onReply, onError });
    } else if (since !== null) {
      this.verify = null;
      this.gate._send({ ...msg, since }, "subscribe", this.id, { onReply: (f) => this.subscribed(f), onError });
      // The pong comes after whatever the subscribe made the gateway send: in step from there.
      this.gate._send({ op: "ping" }, "ping", null, { onReply: () => { if (!this.refused) this.inStep(); } });
    } else {
      this.verify = null;
      this.gate._send(msg, "subscribe", this.id, { onReply: (f) => this.subscribed(f), onError });
    }
    this.emitStatus();
  }

  /** @private */
  subscribed(f) {
    this.role = f.role || this.role;
    this.refused = null;
  }

  /** @private */
  inStep() {
    if (this.synced) return;
    this.synced = true;
    this.emitStatus();
  }

  /** @private a session frame from the gate */
  onFrame(f) {
    if (this.closed) return;
    if (f.action === "subscribed") { this.subscribed(f); return; }
    const v = this.verify;
    if (v) {
      if (v.stage >= 2 && f.action === "snapshot") { this.verify = null; this.judge(v.buffer, f); return; }
      v.buffer.push(f);
      return;
    }
    this.deliver(f, {});
  }

  /** @private After a restart: the missed events are handed on only if they lead exactly to the snapshot. */
  judge(buffer, snapshot) {
    const trial = new SessionModel(this.id);
    trial.state = { ...this.model.state };
    let ok = true;
    for (const f of buffer) {
      if (f.action === "snapshot") { ok = false; break; }
      trial.apply(f);
    }
    const truth = new SessionModel(this.id);
    truth.state = { ...trial.state };
    truth.apply(snapshot);
    ok = ok && typeof snapshot.seq === "number" && trial.state.seq === snapshot.seq && trial.fingerprint() === truth.fingerprint();
    if (ok) {
      for (const f of buffer) this.deliver(f, {});
      this.deliver(snapshot, {});
    } else {
      console.debug("qrgate: " + this.id + " resynced from a snapshot after the gateway restarted");
      this.model.forgetSeq();
      this.deliver(snapshot, { resync: true });
    }
  }

  /** @private */
  deliver(f, how) {
    // A snapshot at the seq held only confirms it: applied, but no event of its own.
    const confirmation = f.action === "snapshot" && f.seq === this.model.state.seq;
    const events = this.model.apply(f, how);
    if (events === null) return; // older than what is held
    if (!confirmation) this._emit("frame", f);
    if (f.action === "snapshot" || typeof f.seq === "number") this.inStep();
    let outOfStep = false;
    for (const [name, payload] of events) {
      if (name === "_outOfStep") outOfStep = true;
      else this._emit(name, payload);
    }
    if (outOfStep) this.resync();
    this.lastTick = null;
    this.tick();
    this.emitStatus(how.resync);
  }

  /** @private */
  refusal(f) {
    if (f.code === "unauthorized" || f.code === "unknown_session" || f.code === "forbidden" || f.code === "invalid_message") {
      this.refused = { code: f.code, reason: f.reason || f.code };
      this.verify = null;
      this.synced = false;
    }
    this._emit("error", { sessionId: this.id, code: f.code, message: f.reason || f.code, fatal: !!this.refused, retryAfter: f.retryAfter });
    this.emitStatus();
  }

  /** @private the connection changed */
  connection(online, newBoot) {
    if (online) this.subscribe(newBoot);
    else { this.synced = false; this.verify = null; }
    this.emitStatus();
  }

  /** @private the local clock: a countdown each second, "expired" once when it reaches zero */
  tick() {
    const st = this.model.state;
    if (!st.qrExpiresAt || st.qrGone || st.status !== "pending") { this.lastTick = null; return; }
    const remaining = remainingOf(st, this.gate.serverNow());
    if (remaining === this.lastTick) return;
    this.lastTick = remaining;
    this._emit("countdown", { sessionId: this.id, remaining, mmss: mmss(remaining), expiresAt: st.qrExpiresAt,
      urgent: remaining <= URGENT_SECONDS });
    if (remaining === 0 && !this.model.expiredNotified) {
      this.model.expiredNotified = true;
      this._emit("expired", { sessionId: this.id, attempt: st.attempt, maxAttempts: st.maxAttempts, local: true });
      this.emitStatus();
    }
  }

  /** @private */
  emitStatus(resync) {
    this._emit("status", { ...this.state, resync: !!resync });
  }
}

/**
 * Many sessions on one subscription ("*", a prefix or a list; service or admin credentials), for dashboards.
 * Events: "subscribed" {role, count, scope}; "snapshots" {done, sent, count} per batch; "change" (state, frame)
 * per session whose state changed; "removed" (sessionId) for sessions gone after a full stream; "error"
 * (refusals, and each session's "failed"/"upstream_error" with its sessionId); "frame"; and the named events of
 * a Session ("qr", "pairing_code", "expired", "regenerating", "connected", "disconnected") with sessionId.
 * Countdowns are not ticked per session: read `state.qrExpiresAt` against gate.serverNow().
 */
export class Watch extends Emitter {
  /**
   * @param {Gate} gate
   * @param {{all?: boolean, prefix?: string, sessions?: string[]}} selector
   * @param {{formats?: string[], token?: string|null}} opts
   */
  constructor(gate, selector, opts) {
    super();
    this.gate = gate;
    this.selector = selector;
    this.formats = opts.formats || ["code"];
    this.token = opts.token;
    /** @type {Map<string, SessionModel>} */
    this.models = new Map();
    this.stream = null;
    this.seen = null;
    this.keep = null;
    this.role = null;
    this.refused = null;
    this.subscribedNow = false;
    this.closed = false;
    if (gate.online) this.subscribe(false);
  }

  /** The states of every session seen, by id. */
  get sessions() {
    const out = new Map();
    for (const [id, m] of this.models) out.set(id, m.state);
    return out;
  }

  /** @param {string} id @returns {SessionState|undefined} */
  get(id) { const m = this.models.get(id); return m && m.state; }

  /** @private the subscribe message's selector and the key its replies carry */
  target() {
    const s = this.selector;
    if (s.prefix !== undefined) return { sel: { prefix: s.prefix }, key: "prefix:" + s.prefix };
    if (s.sessions) return { sel: { sessions: s.sessions }, key: "list" };
    return { sel: { session: "*" }, key: "*" };
  }

  /** A new credential (null: none): subscribes again. */
  setToken(token) {
    this.token = token;
    this.refused = null;
    if (this.gate.online) this.subscribe(false);
  }

  /** @private */
  subscribe(newBoot) {
    if (this.closed || this.refused) return;
    const { sel, key } = this.target();
    const msg = { op: "subscribe", ...sel, formats: this.formats };
    const token = this.token === undefined ? this.gate.token : this.token;
    if (token) msg.token = token;
    if (newBoot) for (const m of this.models.values()) m.forgetSeq(); // seqs may be another run's
    const since = {};
    let n = 0;
    for (const [id, m] of this.models) if (m.state.seq !== null) { since[id] = m.state.seq; n += 1; }
    // Sessions named in the map that missed nothing get no frame: they stay after the stream.
    this.keep = null;
    if (n > 0 && JSON.stringify(since).length < this.gate.maxMessageBytes / 2) {
      msg.since = since;
      this.keep = new Set(Object.keys(since));
    }
    this.subscribedNow = false;
    this.gate._send(msg, "subscribe", key, { onReply: (f) => this.subscribed(f), onError: (f) => this.refusal(f) });
  }

  /** @private */
  subscribed(f) {
    this.role = f.role || this.role;
    this.refused = null;
    this.stream = f.stream;
    this.seen = new Set();
    this.subscribedNow = true;
    this._emit("subscribed", { role: this.role, count: f.count, scope: f.scope });
  }

  /** @private */
  refusal(f) {
    if (f.code === "unauthorized" || f.code === "forbidden" || f.code === "unknown_session" || f.code === "invalid_message") {
      this.refused = { code: f.code, reason: f.reason || f.code };
    }
    this._emit("error", { code: f.code, message: f.reason || f.code, fatal: !!this.refused, sessions: f.sessions });
  }

  /** @private */
  batch(f) {
    if (f.stream !== this.stream) return;
    for (const item of f.items || []) this.onFrame(item);
    if (f.done && this.seen) {
      for (const id of [...this.models.keys()]) {
        if (!this.seen.has(id) && !(this.keep && this.keep.has(id))) {
          this.models.delete(id);
          this._emit("removed", id);
        }
      }
      this.seen = null;
    }
    this._emit("snapshots", { done: !!f.done, sent: f.sent, count: f.count });
  }

  /** Whether a frame about `id` belongs to this watch. */
  covers(id) {
    const s = this.selector;
    if (s.prefix !== undefined) return id.startsWith(s.prefix);
    if (s.sessions) return s.sessions.includes(id);
    return true;
  }

  /** @private */
  onFrame(f) {
    const id = f.sessionId;
    if (!id || id === "*" || this.closed) return;
    let m = this.models.get(id);
    if (!m) this.models.set(id, (m = new SessionModel(id)));
    // Any numbered frame proves the session exists (one created during the stream is in no batch).
    if (this.seen && (typeof f.seq === "number" || f.action === "snapshot")) this.seen.add(id);
    const confirmation = f.action === "snapshot" && f.seq === m.state.seq;
    const events = m.apply(f);
    if (events === null) return;
    if (!confirmation) this._emit("frame", f);
    for (const [name, payload] of events) if (name[0] !== "_") this._emit(name, payload);
    this._emit("change", m.state, f);
  }

  /** @private */
  connection(online, newBoot) {
    if (online) this.subscribe(newBoot);
    else this.subscribedNow = false;
  }

  refresh(id) { return this.gate.refresh(id); }
  requestPairingCode(id, phone) { return this.gate.requestPairingCode(id, phone); }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.gate._drop(this);
    const { sel, key } = this.target();
    if (this.gate.online) this.gate._send({ op: "unsubscribe", ...sel }, "unsubscribe", key, {});
  }
}

/**
 * A connection to one gateway. Events: "connection" {state: "connecting"|"online"|"reconnecting"|"closed",
 * closeCode?, retryInMs?, role?, bootId?, newBoot?}; "hello" (the gateway's hello frame); "error" (a refusal no
 * subscription or request claimed).
 */
export class Gate extends Emitter {
  /**
   * @param {string} [url] the gateway's http(s) base; default: this page's origin
   * @param {{token?: string|null, pingEveryMs?: number, pongDeadlineMs?: number, WebSocket?: typeof WebSocket}} [opts]
   */
  constructor(url, opts = {}) {
    super();
    this.pingEveryMs = opts.pingEveryMs || PING_EVERY_MS;
    this.pongDeadlineMs = opts.pongDeadlineMs || PONG_DEADLINE_MS;
    const base = new URL(url || location.origin, location.href);
    this.url = base.origin;
    this.wsURL = (base.protocol === "https:" ? "wss:" : "ws:") + "//" + base.host + "/ws";
    this.token = opts.token || null;
    this.WebSocket = opts.WebSocket || WebSocket;
    /** @type {Map<string, Session>} */
    this.sessions = new Map();
    /** @type {Set<Watch>} */
    this.watches = new Set();
    /** Messages awaiting their reply; the gateway answers in order. */
    this.pending = [];
    this.ws = null;
    this.online = false;
    this.connection = "connecting";
    this.role = null;
    this.bootId = null;
    this.maxMessageBytes = 65536;
    this.failures = 0;
    this.everOnline = false;
    this.closed = false;
    this.samples = [];
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.retryNow = () => {
      if (this.ws || !this.retryTimer || this.closed) return;
      this.failures = 0;
      this.open();
    };
    this.onVisible = () => { if (!document.hidden) this.retryNow(); };
    addEventListener("online", this.retryNow);
    document.addEventListener("visibilitychange", this.onVisible);
    this.open();
  }

  /**
   * One session; the same id twice returns the same Session.
   * @param {string} id
   * @param {{formats?: Array<"svg"|"png"|"code">, token?: string|null}} [opts]
   */
  session(id, opts = {}) {
    let s = this.sessions.get(id);
    if (!s) {
      if (!SESSION_ID.test(id)) throw new QRGateError("invalid_message", "not a session id: " + id);
      s = new Session(this, id, opts);
      this.sessions.set(id, s);
    }
    return s;
  }

  /**
   * Many sessions: {all: true}, {prefix: "shop-"} or {sessions: [...]}.
   * @param {{all?: boolean, prefix?: string, sessions?: string[]}} selector
   * @param {{formats?: Array<"svg"|"png"|"code">, token?: string|null}} [opts]  formats default ["code"]
   */
  watch(selector, opts = {}) {
    const w = new Watch(this, selector || { all: true }, opts);
    this.watches.add(w);
    return w;
  }

  /** A credential for every subscription that has none of its own; subscribes them again. */
  setToken(token) {
    this.token = token || null;
    for (const s of this.sessions.values()) if (s.token === undefined) s.setToken(undefined);
    for (const w of this.watches) if (w.token === undefined) w.setToken(undefined);
  }

  /** @param {string} id @returns {Promise<any>} see Session.refresh */
  refresh(id) {
    return this.request({ op: "refresh", session: id }, "refresh", id);
  }

  /**
   * @param {string} id
   * @param {string} phone digits with country code; "+", spaces, dots, dashes, parentheses allowed
   * @returns {Promise<any>} see Session.requestPairingCode
   */
  requestPairingCode(id, phone) {
    const digits = phoneDigits(phone);
    if (!digits) {
      return Promise.reject(new QRGateError("invalid_phone", "Enter the number with its country code: 8 to 15 digits.", { sessionId: id }));
    }
    return this.request({ op: "pair", session: id, phoneNumber: digits }, "pair", id);
  }

  /** Now on the gateway's clock (epoch ms). */
  serverNow() { return Date.now() + this.skew(); }

  /** Gateway clock minus local clock, in ms (0 before the first frame). */
  skew() {
    let best = null;
    for (const s of this.samples) if (best === null || s.skew > best) best = s.skew;
    return best === null ? 0 : best;
  }

  /** Closes the socket for good; requests in flight fail with "closed". */
  close() {
    if (this.closed) return;
    this.closed = true;
    removeEventListener("online", this.retryNow);
    document.removeEventListener("visibilitychange", this.onVisible);
    clearTimeout(this.retryTimer);
    this.stopHeartbeat();
    for (const s of [...this.sessions.values()]) clearInterval(s.ticker);
    const ws = this.ws;
    this.ws = null;
    this.online = false;
    this.failPending("closed", "the client was closed");
    if (ws) ws.close(1000, "bye");
    this.setConnection("closed", {});
  }

  /** @private */
  request(msg, kind, id) {
    return new Promise((resolve, reject) => {
      if (!this.online) { reject(new QRGateError("offline", "not connected to the gateway", { sessionId: id })); return; }
      const entry = this._send(msg, kind, id, {
        onReply: (f) => {
          if (f.action === "connected") resolve({ ...f, alreadyConnected: true });
          else resolve(f);
        },
        onError: (f) => reject(new QRGateError(f.code, f.reason, { sessionId: id, retryAfter: f.retryAfter })),
        onFail: (code, why) => reject(new QRGateError(code, why, { sessionId: id })),
      });
      entry.timer = setTimeout(() => {
        entry.done = true;
        reject(new QRGateError("timeout", "no answer from the gateway", { sessionId: id }));
      }, REQUEST_TIMEOUT_MS);
    });
  }

  /** @private sends a message whose reply (or error) is routed to `handlers` */
  _send(msg, kind, key, handlers) {
    const entry = { kind, key, ...handlers, done: false, timer: null };
    if (!this.ws || !this.online || this.ws.readyState !== 1) {
      if (handlers.onFail) handlers.onFail("offline", "not connected to the gateway");
      return entry;
    }
    this.pending.push(entry);
    this.ws.send(JSON.stringify(msg));
    return entry;
  }

  /** @private */
  _drop(sub) {
    if (sub instanceof Session) { if (this.sessions.get(sub.id) === sub) this.sessions.delete(sub.id); }
    else this.watches.delete(sub);
  }

  /** @private the oldest message waiting whose key the reply names (any, when it names none) */
  claim(f, key, kinds) {
    const i = this.pending.findIndex((e) => (key === undefined || e.key === key) && (!kinds || kinds.includes(e.kind)));
    if (i < 0) return null;
    const [entry] = this.pending.splice(i, 1);
    clearTimeout(entry.timer);
    return entry.done ? null : entry;
  }

  /** @private */
  open() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.closed) return;
    let ws;
    try {
      ws = new this.WebSocket(this.wsURL, "qrgate.v1");
    } catch (e) {
      this.scheduleRetry(null);
      return;
    }
    this.ws = ws;
    ws.addEventListener("message", (ev) => {
      if (this.ws !== ws) return;
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      this.alive();
      if (typeof f.timestamp === "number") this.sample(f.timestamp);
      this.route(f);
    });
    ws.addEventListener("close", (ev) => { if (this.ws === ws) this.lost(ev.code); });
    // "error" is always followed by "close".
  }

  /** @private the socket is gone (or given up on): everything waits for the next one */
  lost(code) {
    this.ws = null;
    this.online = false;
    this.stopHeartbeat();
    this.failPending("offline", "the connection to the gateway was lost");
    for (const s of this.sessions.values()) s.connection(false, false);
    for (const w of this.watches) w.connection(false, false);
    this.scheduleRetry(code);
  }

  /** @private */
  route(f) {
    switch (f.action) {
      case "hello": {
        const newBoot = this.bootId !== null && f.bootId !== this.bootId;
        this.bootId = f.bootId;
        this.role = f.role;
        if (f.maxMessageBytes) this.maxMessageBytes = f.maxMessageBytes;
        this.failures = 0;
        this.everOnline = true;
        this.online = true;
        this._emit("hello", f);
        this.setConnection("online", { role: f.role, bootId: f.bootId, newBoot });
        for (const s of this.sessions.values()) s.connection(true, newBoot);
        for (const w of this.watches) w.connection(true, newBoot);
        return;
      }
      case "pong": { const e = this.claim(f, null, ["ping"]); if (e && e.onReply) e.onReply(f); return; }
      case "subscribed":
      case "unsubscribed": {
        const key = f.prefix !== undefined ? "prefix:" + f.prefix : f.sessions ? "list" : f.sessionId;
        const e = this.claim(f, key, [f.action === "subscribed" ? "subscribe" : "unsubscribe"]);
        if (e && e.onReply) e.onReply(f);
        return;
      }
      case "snapshots": for (const w of this.watches) w.batch(f); return;
      case "refreshing":
      case "pairing_requested": {
        const e = this.claim(f, f.sessionId, [f.action === "refreshing" ? "refresh" : "pair"]);
        if (e && e.onReply) e.onReply(f);
        break; // the models apply them too
      }
      case "connected":
        if (typeof f.seq !== "number") {
          const e = this.claim(f, f.sessionId, ["refresh", "pair"]);
          if (e && e.onReply) e.onReply(f);
          const s = this.sessions.get(f.sessionId);
          if (s && s.model.state.status !== "connected") s.resync(); // we thought otherwise
          return;
        }
        break;
      case "error":
        if (f.code) {
          // A refusal answers the oldest message still waiting (for its session, when it names one).
          const e = this.claim(f, f.sessionId);
          if (e && e.onError) e.onError(f);
          else this._emit("error", f);
          return;
        }
        break;
    }
    if (f.sessionId === undefined) return;
    const s = this.sessions.get(f.sessionId);
    if (s) s.onFrame(f);
    for (const w of this.watches) if (w.covers(f.sessionId)) w.onFrame(f);
  }

  /** @private */
  failPending(code, why) {
    const pending = this.pending;
    this.pending = [];
    for (const e of pending) {
      clearTimeout(e.timer);
      if (!e.done && e.onFail) e.onFail(code, why);
    }
  }

  /** @private */
  scheduleRetry(code) {
    if (this.closed) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, this.failures));
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    this.failures += 1;
    this.setConnection(this.everOnline ? "reconnecting" : "connecting", { closeCode: code, retryInMs: delay });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  /** @private */
  setConnection(state, detail) {
    this.connection = state;
    if (state !== "online") console.debug("qrgate connection:", state, "close code:", detail.closeCode, "retry in ms:", detail.retryInMs);
    this._emit("connection", { state, ...detail });
  }

  /** @private any frame proves the link alive: re-arm the heartbeat */
  alive() {
    clearTimeout(this.pongTimer);
    this.pongTimer = null;
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(() => this.heartbeat(), this.pingEveryMs);
  }

  /** @private */
  heartbeat() {
    if (!this.online) return;
    this._send({ op: "ping" }, "ping", null, {});
    this.pongTimer = setTimeout(() => {
      // Nothing came back: the link is dead even if the browser has not noticed. A close handshake with a
      // peer that answers nothing may take the browser long, so the socket is given up on at once.
      const ws = this.ws;
      if (!ws) return;
      this.lost(4000);
      ws.close(4000, "no answer to ping");
    }, this.pongDeadlineMs);
  }

  /** @private */
  stopHeartbeat() {
    clearTimeout(this.pingTimer);
    clearTimeout(this.pongTimer);
    this.pingTimer = this.pongTimer = null;
  }

  /** @private */
  sample(serverTimestamp) {
    const now = Date.now();
    this.samples.push({ at: now, skew: serverTimestamp - now });
    while (this.samples.length > 1 && now - this.samples[0].at > SKEW_WINDOW_MS) this.samples.shift();
    if (this.samples.length > 240) this.samples.splice(0, this.samples.length - 240);
  }
}

/** The entry point: QRGate.connect(url, {token}) → Gate. */
export const QRGate = {
  /**
   * @param {string} [url] the gateway's http(s) base (default: this page's origin)
   * @param {{token?: string|null, pingEveryMs?: number, pongDeadlineMs?: number}} [opts]  heartbeat: a ping after
   *   pingEveryMs (20 000) without a frame; no answer within pongDeadlineMs (8 000) and the socket is given up on
   * @returns {Gate}
   */
  connect(url, opts) { return new Gate(url, opts); },
  phoneDigits,
  mmss,
  phaseOf,
  remainingOf,
  URGENT_SECONDS,
};

export default QRGate;
