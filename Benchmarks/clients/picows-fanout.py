#!/usr/bin/env python3
"""Independent fan-out load client: picows (PyPI; a C-accelerated asyncio WebSocket client), in several
processes. N subscribers of one WebSocket URL; each of K triggers (an HTTP request) must produce one message
that reaches all of them. Latency = receipt - the message's "timestamp" (epoch ms, stamped by the server).

Prints one JSON object with the same fields as `qrgate-bench fanout` (p50/p90/p99/max ms, delivered,
expected, bytes_per_message, connections_per_s, server_cpu_rounds_s, server_us_per_message, client_cpu_s).

usage: picows-fanout.py --url ws://127.0.0.1:P/ws [--url …] --clients N --rounds K --trigger-url URL [--trigger-method POST]
       [--trigger-body JSON] [--subscribe TEXT] [--match TEXT] [--processes P] [--server-pid PID ...] [--label NAME]
"""
import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import sys
import time
import urllib.request

from picows import WSListener, WSMsgType, ws_connect

TS = b'"timestamp":'


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def worker(index, args, share, ready_q, progress, go, out_q):
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    latencies, sizes, retried = [], [], [0]
    # Several --url (a cluster's nodes): each process connects its share to one of them, in turn.
    url = args.url[index % len(args.url)]
    match = args.match.encode()
    subscribe = args.subscribe.encode() if args.subscribe else None

    class Listener(WSListener):
        def __init__(self):
            self.ready = None
            self.parts = None  # a fragmented message being reassembled (pushpin sends 8 KiB fragments)

        def on_ws_connected(self, transport):
            if subscribe is not None:
                transport.send(WSMsgType.TEXT, subscribe)

        def on_ws_frame(self, transport, frame):
            if frame.msg_type == WSMsgType.TEXT and not frame.fin:
                self.parts = [frame.get_payload_as_bytes()]
                return
            if frame.msg_type == WSMsgType.CONTINUATION and self.parts is not None:
                self.parts.append(frame.get_payload_as_bytes())
                if not frame.fin:
                    return
                data, self.parts = b"".join(self.parts), None
            elif frame.msg_type == WSMsgType.TEXT:
                data = frame.get_payload_as_bytes()
            else:
                return
            if self.ready is not None and not self.ready.done():
                if subscribe is None or b'"subscribed"' in data or b'snapshot' in data:
                    self.ready.set_result(True)
            if match not in data:
                return
            now = time.time() * 1000
            i = data.find(TS)
            if i < 0:
                return
            j = i + len(TS)
            while j < len(data) and data[j] == 32:  # a space after the colon (Python's json.dumps)
                j += 1
            k = j
            while k < len(data) and 48 <= data[k] <= 57:
                k += 1
            latencies.append(now - int(data[j:k]))
            sizes.append(len(data))
            with progress.get_lock():
                progress.value += 1

    async def one(sem):
        async with sem:
            loop = asyncio.get_running_loop()
            ready = loop.create_future()

            def factory():
                listener = Listener()
                listener.ready = ready
                return listener

            for attempt in range(args.connect_retries + 1):
                try:
                    transport, _ = await ws_connect(factory, url, websocket_handshake_timeout=30, max_frame_size=1 << 24)
                    break
                except Exception:
                    # pushpin's proxy answers an occasional handshake with a non-101 while its backend is busy.
                    if attempt == args.connect_retries:
                        raise
                    retried[0] += 1
                    await asyncio.sleep(0.05)
            if subscribe is None and not ready.done():  # a server that greets (QRGate's hello) already set it
                ready.set_result(True)
            await asyncio.wait_for(ready, 60)
            return transport

    async def main():
        sem = asyncio.Semaphore(args.connect_wave)
        t0 = time.time()
        transports = await asyncio.gather(*[one(sem) for _ in range(share)])
        ready_q.put((index, share / max(1e-9, time.time() - t0)))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, go.wait)
        for t in transports:
            t.disconnect()

    asyncio.run(main())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out_q.put({"latencies": latencies, "sizes": sizes, "cpu": usage.ru_utime + usage.ru_stime, "retried": retried[0]})


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, action="append", help="repeat for several nodes: processes take them in turn")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trigger-url", required=True)
    ap.add_argument("--trigger-method", default="POST")
    ap.add_argument("--trigger-body", default="{}")
    ap.add_argument("--subscribe", default='{"op":"subscribe","session":"demo","formats":["svg"]}')
    ap.add_argument("--match", default="qr_generated")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--connect-wave", type=int, default=256)
    ap.add_argument("--connect-retries", type=int, default=3)
    ap.add_argument("--server-pid", type=int, action="append", default=[])
    ap.add_argument("--label", default="qrgate")
    ap.add_argument("--round-timeout", type=float, default=15)
    args = ap.parse_args()

    ctx = mp.get_context("fork")
    ready_q, out_q = ctx.Queue(), ctx.Queue()
    progress = ctx.Value("q", 0)
    go = ctx.Event()
    shares = [args.clients // args.processes + (1 if i < args.clients % args.processes else 0) for i in range(args.processes)]
    procs = [ctx.Process(target=worker, args=(i, args, shares[i], ready_q, progress, go, out_q)) for i in range(args.processes)]
    for p in procs:
        p.start()
    rate = 0.0
    for _ in procs:
        _, r = ready_q.get(timeout=300)
        rate += r
    time.sleep(0.5)
    with progress.get_lock():
        progress.value = 0

    def server_cpu():
        values = [cpu_seconds(p) for p in args.server_pid]
        return None if not values or None in values else sum(values)

    cpu0 = server_cpu()
    started = time.time()
    for k in range(args.rounds):
        req = urllib.request.Request(args.trigger_url, method=args.trigger_method,
                                     data=None if args.trigger_method == "GET" else args.trigger_body.encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=60).read()
        deadline = time.time() + args.round_timeout
        while time.time() < deadline and progress.value < args.clients * (k + 1):
            time.sleep(0.01)
        time.sleep(0.3)
    elapsed = time.time() - started
    cpu1 = server_cpu()
    go.set()
    latencies, sizes, client_cpu, retried = [], [], 0.0, 0
    for _ in procs:
        o = out_q.get(timeout=120)
        retried += o["retried"]
        latencies += o["latencies"]
        sizes += o["sizes"]
        client_cpu += o["cpu"]
    for p in procs:
        p.join(timeout=30)
    latencies.sort()
    delivered = len(latencies)
    report = {"scenario": "fanout", "server": args.label, "client": f"picows ×{args.processes}", "clients": args.clients,
              "rounds": args.rounds, "delivered": delivered, "expected": args.clients * args.rounds,
              "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90), "p99_ms": percentile(latencies, 99),
              "max_ms": latencies[-1] if latencies else None,
              "bytes_per_message": sum(sizes) // delivered if delivered else 0,
              "messages_per_s": delivered / elapsed if elapsed > 0 else 0, "connections_per_s": rate,
              "client_cpu_s": client_cpu, "client_processes": args.processes, "handshakes_retried": retried}
    if cpu0 is not None and cpu1 is not None:
        report["server_cpu_rounds_s"] = cpu1 - cpu0
        report["server_cpu_s"] = cpu1
        if delivered:
            report["server_us_per_message"] = (cpu1 - cpu0) / delivered * 1e6
    print(json.dumps(report, sort_keys=True))
    sys.stderr.write(f"fanout {args.label} (picows ×{args.processes}): p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms, "
                     f"delivered {delivered}/{report['expected']}\n")


if __name__ == "__main__":
    main()
