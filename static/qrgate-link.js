/* <qrgate-link session="…" token="…" gateway="…"> — the whole WhatsApp linking flow in one element
 * (docs/CLIENT.md): the QR with its MM:SS countdown, urgent in the last 15 s, the expired overlay, the
 * regenerating and failed states, an admin's refresh, "Link with phone number instead" (a pairing code, large
 * and copyable, with the same states), and the linked state.
 *
 * Shadow DOM styled by one constructable stylesheet (no <style>, no style attributes, no inline code: it works
 * under `style-src 'self'; script-src 'self'`), themable through --qrgate-* custom properties and ::part().
 * The gateway defaults to the origin this module was loaded from, so an embed needs only the script tag.
 */
import { QRGate, URGENT_SECONDS, SESSION_ID, mmss, phaseOf, remainingOf, phoneDigits } from "./qrgate.js";

const SCRIPT_ORIGIN = new URL(import.meta.url).origin;

const CSS = `
:host {
  --_accent: var(--qrgate-accent, #14795f);
  --_accent-strong: var(--qrgate-accent-strong, var(--qrgate-accent, #0e5e49));
  --_accent-soft: var(--qrgate-accent-soft, #e5f3ee);
  --_urgent: var(--qrgate-urgent, #b4232a);
  --_urgent-soft: var(--qrgate-urgent-soft, #fdeced);
  --_warn: var(--qrgate-warn, #7a4f00);
  --_warn-soft: var(--qrgate-warn-soft, #fff5dc);
  --_text: var(--qrgate-text, #1b1f24);
  --_muted: var(--qrgate-muted, #56606b);
  --_line: var(--qrgate-line, #e1e5ea);
  --_soft: var(--qrgate-soft, #f5f7f9);
  --_surface: var(--qrgate-surface, #ffffff);
  --_focus: var(--qrgate-focus, #86c8b2);
  --_radius: var(--qrgate-radius, 14px);
  --_size: var(--qrgate-size, min(84vw, 340px));
  display: block;
  color: var(--_text);
  font: var(--qrgate-font, inherit);
}
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
.sr-only { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }

.frame { display: flex; justify-content: center; margin: 16px 0 12px; }
.box {
  position: relative; flex: none; width: var(--_size); height: var(--_size);
  display: flex; align-items: center; justify-content: center; overflow: hidden;
  background: var(--_surface); border: 1px solid var(--_line); border-radius: var(--_radius);
}
.qr { display: block; width: 100%; height: 100%; image-rendering: crisp-edges; image-rendering: pixelated; transition: opacity .25s ease, filter .25s ease; }
.is-dim { opacity: .16; filter: grayscale(1) blur(1.5px); }
.placeholder { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center; }
.has-overlay .placeholder { display: none; }
.spinner, .icon-spin {
  display: block; width: 40px; height: 40px; border: 4px solid #dce3e8; border-top-color: var(--_accent);
  border-radius: 50%; animation: spin .9s linear infinite;
}
.overlay {
  position: absolute; inset: 0; display: flex; flex-direction: column; align-items: center; justify-content: center;
  gap: 8px; padding: 24px; text-align: center; background: rgba(255, 255, 255, .66);
}
.overlay-title { font-size: 21px; line-height: 1.3; letter-spacing: -0.01em; }
.overlay-detail { max-width: 17em; font-size: 15px; color: var(--_muted); }
.is-expired .overlay-title { color: var(--_urgent); }
.overlay-icon { display: block; width: 48px; height: 48px; background: center / contain no-repeat; }
.icon-spin { width: 40px; height: 40px; }
.icon-clock { background-image: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 48 48'%3E%3Ccircle cx='24' cy='24' r='22' fill='%23fdeced'/%3E%3Ccircle cx='24' cy='24' r='13' fill='none' stroke='%23b4232a' stroke-width='3'/%3E%3Cpath d='M24 17v8l5 3' fill='none' stroke='%23b4232a' stroke-width='3' stroke-linecap='round' stroke-linejoin='round'/%3E%3C/svg%3E"); }
.icon-lock { background-image: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 48 48'%3E%3Ccircle cx='24' cy='24' r='22' fill='%23e8eefc'/%3E%3Crect x='15' y='22' width='18' height='13' rx='3' fill='%232c4a9e'/%3E%3Cpath d='M19 22v-4a5 5 0 0 1 10 0v4' fill='none' stroke='%232c4a9e' stroke-width='3'/%3E%3C/svg%3E"); }
.icon-stop { background-image: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 48 48'%3E%3Ccircle cx='24' cy='24' r='22' fill='%23fdeced'/%3E%3Cpath d='M24 13v14' stroke='%23b4232a' stroke-width='4' stroke-linecap='round'/%3E%3Ccircle cx='24' cy='34' r='2.6' fill='%23b4232a'/%3E%3C/svg%3E"); }

.linked { position: absolute; inset: 0; display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 6px; background: var(--_surface); }
.linked-icon { width: 104px; height: 104px; margin-bottom: 6px; }
.linked-icon circle { fill: var(--_accent-soft); }
.linked-icon path { fill: none; stroke: var(--_accent); stroke-width: 4; stroke-linecap: round; stroke-linejoin: round; }
.linked-title { font-size: 24px; color: var(--_accent-strong); letter-spacing: -0.01em; }
.linked-at { font-size: 15px; color: var(--_muted); font-variant-numeric: tabular-nums; }

.pairing { position: absolute; inset: 0; display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 14px; padding: 20px; text-align: center; transition: opacity .25s ease, filter .25s ease; }
.pairing-for { margin: 0; font-size: 15px; color: var(--_muted); }
.pairing-code {
  display: block; font: 700 clamp(26px, 10vw, 40px)/1.15 ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  letter-spacing: .08em; color: var(--_text); user-select: all; -webkit-user-select: all; white-space: nowrap;
}
.phone-form { position: absolute; inset: 0; display: flex; flex-direction: column; justify-content: center; gap: 10px; padding: 22px; }
.phone-form label { font-size: 15px; font-weight: 600; }
.phone-form input {
  width: 100%; padding: 11px 12px; border: 1px solid #c4ccd4; border-radius: 10px; background: var(--_surface); color: var(--_text);
  font: inherit; font-size: 18px; letter-spacing: .02em; font-variant-numeric: tabular-nums;
}
.phone-form input:focus-visible { outline: 3px solid var(--_focus); outline-offset: 1px; border-color: var(--_accent); }
.phone-form input[aria-invalid="true"] { border-color: var(--_urgent); }
.phone-help { margin: 0; font-size: 13.5px; color: var(--_muted); }
.phone-error { margin: 0; font-size: 14px; color: var(--_urgent); }
.phone-error:empty { display: none; }

.readout { text-align: center; }
.status { margin: 0; min-height: 1.5em; font-size: 18px; font-weight: 650; line-height: 1.5; }
.status-expired, .status-failed { color: var(--_urgent); }
.status-offline { color: var(--_warn); }
.status-linked { color: var(--_accent-strong); }
.meta { display: flex; align-items: center; justify-content: center; gap: 10px; min-height: 34px; margin-top: 6px; font-size: 15px; color: var(--_muted); }
.attempt:empty { display: none; }
.countdown {
  display: inline-block; min-width: 4.2em; padding: 2px 10px; border-radius: 8px; background: #eef1f4; color: var(--_text);
  font-size: 18px; font-weight: 700; font-variant-numeric: tabular-nums; letter-spacing: .02em; transition: color .2s, background-color .2s;
}
.countdown.urgent { color: var(--_urgent); background: var(--_urgent-soft); }
.countdown.stale { color: #5f6973; }
.countdown.is-blank { visibility: hidden; }
.hide-meta .meta { display: none; }

.warning, .message { margin: 12px 0 0; padding: 10px 12px; border-radius: 10px; font-size: 14.5px; line-height: 1.45; }
.warning { background: var(--_warn-soft); border: 1px solid #efd08e; color: #5f3d00; }
.message { background: var(--_urgent-soft); border: 1px solid #f4c4c7; color: #8c1b21; }
.message.is-plain { background: var(--_soft); border-color: var(--_line); color: var(--_text); }

.actions { display: flex; flex-direction: column; align-items: center; gap: 8px; margin-top: 14px; }
.btn {
  appearance: none; min-height: 44px; padding: 10px 18px; border: 1px solid #cfd6dd; border-radius: 10px; background: var(--_surface);
  color: var(--_text); font: inherit; font-weight: 600; line-height: 1.3; cursor: pointer; text-decoration: none;
  display: inline-flex; align-items: center; justify-content: center;
}
.btn:hover { background: var(--_soft); }
.btn:focus-visible, .linklike:focus-visible { outline: 3px solid var(--_focus); outline-offset: 2px; }
.btn-primary { width: 100%; max-width: var(--_size); background: var(--_accent); border-color: var(--_accent); color: #fff; }
.btn-primary:hover { background: var(--_accent-strong); border-color: var(--_accent-strong); }
.btn-primary.btn-danger { background: var(--_urgent); border-color: var(--_urgent); }
.btn-primary.btn-danger:hover { background: #951c22; }
.btn:disabled, .btn:disabled:hover { background: #e8ecef; border-color: #e8ecef; color: #5f6973; cursor: not-allowed; }
.btn.is-hidden { visibility: hidden; }
.hide-refresh .refresh { display: none; }
.btn-small { min-height: 34px; padding: 5px 12px; font-size: 14px; }
.pulse { animation: pulse 1.6s ease-out infinite; }
.btn-danger.pulse { animation-name: pulse-danger; }
.hint { max-width: var(--_size); margin: 0; font-size: 14px; color: var(--_muted); text-align: center; }
.hint:empty { display: none; }
.switches { display: flex; flex-wrap: wrap; justify-content: center; gap: 6px 16px; margin-top: 12px; font-size: 14.5px; }
.linklike { padding: 0; border: 0; background: none; color: var(--_accent-strong); font: inherit; text-decoration: underline; cursor: pointer; }

.steps { margin: 16px 0 0; padding: 12px 16px 12px 34px; background: var(--_soft); border-radius: 12px; font-size: 14px; color: #3a434c; transition: opacity .2s; }
.steps li + li { margin-top: 3px; }
.steps.is-muted { opacity: .75; }

@keyframes spin { to { transform: rotate(360deg); } }
@keyframes pulse { 0% { box-shadow: 0 0 0 0 rgba(20, 121, 95, .55); } 70% { box-shadow: 0 0 0 14px rgba(20, 121, 95, 0); } 100% { box-shadow: 0 0 0 0 rgba(20, 121, 95, 0); } }
@keyframes pulse-danger { 0% { box-shadow: 0 0 0 0 rgba(180, 35, 42, .5); } 70% { box-shadow: 0 0 0 14px rgba(180, 35, 42, 0); } 100% { box-shadow: 0 0 0 0 rgba(180, 35, 42, 0); } }
@media (prefers-reduced-motion: reduce) {
  .pulse, .btn-danger.pulse { animation: none; outline: 3px solid var(--_focus); outline-offset: 2px; }
  .spinner, .icon-spin { animation-duration: 2.5s; }
}
`;

