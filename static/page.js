/* What the link page (app.js) and the dashboard (admin.js) share around the client: the access key of this
 * tab, its form, and the connection pill. ES module. */

/** Reads `name` from the query string, or null. */
export function param(name) {
  return new URLSearchParams(location.search).get(name);
}

/** The access key: `?token=` (then removed from the address bar and kept for this tab) or the tab's stored one. */
export function takeToken() {
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

/** Keeps (or, with null, forgets) the key for this tab. */
export function storeToken(token) {
  try {
    if (token) sessionStorage.setItem("qrgate.token", token);
    else sessionStorage.removeItem("qrgate.token");
  } catch (e) { /* storage may be disabled: the key then lives only in memory */ }
}

/** Sets a node's text only when it changes (no needless layout). */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Why a key or link was refused, in words. */
export function tokenReason(reason) {
  return /expired/.test(reason || "") ? "Your access link has expired." : "That access key was not recognised.";
}

/**
 * The "access key" form (#token-form, #token-input, #token-reason, opened by #enter-key): `show(reason)` opens it;
 * a submitted key is stored for this tab and handed to `accept`.
 * @param {(token: string) => void} accept
 */
export function tokenForm(accept) {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const reason = document.getElementById("token-reason");
  const show = (text) => {
    const other = document.getElementById("session-form");
    if (other) other.hidden = true;
    form.hidden = false;
    setText(reason, text || "");
  };
  document.getElementById("enter-key").addEventListener("click", () => { show(""); input.focus(); });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    storeToken(token);
    input.value = "";
    form.hidden = true;
    accept(token);
  });
  return { show, hide: () => { form.hidden = true; } };
}

/** The pill in the top bar: "connecting", "online", "reconnecting" (or "closed"). */
export function showConnection(state) {
  const pill = document.getElementById("conn");
  pill.className = "conn is-" + state;
  setText(document.getElementById("conn-text"), state === "online" ? "Live" : state === "reconnecting" ? "Reconnecting…" : "Connecting…");
}
