#!/usr/bin/env python3
"""Bus throughput of a QRGate cluster: N pending sessions spread over the nodes; every session is refreshed at
once (an admin `refresh` op over one WebSocket per node, each session's sent to a random node, so most orders
cross the bus too, and none waits for the one before); a firehose subscriber ("*") on every node counts the
sessions' new `qr_generated` events. Reports, per node and in all, how long it took until
every node had shown every session's new QR, the events per second that makes, and the delivery latency
(receipt - the event's timestamp, stamped by the node that runs the session; same-machine clocks).

usage: cluster-bus.py --node http://127.0.0.1:P1 --node … --sessions 1000 [--concurrency 64]
"""
import argparse
import asyncio
import json
import random
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import websockets


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


def pct(xs, p):
    return round(xs[min(len(xs) - 1, int(len(xs) * p / 100))], 1) if xs else None


MISSING = {}


async def firehose(node, ids, counts, latencies, done, ready):
    ws_url = node.replace("http://", "ws://") + "/ws"
    async with websockets.connect(ws_url, max_size=1 << 24, open_timeout=30) as ws:
        await ws.recv()  # hello
        await ws.send(json.dumps({"op": "subscribe", "session": "*", "formats": ["code"]}))
        ready.set()
        waiting = set(ids)
        MISSING[node] = waiting
        while waiting:
            m = json.loads(await ws.recv())
            if m.get("action") == "qr_generated" and m.get("sessionId") in waiting and counts.get("armed"):
                waiting.discard(m["sessionId"])
                latencies.append(time.time() * 1000 - m["timestamp"])
        done[node] = time.time()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", action="append", required=True)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    ids = [f"bus-{i:05d}" for i in range(args.sessions)]
    pool = ThreadPoolExecutor(args.concurrency)
    loop = asyncio.get_running_loop()
    # Made on the nodes in turn: each runs a third (and the nodes hand surpluses on by themselves).
    await asyncio.gather(*[loop.run_in_executor(pool, post, args.node[i % len(args.node)] + "/api/v1/sessions/init/", {"sessionId": sid})
                           for i, sid in enumerate(ids)])
    await asyncio.sleep(3)
    counts, done, lat = {}, {}, {n: [] for n in args.node}
    readies = [asyncio.Event() for _ in args.node]
    tasks = [asyncio.create_task(firehose(n, ids, counts, lat[n], done, r)) for n, r in zip(args.node, readies)]
    for r in readies:
        await r.wait()
    await asyncio.sleep(5)  # the firehose snapshots of every session first
    counts["armed"] = True
    admins = [await websockets.connect(n.replace("http://", "ws://") + "/ws", max_size=1 << 24) for n in args.node]
    for ws in admins:
        await ws.recv()  # hello
    answers = {"refreshing": 0}

    async def drain(ws):
        try:
            async for m in ws:
                if json.loads(m).get("action") == "refreshing":
                    answers["refreshing"] += 1
        except websockets.ConnectionClosed:
            pass
    readers = [asyncio.create_task(drain(ws)) for ws in admins]
    started = time.time()
    for sid in ids:
        await random.choice(admins).send(json.dumps({"op": "refresh", "session": sid}))
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    except asyncio.TimeoutError:
        raise SystemExit("not every node showed every new QR within 120 s; missing per node: "
                         + json.dumps({n: sorted(m)[:10] + [f"({len(m)} in all)"] for n, m in MISSING.items()}))
    for ws in admins:
        await ws.close()
    for r in readers:
        r.cancel()
    total = max(done.values()) - started
    every = sorted(x for n in args.node for x in lat[n])
    print(json.dumps({"scenario": "cluster-bus", "nodes": len(args.node), "sessions": args.sessions,
                      "refreshes_answered": answers["refreshing"],
                      "seconds_until_every_node_showed_every_qr": round(total, 2),
                      "qr_events_per_s_all_nodes": round(len(every) / total),
                      "per_node_seconds": {n: round(done[n] - started, 2) for n in args.node},
                      "latency_ms": {"p50": pct(every, 50), "p99": pct(every, 99), "max": pct(every, 100)}}))


asyncio.run(main())