const HTML = `
<div class="frame" part="frame">
  <div id="qr-box" class="box" part="box">
    <img id="qr" class="qr" part="qr" alt="" hidden>
    <div id="pairing" class="pairing" part="pairing" hidden>
      <p id="pairing-for" class="pairing-for"></p>
      <output id="pairing-code" class="pairing-code" part="pairing-code" aria-label="Pairing code"></output>
      <button id="copy" type="button" class="btn btn-small" part="button copy">Copy</button>
    </div>
    <form id="phone-form" class="phone-form" part="phone-form" novalidate hidden>
      <label for="phone">Your WhatsApp number</label>
      <input id="phone" name="phone" type="tel" inputmode="tel" autocomplete="tel" spellcheck="false" part="phone-input"
             placeholder="+55 11 98765 4321" aria-describedby="phone-help phone-error">
      <p id="phone-help" class="phone-help">With the country code: 8 to 15 digits.</p>
      <p id="phone-error" class="phone-error" role="alert"></p>
      <button id="phone-submit" type="submit" class="btn btn-primary" part="button phone-submit">Get a code</button>
    </form>
    <div id="placeholder" class="placeholder" aria-hidden="true"><span class="spinner"></span></div>
    <div id="linked" class="linked" part="linked" hidden>
      <svg class="linked-icon" viewBox="0 0 48 48" aria-hidden="true" focusable="false"><circle cx="24" cy="24" r="22"/><path d="M14 24.5l7 7 13-14"/></svg>
      <strong class="linked-title">Linked</strong>
      <span id="linked-at" class="linked-at"></span>
    </div>
    <div id="overlay" class="overlay" part="overlay" hidden>
      <span id="overlay-icon" class="overlay-icon" aria-hidden="true"></span>
      <strong id="overlay-title" class="overlay-title"></strong>
      <span id="overlay-detail" class="overlay-detail"></span>
    </div>
  </div>
</div>
<div class="readout">
  <p id="status" class="status" part="status" role="status"></p>
  <div class="meta">
    <span id="attempt" class="attempt" part="attempt"></span>
    <span class="countdown-region" aria-live="polite" aria-atomic="true">
      <span id="countdown" class="countdown" part="countdown" role="timer" aria-hidden="true">--:--</span>
      <span id="countdown-sr" class="sr-only"></span>
    </span>
  </div>
</div>
<div class="notices">
  <p id="warning" class="warning" part="warning" hidden></p>
  <p id="message" class="message" part="message" hidden></p>
</div>
<div class="actions">
  <button id="refresh" type="button" class="btn btn-primary refresh is-hidden" part="button refresh">Request new QR code</button>
  <p id="hint" class="hint" part="hint" aria-live="polite"></p>
</div>
<div class="switches">
  <button id="switch" type="button" class="linklike" part="switch">Link with phone number instead</button>
  <button id="other-number" type="button" class="linklike" part="switch" hidden>Use another number</button>
</div>
<ol id="steps" class="steps" part="steps">
  <li>Open <strong>WhatsApp</strong> on your phone.</li>
  <li>Tap <strong>Settings</strong> (or the menu) → <strong>Linked devices</strong>.</li>
  <li>Tap <strong>Link a device</strong> and point your phone at this code.</li>
</ol>
<ol id="phone-steps" class="steps" part="steps" hidden>
  <li>Open <strong>WhatsApp</strong> on your phone → <strong>Linked devices</strong> → <strong>Link a device</strong>.</li>
  <li>Tap <strong>Link with phone number instead</strong>.</li>
  <li>Enter the code shown here.</li>
</ol>
`;

