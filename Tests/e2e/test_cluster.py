"""Three gateway nodes on one throwaway PostgreSQL (the `postgres` fixture) and one Evolution simulator process
(`qrgate simulate`): a session runs on one node (its lease), every node's subscribers get its events with the
same seqs over the bus (LISTEN/NOTIFY), orders and webhooks sent to any node reach the node that runs it, and a
kill -9 of that node moves its sessions to another within `cluster.leaseSeconds`."""
import asyncio
import json
import re
import socket
import subprocess
import tempfile
import time

import pytest

from apihelp import call
from conftest import ROOT, qrgate_process
from test_durability import metrics, recv, run, status_of, total, wait_for
from test_postgres import subscribe

LEASE = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def simulator():
    """`qrgate simulate` on a free port; its webhooks go to the port `webhook_port` names (a node started later)."""
    procs = []

    def start(webhook_port):
        cfg = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({"simulator": {"firstQrSeconds": 60, "nextQrSeconds": 60,
                                 "webhookURL": f"http://127.0.0.1:{webhook_port}/webhooks/evolution"},
                   "log": {"level": "warning"}}, cfg)
        cfg.close()
        p = qrgate_process("simulate", "--port", "0", "--config", cfg.name)
        procs.append(p)
        line = p.stdout.readline()
        return "http://127.0.0.1:" + re.search(r":(\d+)", line).group(1)

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def node_config(postgres, db, sim, node, **extra):
    return {"store": {"mode": "postgres", "url": postgres.url(db)},
            "cluster": {"nodeId": node, "leaseSeconds": LEASE, "orderTimeoutSeconds": 5},
            "upstream": {"mode": "evolution", "baseURL": sim, "apiKey": "qrgate-simulator-key", "timeoutSeconds": 3},
            "demoSession": "", "log": {"level": "warning"}, "qr": {"ttlSeconds": 60, "maxAttempts": 3},
            # Polls are slow: what arrives fast came by webhook or by the bus.
            "poll": {"intervalSeconds": 30}, "refresh": {"minIntervalSeconds": 0}, **extra}


def three_nodes(gateway_factory, postgres, simulator, **extra):
    db = postgres.new_database()
    port_b = free_port()
    sim = simulator(port_b)
    a = gateway_factory(node_config(postgres, db, sim, "node-a", **extra))
    b = gateway_factory(node_config(postgres, db, sim, "node-b", **extra), port=port_b)
    c = gateway_factory(node_config(postgres, db, sim, "node-c", **extra))
    return db, sim, a, b, c


def owner(postgres, db, sid):
    rows = postgres.sql(db, f"SELECT owner_node FROM sessions WHERE id = '{sid}'")
    return rows[0][0] if rows else None


async def numbered_until(ws, action, timeout=15):
    """The numbered events up to and including the first `action`."""
    out, deadline = [], time.monotonic() + timeout
    while True:
        m = await recv(ws, max(0.1, deadline - time.monotonic()))
        if "seq" in m and m.get("action") not in ("snapshot", "subscribed"):
            out.append(m)
            if m["action"] == action:
                return out


