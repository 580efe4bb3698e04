"""Peer for the fan-out benchmark: pushpin (Debian) in front of this GRIP backend.

pushpin turns each client WebSocket into WebSocket-over-HTTP requests to this backend, which subscribes the
connection to channel "bench"; GET /publish here publishes one message (PEER_MESSAGE_BYTES long, default 3000) carrying the send time through
pushpin's publish endpoint, and pushpin fans it out. Usage: pushpin-backend.py BACKEND_PORT PUBLISH_PORT
"""
import http.client
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# json.dumps({"action": "event", "timestamp": 1234567890123, "pad": ""}) is 56 bytes.
PAD = "x" * max(0, int(os.environ.get("PEER_MESSAGE_BYTES", "3000")) - 56)
SUBSCRIBE = 'c:{"type": "subscribe", "channel": "bench"}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, body: bytes, ctype: str, extra=()):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # WebSocket-over-HTTP from pushpin
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        out = b""
        if body.startswith(b"OPEN"):
            sub = SUBSCRIBE.encode()
            out = b"OPEN\r\nTEXT " + format(len(sub), "x").encode() + b"\r\n" + sub + b"\r\n"
        self.reply(out, "application/websocket-events", [("Sec-WebSocket-Extensions", "grip")])

    def do_GET(self):  # the benchmark's trigger
        if self.path != "/publish":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        msg = json.dumps({"action": "event", "timestamp": int(time.time() * 1000), "pad": PAD})
        items = json.dumps({"items": [{"channel": "bench", "formats": {"ws-message": {"content": msg}}}]})
        c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]), timeout=30)
        c.request("POST", "/publish/", items, {"Content-Type": "application/json"})
        c.getresponse().read()
        self.reply(b'{"published":true}', "application/json")


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
