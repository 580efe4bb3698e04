/* The link page: /?session=ID[&token=KEY] (no session: "demo"). The page is the <qrgate-link> element
 * (qrgate-link.js, on the qrgate.js client); this file only fills the frame around it: the session line, the
 * connection pill, the role badge, and the forms for an access key or another session id, from the element's
 * qrgate-change and qrgate-error events.
 *
 * A key or link the gateway refuses is forgotten and the element tries without one (a gateway in demo mode
 * allows that); refused again, the page asks for a key.
 */
import "./qrgate-link.js";
import { SESSION_ID } from "./qrgate.js";
import { param, takeToken, storeToken, setText, tokenReason, tokenForm, showConnection } from "./page.js";

const $ = (id) => document.getElementById(id);
const link = $("link");
const session = param("session") || "demo";
let token = takeToken();
let refusal = null; // why the last key or link was refused

const keyForm = tokenForm((typed) => {
  token = typed;
  $("session-form").hidden = true;
  link.setAttribute("token", typed);
});

function showSessionForm(reason) {
  keyForm.hide();
  $("session-form").hidden = false;
  setText($("session-reason"), reason || "");
  $("session-input").value = SESSION_ID.test(session) && !reason ? session : "";
}

link.addEventListener("qrgate-change", (ev) => {
  const { view, connection, role } = ev.detail;
  $("app").dataset.state = view;
  document.body.dataset.state = view;
  showConnection(connection);
  $("role-badge").hidden = role !== "admin";
});

link.addEventListener("qrgate-error", (ev) => {
  const { code, reason } = ev.detail;
  switch (code) {
    case "unauthorized":
      if (token) {
        token = null;
        storeToken(null);
        refusal = reason || "key not recognised";
        keyForm.show(tokenReason(refusal) + " You can keep watching without it, or enter another key.");
        link.removeAttribute("token");
      } else {
        keyForm.show(refusal ? tokenReason(refusal) + " Enter an access key, or ask for a new link."
          : "This session needs an access key, or a link that carries one.");
      }
      break;
    case "forbidden":
      keyForm.show("Requesting a new QR code needs an admin key.");
      break;
    case "unknown_session":
    case "invalid_message":
      showSessionForm("There is no session “" + session + "” on this gateway. Enter the id you were given.");
      break;
  }
});

$("other-session").addEventListener("click", () => { showSessionForm(""); $("session-input").focus(); });
$("session-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $("session-input").value.trim();
  if (id) location.assign("/?session=" + encodeURIComponent(id));
});

setText($("session-id"), session);
if (!SESSION_ID.test(session)) showSessionForm("“" + session + "” is not a valid session id. Enter the id you were given.");
// Set in one task: the element starts one connection with all of them.
link.setAttribute("gateway", location.origin);
if (token) link.setAttribute("token", token);
link.setAttribute("session", session);