def test_three_nodes_share_a_session_its_events_orders_and_webhooks(gateway_factory, postgres, simulator):
    db, sim, a, b, c = three_nodes(gateway_factory, postgres, simulator)
    status, _, body = call(a, "POST", "/api/v1/sessions/init/", {"sessionId": "cl-1"})
    assert status == 200 and body["data"]["qrCode"].startswith("data:image/png;base64,"), body
    assert owner(postgres, db, "cl-1") == "node-a"
    # Node C follows it over the bus: its status answers with the same QR.
    wait_for(lambda: call(c, "GET", "/api/v1/sessions/status/?sessionId=cl-1")[0] == 200, 10, "node C to know cl-1")
    assert status_of(c, "cl-1")["qrCode"] == status_of(a, "cl-1")["qrCode"]

    async def scenario():
        on_a, on_c = await subscribe(a.ws, "cl-1"), await subscribe(c.ws, "cl-1")
        snap_a, snap_c = await recv(on_a), await recv(on_c)
        assert snap_a["seq"] == snap_c["seq"] and snap_a["qrText"] == snap_c["qrText"], (snap_a, snap_c)
        # A REST refresh sent to node B reaches the session on A; B answers with the owner's new QR.
        status, _, body = await asyncio.to_thread(call, b, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "cl-1"})
        assert status == 200 and body["data"]["status"] == "pending" and body["data"]["qrCode"].startswith("data:image/png"), body
        got_a, got_c = await numbered_until(on_a, "qr_generated"), await numbered_until(on_c, "qr_generated")
        assert [(m["seq"], m["action"]) for m in got_a] == [(m["seq"], m["action"]) for m in got_c], (got_a, got_c)
        assert got_a[0]["seq"] == snap_a["seq"] + 1 and got_a[0]["action"] == "qr_regenerating"
        assert got_a[-1]["qrText"] == got_c[-1]["qrText"] != snap_a["qrText"]
        assert status_of(b, "cl-1")["qrCode"] == status_of(a, "cl-1")["qrCode"]
        # The seed's table shows the QR the subscribers got, written by the node that runs the session.
        assert postgres.sql(db, "SELECT instance_status, qr_code FROM evolution_instances WHERE session_id = 'cl-1'") == \
            [["connecting", status_of(a, "cl-1")["qrCode"]]]
        # An admin refresh over node C's socket: answered there, carried out on A.
        await on_c.send(json.dumps({"op": "refresh", "session": "cl-1"}))
        # (The answer comes once C's copy shows the change: the change's first events may come before it.)
        early = []
        while not early or early[-1].get("action") != "refreshing":
            early.append(await recv(on_c))
        early = [m for m in early if "seq" in m]
        second_a = await numbered_until(on_a, "qr_generated")
        second_c = early if early and early[-1]["action"] == "qr_generated" else early + await numbered_until(on_c, "qr_generated")
        assert [m["seq"] for m in second_a] == [m["seq"] for m in second_c] and second_a[0]["seq"] == got_a[-1]["seq"] + 1
        # The phone links: the simulator's webhook goes to node B, which sends it on to A (polls are 30 s apart).
        await asyncio.to_thread(urlopen_post, f"{sim}/simulator/scan/cl-1")
        linked_a, linked_c = await numbered_until(on_a, "connected", 10), await numbered_until(on_c, "connected", 10)
        assert linked_a[-1]["seq"] == linked_c[-1]["seq"] == second_a[-1]["seq"] + 1
        for ws in (on_a, on_c):
            await ws.close()

    run(scenario(), 90)
    # The seed's table, kept by the node that runs it.
    assert postgres.sql(db, "SELECT instance_status, qr_code IS NULL FROM evolution_instances WHERE session_id = 'cl-1'") == [["open", "t"]]
    # The cluster in /metrics: A runs it, B and C follow it, three live nodes.
    # (Live nodes are counted at each lease round, every 20 % of the lease.)
    wait_for(lambda: total(metrics(a), "qrgate_cluster_live_nodes") == 3, LEASE, "node A to count three live nodes")
    ma, mc = metrics(a), metrics(c)
    assert total(ma, "qrgate_cluster_owned_sessions") == 1 and total(mc, "qrgate_cluster_owned_sessions") == 0
    assert total(mc, "qrgate_cluster_followed_sessions") == 1
    assert total(ma, "qrgate_cluster_lease_renewals_total") > 0 and total(mc, "qrgate_cluster_bus_messages_total") > 0


def urlopen_post(url):
    import urllib.request
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=10) as r:
        return r.status


