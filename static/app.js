"use strict";
(function () {
  const status = document.getElementById("status");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + "/ws", "qrgate.v1");
  ws.addEventListener("message", (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.action === "hello") status.textContent = "Connected to " + msg.server + " " + msg.version;
  });
  ws.addEventListener("close", () => { status.textContent = "Disconnected"; });
})();