let sheet = null;
/** One stylesheet object shared by every instance. */
function styles() {
  if (!sheet) {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
  }
  return sheet;
}

const IMAGE_VIEWS = new Set(["live", "expired", "regenerating", "offline", "failed"]);
const ATTEMPT_VIEWS = new Set(["live", "expired", "regenerating", "waiting", "failed", "offline"]);
const EXPIRED_VIEWS = new Set(["expired", "failed"]);

function seconds(n) {
  const m = Math.floor(n / 60), s = n % 60;
  const parts = [];
  if (m) parts.push(m + (m === 1 ? " minute" : " minutes"));
  if (s || !m) parts.push(s + (s === 1 ? " second" : " seconds"));
  return parts.join(" ");
}

function clockTime(iso) {
  const d = new Date(iso);
  return isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * The element. Attributes: session (required), token, gateway (default: where this script came from).
 * Properties: view, role, connection, state (the session's, see qrgate.js), mode ("qr"|"phone").
 * Methods: refresh(), requestPairingCode(phone), showPhone(), showQR().
 * Events (bubbling, composed): "qrgate-change" {view, connection, role, mode}; "qrgate-error" {code, reason,
 * retryAfter?}; "qrgate-linked" {connectedAt}.
 */
export class QRGateLink extends HTMLElement {
  static get observedAttributes() { return ["session", "token", "gateway"]; }

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.adoptedStyleSheets = [styles()];
    const tpl = document.createElement("template");
    tpl.innerHTML = HTML;
    root.appendChild(tpl.content);
    /** @type {Record<string, HTMLElement>} */
    this.el = {};
    for (const node of root.querySelectorAll("[id]")) this.el[node.id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = node;
    this.gate = null;
    this.session = null;
    this.offs = [];
    this.mode = "qr";
    this.pairingAsked = false; // this element asked a code (waiting for it)
    this.phoneError = "";
    this.refreshBusy = false;
    this.pairBusy = false;
    this.retryUntil = 0;
    this.pairRetryUntil = 0;
    this.notice = null;
    this.copied = 0;
    this.announced = null;
    this.lastChange = "";
    this.view = "connecting";
    this.restartQueued = false;
    this.timer = null;
    this.el.refresh.addEventListener("click", () => this.onRefresh());
    this.el.switch.addEventListener("click", () => (this.mode === "qr" ? this.showPhone() : this.showQR()));
    this.el.otherNumber.addEventListener("click", () => { this.pairingAsked = false; this.forceForm = true; this.render(); this.el.phone.focus(); });
    this.el.phoneForm.addEventListener("submit", (ev) => { ev.preventDefault(); this.onPhoneSubmit(); });
    this.el.phone.addEventListener("input", () => { if (this.phoneError) { this.phoneError = ""; this.render(); } });
    this.el.copy.addEventListener("click", () => this.onCopy());
    this.el.qr.addEventListener("load", () => this.sizeQR());
    this.resize = new ResizeObserver(() => this.sizeQR());
  }

  connectedCallback() {
    this.resize.observe(this.el.qrBox);
    this.timer = setInterval(() => this.render(), 250);
    this.queueRestart();
  }

  disconnectedCallback() {
    this.resize.disconnect();
    clearInterval(this.timer);
    this.stop();
  }

  attributeChangedCallback(name, before, after) {
    if (before === after || !this.isConnected) return;
    if (name === "token" && this.session && !this.restartQueued) {
      this.session.setToken(after || null);
      return;
    }
    this.queueRestart();
  }

  /** Attributes set one after the other in the same task start one connection, not several. */
  queueRestart() {
    if (this.restartQueued) return;
    this.restartQueued = true;
    queueMicrotask(() => {
      this.restartQueued = false;
      if (this.isConnected) this.start();
    });
  }

  get role() { return this.session ? this.session.role : null; }
  get connection() { return this.gate ? this.gate.connection : "connecting"; }
  get state() { return this.session ? this.session.state : null; }

  start() {
    this.stop();
    const id = this.getAttribute("session") || "";
    this.sessionId = id;
    this.invalid = !SESSION_ID.test(id);
    this.mode = "qr";
    this.modeChosen = false;
    this.pairingAsked = false;
    this.forceForm = false;
    this.lastCode = null;
    if (this.invalid) { this.render(); return; }
    this.gate = QRGate.connect(this.getAttribute("gateway") || SCRIPT_ORIGIN, { token: this.getAttribute("token") || null });
    this.session = this.gate.session(id, { formats: ["svg"] });
    const s = this.session;
    this.offs.push(
      this.gate.on("connection", (c) => {
        if (c.state !== "online") { this.refreshBusy = false; this.pairBusy = false; }
        this.render();
      }),
      s.on("status", (st) => {
        // A session an operator started with a phone number opens on its code.
        if (!this.modeChosen && st.pairingPhone && this.mode === "qr") this.mode = "phone";
        this.render();
      }),
      s.on("countdown", () => this.render()),
      s.on("pairing_code", (e) => { this.pairingAsked = false; this.lastCode = e.code; this.render(); }),
      s.on("connected", (e) => { this.pairingAsked = false; this.notice = null; this.dispatch("qrgate-linked", { connectedAt: e.connectedAt }); }),
      s.on("qr", () => { if (this.notice && this.notice.kind === "refresh") this.notice = null; }),
      s.on("error", (e) => {
        if (e.code === "failed" || e.code === "upstream_error") return;
        this.dispatch("qrgate-error", { code: e.code, reason: e.message });
      }),
    );
    this.render();
  }

  stop() {
    for (const off of this.offs) off();
    this.offs = [];
    if (this.gate) this.gate.close();
    this.gate = this.session = null;
  }

  dispatch(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  /** Shows "Link with phone number instead". */
  showPhone() {
    this.mode = "phone";
    this.modeChosen = true;
    this.render();
    if (!this.el.phoneForm.hidden) this.el.phone.focus();
  }

  /** Back to the QR code. */
  showQR() {
    this.mode = "qr";
    this.modeChosen = true;
    this.forceForm = false;
    this.render();
  }

  /** Forces a new code (admins). */
  refresh() { return this.onRefresh(); }

  /** Asks a pairing code for `phone` (digits with country code) and shows the phone view. */
  requestPairingCode(phone) {
    this.mode = "phone";
    this.modeChosen = true;
    this.el.phone.value = phone;
    return this.onPhoneSubmit();
  }

  notify(kind, text, ms) {
    this.notice = { kind, text, until: Date.now() + (ms || 8000) };
  }

  async onRefresh() {
    if (!this.session || this.role !== "admin") return;
    this.refreshBusy = true;
    this.notice = null;
    this.render();
    try {
      const r = await this.session.refresh();
      if (r.alreadyConnected) this.notify("info", r.message || "Session already connected. No QR needed.");
      else this.notify("refresh", "New QR code requested.", 15000);
    } catch (e) {
      if (e.code === "rate_limited") {
        const wait = Math.max(1, e.retryAfter || 1) * 1000;
        this.retryUntil = Date.now() + wait;
        this.notify("info", "A new code was requested moments ago.", wait);
      } else {
        this.notify("info", e.message);
        if (e.code === "forbidden") this.dispatch("qrgate-error", { code: e.code, reason: e.message });
      }
    } finally {
      this.refreshBusy = false;
      this.render();
    }
  }

  async onPhoneSubmit() {
    if (!this.session) return;
    const digits = phoneDigits(this.el.phone.value);
    if (!digits) {
      this.phoneError = "Enter the number with its country code: 8 to 15 digits, for example +55 11 98765 4321.";
      this.render();
      this.el.phone.focus();
      return;
    }
    this.phoneError = "";
    this.pairBusy = true;
    this.render();
    try {
      const r = await this.session.requestPairingCode(digits);
      if (r.alreadyConnected) this.notify("info", r.message || "Session already connected. No QR needed.");
      else { this.pairingAsked = true; this.forceForm = false; }
    } catch (e) {
      if (e.code === "rate_limited") {
        const wait = Math.max(1, e.retryAfter || 1) * 1000;
        this.pairRetryUntil = Date.now() + wait;
        this.phoneError = "A code was requested moments ago.";
      } else if (e.code === "invalid_message") {
        this.phoneError = "The gateway did not accept this number: " + e.message;
      } else {
        this.phoneError = e.message;
      }
    } finally {
      this.pairBusy = false;
      this.render();
    }
  }

  async onCopy() {
    const code = this.session && this.session.model.state.pairingCode;
    if (!code) return;
    try {
      await navigator.clipboard.writeText(code);
      this.copied = Date.now() + 2000;
    } catch (e) {
      // No clipboard (permissions, an old browser): select the code so a long-press or Ctrl+C copies it.
      const range = document.createRange();
      range.selectNodeContents(this.el.pairingCode);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      this.copied = -(Date.now() + 4000);
    }
    this.render();
  }

  /** Sizes the image so each QR module is a whole number of device pixels when that fills most of the box. */
  sizeQR() {
    const box = this.el.qrBox.clientWidth;
    const svg = this.session && this.session.model.state.qrSvg;
    const m = svg && /viewBox="0 0 (\d+) \d+"/.exec(svg);
    let px = box;
    if (m && box > 0) {
      const dpr = window.devicePixelRatio || 1;
      const modules = parseInt(m[1], 10);
      const scale = Math.floor((box * dpr) / modules);
      const crisp = (scale * modules) / dpr;
      if (scale >= 1 && crisp >= box * 0.85) px = crisp;
    }
    this.el.qr.style.width = px + "px";
    this.el.qr.style.height = px + "px";
  }

  /** What the element shows: one name per screen. */
  computeView(st) {
    if (this.invalid) return "unknown";
    const s = this.session;
    if (s && s.refused) return s.refused.code === "unauthorized" || s.refused.code === "forbidden" ? "locked" : "unknown";
    const conn = this.connection;
    if (!st || st.status === null) return conn === "reconnecting" ? "offline" : "connecting";
    if (conn !== "online" || !st.synced) return "offline";
    const phase = phaseOf(st, this.gate.serverNow());
    if (phase === "connected") return "linked";
    if (this.mode === "phone" && st.status === "pending" && (this.forceForm || (!st.pairingPhone && !this.pairingAsked))) return "phone";
    if (this.mode === "phone" && phase === "live" && !st.pairingCode) return "waiting";
    return phase;
  }

  render() {
    const st = this.state;
    const v = this.computeView(st);
    const el = this.el;
    const phone = this.mode === "phone";
    const now = this.gate ? this.gate.serverNow() : Date.now();
    const left = st ? remainingOf(st, now) : 0;
    const admin = this.role === "admin";
    const regen = st && st.regenerating;
    const expiredBackdrop = v === "expired" || (v === "regenerating" && !regen.requested) || v === "failed";
    if (v !== this.view) console.debug("qrgate view:", v, "status:", st && st.status, "conn:", this.connection, "seq:", st && st.seq);
    this.view = v;
    this.dataset.view = v;

    // The box: QR image or pairing code, the number form, placeholder, linked panel, overlay. Its size never changes.
    const src = st && st.qrSrc;
    if (src) { if (el.qr.getAttribute("src") !== src) el.qr.src = src; }
    else if (el.qr.hasAttribute("src")) el.qr.removeAttribute("src");
    const code = st && (st.pairingCode || (["expired", "regenerating", "failed", "offline"].includes(v) ? this.lastCode : null));
    const showCode = phone && !!code && IMAGE_VIEWS.has(v);
    const showImage = !phone && !!src && IMAGE_VIEWS.has(v);
    el.qr.hidden = !showImage;
    el.qr.alt = v === "live" ? "QR code to scan with WhatsApp" : "Expired or not live QR code";
    el.qr.classList.toggle("is-dim", showImage && v !== "live");
    el.pairing.hidden = !showCode;
    el.pairing.classList.toggle("is-dim", showCode && v !== "live");
    if (showCode) {
      setText(el.pairingCode, code);
      setText(el.pairingFor, st.pairingPhone ? "Code for " + st.pairingPhone : "Your code");
      const copied = this.copied > Date.now() ? "Copied" : -this.copied > Date.now() ? "Press Ctrl+C to copy" : "Copy";
      setText(el.copy, copied);
      el.copy.disabled = v !== "live";
    }
    el.phoneForm.hidden = v !== "phone";
    if (v === "phone") {
      const wait = Math.ceil((this.pairRetryUntil - Date.now()) / 1000);
      setText(el.phoneError, this.phoneError);
      el.phone.setAttribute("aria-invalid", String(!!this.phoneError && !/moments ago/.test(this.phoneError)));
      setText(el.phoneSubmit, wait > 0 ? "Try again in " + wait + "s" : this.pairBusy ? "Requesting…" : "Get a code");
      el.phoneSubmit.disabled = this.pairBusy || wait > 0 || this.connection !== "online";
    }
    el.placeholder.hidden = showImage || showCode || ["phone", "linked", "unknown", "locked", "disconnected", "idle", "failed"].includes(v);
    el.linked.hidden = v !== "linked";
    if (v === "linked") setText(el.linkedAt, st.connectedAt ? "at " + clockTime(st.connectedAt) : "");

    const what = phone ? "Code" : "QR code";
    let ov = null; // [icon, title, detail]
    switch (v) {
      case "offline": ov = ["spin", "Reconnecting…", "This code is not live until the page is back in touch with the gateway."]; break;
      case "expired": ov = ["clock", what + " expired", st.qrGone && st.attempt >= st.maxAttempts ? "That was the last attempt." : "A new code is on its way."]; break;
      case "regenerating":
        ov = regen.requested ? ["spin", phone ? "Generating your code…" : "Generating a new QR code…", ""]
          : ["spin", what + " expired", "A new one is being generated…"];
        break;
      case "waiting": ov = ["spin", phone ? "Waiting for your code…" : "Waiting for the QR code…", ""]; break;
      case "failed": ov = ["stop", what + " expired", "No attempts left"]; break;
      case "disconnected": ov = ["stop", "Disconnected", "The phone unlinked this session."]; break;
      case "idle": ov = ["clock", "Not started", ""]; break;
      case "unknown": ov = ["stop", "Unknown session", ""]; break;
      case "locked": ov = ["lock", "Access key needed", this.lockedDetail()]; break;
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

    const words = {
      connecting: "Connecting to the gateway…",
      offline: "Reconnecting…",
      waiting: phone ? "Waiting for your code…" : "Waiting for the first QR code…",
      live: phone ? "Enter this code in WhatsApp" : "Scan this code with WhatsApp",
      expired: what + " expired",
      regenerating: regen ? (phone && regen.requested ? "Generating your code…" : regen.message) : "",
      failed: "Validation failed",
      linked: "WhatsApp linked successfully",
      disconnected: "Disconnected",
      idle: "This session has not started yet",
      unknown: "Unknown session",
      locked: "Access key needed",
      phone: "Link with your phone number",
    };
    setText(el.status, words[v]);
    el.status.className = "status status-" + v;

    setText(el.attempt, ATTEMPT_VIEWS.has(v) && st ? this.attemptText(st) : "");
    let cd = "";
    if (v === "live") cd = mmss(left);
    else if (EXPIRED_VIEWS.has(v) || v === "regenerating") cd = "00:00";
    else if (v === "offline" || v === "waiting" || v === "connecting") cd = "--:--";
    setText(el.countdown, cd);
    el.countdown.classList.toggle("urgent", (v === "live" && left <= URGENT_SECONDS) || EXPIRED_VIEWS.has(v) || (v === "regenerating" && !regen.requested));
    el.countdown.classList.toggle("stale", v === "offline" || v === "waiting" || v === "connecting");
    el.countdown.classList.toggle("is-blank", cd === "");
    el.countdown.parentElement.parentElement.hidden = v === "locked" || v === "unknown" || v === "phone";
    this.announce(v, left, st);

    const warn = st && st.upstreamError && ["live", "expired", "regenerating", "waiting"].includes(v)
      ? (src && v === "live"
        ? "Trouble reaching WhatsApp (" + st.upstreamError + "). The code shown stays valid until its countdown ends."
        : "Trouble reaching WhatsApp (" + st.upstreamError + "). Retrying…")
      : "";
    el.warning.hidden = !warn;
    setText(el.warning, warn);
    let message = "";
    if (v === "failed") message = st.failure || "QR code generation failed.";
    else if (v === "disconnected") message = admin ? "Request a new QR code to link a phone again." : "Ask whoever sent you this link for a new one.";
    else if (v === "unknown") message = this.unknownReason();
    el.message.hidden = !message;
    el.message.classList.toggle("is-plain", v === "disconnected");
    setText(el.message, message);
    if (this.notice && Date.now() > this.notice.until) this.notice = null;
    let hint = this.notice ? this.notice.text : "";
    if (!hint && v === "failed" && !admin) hint = "Ask whoever sent you this link for a new one.";
    setText(el.hint, hint);

    this.renderButton(v, admin, expiredBackdrop);
    const pending = !!st && st.status === "pending" && !["unknown", "locked", "linked"].includes(v);
    el.switch.hidden = !pending;
    setText(el.switch, phone ? "Scan a QR code instead" : "Link with phone number instead");
    el.otherNumber.hidden = !phone || !pending || v === "phone";
    el.switch.parentElement.hidden = el.switch.hidden && el.otherNumber.hidden;
    el.refresh.parentElement.hidden = el.refresh.hidden && !el.hint.textContent;
    const steps = !["linked", "unknown", "locked"].includes(v);
    el.steps.hidden = phone || !steps;
    el.steps.classList.toggle("is-muted", v !== "live");
    el.phoneSteps.hidden = !phone || !steps;
    el.phoneSteps.classList.toggle("is-muted", v !== "live");

    const change = [v, this.connection, this.role, this.mode].join("|");
    if (change !== this.lastChange) {
      this.lastChange = change;
      this.dispatch("qrgate-change", { view: v, connection: this.connection, role: this.role, mode: this.mode });
    }
  }

  renderButton(v, admin, expiredBackdrop) {
    const b = this.el.refresh;
    const wait = Math.ceil((this.retryUntil - Date.now()) / 1000);
    const visible = admin && v !== "unknown" && v !== "locked" && v !== "phone";
    let label = v === "failed" ? "Start again" : this.mode === "phone" ? "Request a new code" : "Request new QR code";
    if (wait > 0) label = "Try again in " + wait + "s";
    else if (this.refreshBusy) label = "Requesting…";
    setText(b, label);
    b.classList.toggle("is-hidden", !visible);
    b.hidden = !admin; // not even its room for those who may not use it
    b.disabled = !visible || this.connection !== "online" || this.refreshBusy || wait > 0;
    b.classList.toggle("pulse", visible && expiredBackdrop && !b.disabled);
    b.classList.toggle("btn-danger", v === "failed");
  }

  attemptText(st) {
    if (st.maxAttempts === null || st.maxAttempts === undefined) return "";
    const k = st.regenerating ? st.regenerating.attempt : st.attempt;
    return k > 0 ? "Attempt " + k + " of " + st.maxAttempts : "First code";
  }

  lockedDetail() {
    const r = this.session && this.session.refused;
    if (r && /expired/.test(r.reason)) return "This link has expired. Ask for a new one.";
    return this.getAttribute("token") ? "This access key was not accepted." : "This session needs an access key.";
  }

  unknownReason() {
    if (this.invalid) return this.sessionId ? "“" + this.sessionId + "” is not a valid session id." : "No session given.";
    return "There is no session “" + this.sessionId + "” on this gateway.";
  }

  /** The polite live region speaks only when the countdown crosses a threshold. */
  announce(v, left, st) {
    let key = v, text = "";
    if (v === "live") {
      key = (left <= URGENT_SECONDS ? "urgent:" : "live:") + st.qrExpiresAt;
      text = left <= URGENT_SECONDS ? seconds(left) + " left to " + (this.mode === "phone" ? "enter this code" : "scan this code")
        : (this.mode === "phone" ? "New code, valid for " : "New QR code, valid for ") + seconds(left);
    } else if (v === "expired" || (v === "regenerating" && !st.regenerating.requested)) {
      key = "expired:" + st.qrExpiresAt;
      text = this.mode === "phone" ? "Code expired" : "QR code expired";
    }
    if (key !== this.announced) {
      this.announced = key;
      setText(this.el.countdownSr, text);
    }
  }
}

if (!customElements.get("qrgate-link")) customElements.define("qrgate-link", QRGateLink);