def test_kill_9_of_the_owner_moves_its_sessions_and_nobody_misses_an_event(gateway_factory, postgres, simulator):
    db, sim, a, b, c = three_nodes(gateway_factory, postgres, simulator)
    for sid in ("cl-k1", "cl-k2"):
        assert call(a, "POST", "/api/v1/sessions/init/", {"sessionId": sid})[0] == 200
    wait_for(lambda: call(b, "GET", "/api/v1/sessions/status/?sessionId=cl-k2")[0] == 200, 10, "node B to know the sessions")

    async def scenario():
        on_a, on_b = await subscribe(a.ws, "cl-k1"), await subscribe(b.ws, "cl-k1")
        seen_a = (await recv(on_a))["seq"]
        seen_b = (await recv(on_b))["seq"]
        # One refresh on A so the dead node's subscriber has numbered events of its own.
        assert (await asyncio.to_thread(call, a, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "cl-k1"}))[0] == 200
        seen_a = (await numbered_until(on_a, "qr_generated"))[-1]["seq"]
        before = await numbered_until(on_b, "qr_generated")
        assert before[-1]["seq"] == seen_a
        killed = time.monotonic()
        a.proc.kill()
        a.proc.wait()
        # Another node runs them within the lease.
        await asyncio.to_thread(wait_for, lambda: owner(postgres, db, "cl-k1") in ("node-b", "node-c")
                                and owner(postgres, db, "cl-k2") in ("node-b", "node-c"), LEASE + 2, "a takeover")
        took = time.monotonic() - killed
        assert took <= LEASE, f"took {took:.1f} s over the {LEASE} s lease"
        # Orders work again, from any node: events continue on B with higher seqs, none reused.
        status, _, body = await asyncio.to_thread(call, c, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "cl-k1"})
        assert status == 200, body
        after = await numbered_until(on_b, "qr_generated")
        assert after[0]["seq"] == seen_a + 1, (seen_a, after)
        stored = {int(s): act for s, act in postgres.sql(db, "SELECT seq, action FROM events WHERE session_id = 'cl-k1'")}
        for m in before + after:
            assert stored.get(m["seq"], m["action"]) == m["action"], (m, stored)
        # The dead node's subscriber reconnects to C with `since` and gets exactly what it missed.
        on_c = await subscribe(c.ws, "cl-k1", since=seen_a)
        replay = []
        while len(replay) < len(after):
            m = await recv(on_c)
            assert m["action"] != "snapshot", m
            if "seq" in m:
                replay.append(m)
        assert [(m["seq"], m["action"]) for m in replay] == [(m["seq"], m["action"]) for m in after]
        for ws in (on_b, on_c):
            await ws.close()
        return took

    took = run(scenario(), 120)
    print(f"takeover after kill -9: {took:.2f} s (lease {LEASE} s)")
    assert b.alive() and c.alive()


