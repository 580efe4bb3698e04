// Peer for the fan-out benchmark: Node + ws (Debian node-ws). WebSocket at /ws; POST /publish sends one
// message carrying the send time to every client, PEER_MESSAGE_BYTES long (default 3000; Benchmarks/run passes
// the size of QRGate's frame in the same run). Prints "listening on http://127.0.0.1:PORT".
const http = require("http");
const { WebSocketServer } = require("ws");
// {"action":"event","timestamp":1234567890123,"pad":""} is 52 bytes.
const pad = "x".repeat(Math.max(0, Number(process.env.PEER_MESSAGE_BYTES || 3000) - 52));
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
