// Peer for the fan-out benchmark: Node + ws (Debian node-ws). WebSocket at /ws; POST /publish sends one
// 3000-byte message carrying the send time to every client. Prints "listening on http://127.0.0.1:PORT".
const http = require("http");
const { WebSocketServer } = require("ws");
const pad = "x".repeat(2940);
const server = http.createServer((req, res) => {
  if (req.url !== "/publish") { res.writeHead(404); return res.end(); }
  const msg = JSON.stringify({ action: "event", timestamp: Date.now(), pad });
  for (const c of wss.clients) c.send(msg);
  res.writeHead(200, { "content-type": "application/json" });
  res.end('{"sent":' + wss.clients.size + "}");
});
const wss = new WebSocketServer({ server, path: "/ws", perMessageDeflate: false });
server.listen(Number(process.argv[2] || 0), "127.0.0.1", () => {
  console.log("listening on http://127.0.0.1:" + server.address().port);
});