def test_sessions_made_on_one_node_spread_over_the_live_nodes(gateway_factory, postgres, simulator):
    db, sim, a, b, c = three_nodes(gateway_factory, postgres, simulator)
    ids = [f"cl-s{i}" for i in range(9)]
    for sid in ids:
        status, _, body = call(a, "POST", "/api/v1/sessions/init/", {"sessionId": sid})
        if status != 200:
            print(sid, postgres.sql(db, "SELECT id, owner_node, seq, status, qr_code_text IS NOT NULL, lease_until > now() FROM sessions ORDER BY id"))
            print(postgres.sql(db, "SELECT session_id, seq, action FROM events ORDER BY 1, 2"))
            for g in (a, b, c):
                g.stop()
                print(g.proc.stderr.read()[-6000:])
        assert status == 200, body

    def spread():
        rows = postgres.sql(db, "SELECT owner_node, count(*) FROM sessions GROUP BY owner_node")
        counts = {node: int(n) for node, n in rows}
        return counts if sum(counts.values()) == 9 and len(counts) == 3 and all(2 <= n <= 4 for n in counts.values()) else None

    counts = wait_for(spread, LEASE * 3, "the nine sessions to spread over the three nodes")
    print(f"sessions per node: {counts}")
    # Each moved session runs where it landed: an order from any node reaches it, its QR is shown everywhere.
    for sid in ids:
        status, _, body = call(b, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": sid})
        if status != 200 or not body["data"]["qrCode"]:
            for g in (a, b, c):
                g.stop()
                print("NODE", [l for l in g.proc.stderr.read().splitlines() if sid in l or "cluster" in l])
        assert status == 200 and (body["data"]["qrCode"] or "").startswith("data:image/png"), \
            (sid, status, body, owner(postgres, db, sid), postgres.sql(db, f"SELECT seq, action FROM events WHERE session_id = '{sid}'"))
    assert total(metrics(a), "qrgate_cluster_sessions_handed_off_total") >= 5


def nginx_in_front(nodes, tmp_path):
    """docs/examples/nginx-three-nodes.conf's upstream and locations, on a loopback port, in front of `nodes`."""
    import os
    import shutil
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise RuntimeError("nginx is not installed (Debian's nginx-light): scripts/setup --test installs it")
    example = open(os.path.join(ROOT, "docs", "examples", "nginx-three-nodes.conf")).read()
    servers = iter(f"server 127.0.0.1:{n.port}" for n in nodes)
    conf = re.sub(r"server 10\.0\.0\.\d+:8080", lambda _: next(servers), example)
    port = free_port()
    conf = conf.replace("listen 443 ssl;", f"listen 127.0.0.1:{port};")
    conf = "\n".join(line for line in conf.splitlines() if "ssl_certificate" not in line)
    conf = conf.replace("allow 10.0.0.0/8;", "allow 127.0.0.1;")
    tmp = str(tmp_path)
    main = f"""daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log warn; worker_processes 1;
events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp};
scgi_temp_path {tmp};
{conf}
}}"""
    path = os.path.join(tmp, "nginx.conf")
    open(path, "w").write(main)
    proc = subprocess.Popen([nginx, "-c", path, "-p", tmp], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def up():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return proc.poll() is not None
    wait_for(up, 10, "nginx to listen")
    assert proc.poll() is None, proc.stderr.read()
    return proc, f"127.0.0.1:{port}"


def test_three_nodes_behind_nginx_serve_any_client_without_sticky_sessions(gateway_factory, postgres, simulator, tmp_path):
    db, sim, a, b, c = three_nodes(gateway_factory, postgres, simulator)
    proc, front = nginx_in_front([a, b, c], tmp_path)

    class Front:
        http = f"http://{front}"

    try:
        # Each request may land on another node (round robin): all answer about the same session.
        status, _, body = call(Front, "POST", "/api/v1/sessions/init/", {"sessionId": "cl-nginx"})
        assert status == 200 and body["data"]["qrCode"], body
        # The other nodes show it once the bus has brought it (milliseconds; a socket there before gets it as an event).
        for n in (a, b, c):
            wait_for(lambda: call(n, "GET", "/api/v1/sessions/status/?sessionId=cl-nginx")[0] == 200
                     and status_of(n, "cl-nginx")["qrCode"] == body["data"]["qrCode"], 5, "every node to show the QR")

        async def scenario():
            sockets = [await subscribe(f"ws://{front}/ws", "cl-nginx") for _ in range(3)]
            snaps = [await recv(ws) for ws in sockets]
            assert len({s["seq"] for s in snaps}) == 1 and len({s["qrText"] for s in snaps}) == 1, snaps
            # nginx spread the sockets over the nodes (round robin), none pinned to the session's node.
            per_node = [total(await asyncio.to_thread(metrics, n), "qrgate_connections") for n in (a, b, c)]
            assert sum(per_node) == 3 and max(per_node) < 3, per_node
            for _ in range(3):
                status, _, body = await asyncio.to_thread(call, Front, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "cl-nginx"})
                assert status == 200 and body["data"]["qrCode"], body
                got = [await numbered_until(ws, "qr_generated") for ws in sockets]
                assert len({tuple((m["seq"], m["action"]) for m in g) for g in got}) == 1, got
            for ws in sockets:
                await ws.close()

        run(scenario(), 60)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_node_a_moment_behind_reads_the_store_before_it_answers_a_subscriber(gateway_factory, postgres, simulator):
    db, sim, a, b, c = three_nodes(gateway_factory, postgres, simulator)

    async def scenario():
        for i in range(5):
            sid = f"cl-new{i}"
            # Made on A and watched on C at once: C has not had the bus's notice yet, so it reads the store.
            status, _, body = await asyncio.to_thread(call, a, "POST", "/api/v1/sessions/init/", {"sessionId": sid})
            assert status == 200, body
            on_c = await subscribe(c.ws, sid)
            snap = await recv(on_c)
            assert snap["action"] == "snapshot" and snap["sessionId"] == sid, snap
            await on_c.close()
        # A client that saw the newest seq on A comes back on B: a replay (nothing missed), never "recovered": false.
        on_a = await subscribe(a.ws, "cl-new0")
        seen = (await recv(on_a))["seq"]
        assert (await asyncio.to_thread(call, a, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "cl-new0"}))[0] == 200
        seen = (await numbered_until(on_a, "qr_generated"))[-1]["seq"]
        on_b = await subscribe(b.ws, "cl-new0", since=seen)
        first = await recv(on_b)
        assert first["action"] == "countdown" and "seq" not in first, first
        for ws in (on_a, on_b):
            await ws.close()

    run(scenario(), 60)
