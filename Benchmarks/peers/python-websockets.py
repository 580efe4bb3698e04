"""Peer for the fan-out benchmark: Python websockets. WebSocket at /ws; GET /publish sends one message carrying
the send time to every client, PEER_MESSAGE_BYTES long (default 3000; Benchmarks/run passes QRGate's frame size) (websockets serves only GET, so the trigger is a GET)."""
import asyncio
import http
import json
import os
import sys
import time

from websockets.asyncio.server import broadcast, serve

# json.dumps({"action": "event", "timestamp": 1234567890123, "pad": ""}) is 56 bytes.
PAD = "x" * max(0, int(os.environ.get("PEER_MESSAGE_BYTES", "3000")) - 56)
clients = set()


async def handler(ws):
    clients.add(ws)
    try:
        await ws.wait_closed()
    finally:
        clients.discard(ws)


def process_request(connection, request):
    if request.path == "/publish":
        broadcast(clients, json.dumps({"action": "event", "timestamp": int(time.time() * 1000), "pad": PAD}))
        return connection.respond(http.HTTPStatus.OK, f'{{"sent":{len(clients)}}}\n')
    return None


async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0, process_request=process_request,
                     compression=None, max_queue=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.get_running_loop().create_future()

asyncio.run(main())
