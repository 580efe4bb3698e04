"""store.mode = postgres against a throwaway PostgreSQL cluster (the `postgres` fixture): sessions, events and the
seed's `evolution_instances` table survive a kill -9; losing the database shows in /readyz, holds events back
(never published unstored), pauses the node's sessions once its leases cannot be renewed, and the node recovers by
itself."""
import asyncio
import json
import threading
import time
import urllib.error
import urllib.request

import websockets

from apihelp import call
from test_durability import recv, run, status_of, wait_for


def pg_config(postgres, database, **extra):
    return {"store": {"mode": "postgres", "url": postgres.url(database)}, "demoSession": "", "log": {"level": "warning"},
            "qr": {"ttlSeconds": 30, "maxAttempts": 3}, "poll": {"intervalSeconds": 1},
            "simulator": {"firstQrSeconds": 60, "nextQrSeconds": 60}, "refresh": {"minIntervalSeconds": 0}, **extra}


async def subscribe(ws_url, session, since=None):
    ws = await websockets.connect(ws_url)
    await recv(ws)  # hello
    msg = {"op": "subscribe", "session": session, "formats": ["code"]}
    if since is not None:
        msg["since"] = since
    await ws.send(json.dumps(msg))
    assert (await recv(ws))["action"] == "subscribed"
    return ws


async def next_action(ws, action, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        m = await recv(ws, max(0.1, deadline - time.monotonic()))
        if m.get("action") == action:
            return m


def test_postgres_store_keeps_sessions_events_and_the_seed_table_across_kill_9(gateway_factory, postgres):
    db = postgres.new_database()
    # A node restarted under the same name takes its sessions back at once (no wait for their leases to lapse).
    cfg = pg_config(postgres, db, cluster={"nodeId": "pg-node", "leaseSeconds": 3})
    g = gateway_factory(cfg)
    assert call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "pg-a", "instanceToken": "tok-secret-4711"})[0] == 200
    assert call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "pg-b"})[0] == 200

    async def refresh_and_watch():
        ws = await subscribe(g.ws, "pg-a")
        snap = await recv(ws)
        assert snap["action"] == "snapshot" and snap["qrText"]
        assert call(g, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "pg-a"})[0] == 200
        fresh = await next_action(ws, "qr_generated")
        await ws.close()
        return snap, fresh

    snap, fresh = run(refresh_and_watch())
    assert fresh["seq"] > snap["seq"] and fresh["qrText"] != snap["qrText"]

    # The seed's table, as tools that read it expect: the QR as a PNG data URL while connecting.
    rows = postgres.sql(db, "SELECT instance_name, instance_status, left(qr_code, 22), attempt FROM evolution_instances ORDER BY instance_name")
    assert rows == [["pg-a", "connecting", "data:image/png;base64,", "0"], ["pg-b", "connecting", "data:image/png;base64,", "0"]]
    # The instance token is sealed at rest; events keep the code, not the pictures.
    assert "tok-secret-4711" not in json.dumps(postgres.sql(db, "SELECT encode(instance_token_sealed, 'escape') FROM sessions"))
    stored = postgres.sql(db, "SELECT seq, action, position('base64' in convert_from(payload, 'UTF8')) FROM events WHERE session_id = 'pg-a' ORDER BY seq")
    assert stored[-1][:2] == [str(fresh["seq"]), "qr_generated"] and stored[-1][2] == "0"

    g.proc.kill()
    g.proc.wait()
    g2 = gateway_factory(cfg)
    # The stored QR is back, and a client that had everything misses nothing.
    assert status_of(g2, "pg-a")["qrCode"].startswith("data:image/png;base64,")

    async def resume():
        ws = await subscribe(g2.ws, "pg-a", since=fresh["seq"])
        first = await recv(ws)
        assert first["action"] == "countdown" and "seq" not in first, first
        assert call(g2, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "pg-a"})[0] == 200
        after = await next_action(ws, "qr_generated")
        await ws.close()
        return after

    after = run(resume())
    assert after["seq"] > fresh["seq"]
    # Linking shows in the seed's table: open, and no QR any more.
    call(g2, "POST", "/simulator/scan/pg-a")
    wait_for(lambda: postgres.sql(db, "SELECT instance_status, qr_code IS NULL FROM evolution_instances WHERE session_id = 'pg-a'") == [["open", "t"]],
             10, "pg-a to show as open in evolution_instances")
    assert postgres.sql(db, "SELECT version FROM qrgate_schema ORDER BY version") == [["1"], ["2"], ["3"]]


def test_losing_postgres_holds_events_back_pauses_the_sessions_and_recovers(gateway_factory, postgres):
    db = postgres.new_database()
    g = gateway_factory(pg_config(postgres, db, cluster={"leaseSeconds": 3}))
    assert call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "pg-loss"})[0] == 200
    assert call(g, "GET", "/readyz")[0] == 200

    async def scenario():
        ws = await subscribe(g.ws, "pg-loss")
        snap = await recv(ws)
        postgres.stop()
        try:
            await asyncio.to_thread(wait_for, lambda: call(g, "GET", "/readyz")[0] == 503, 15, "/readyz to fail without the database")
            body = call(g, "GET", "/readyz")[2]
            assert any("PostgreSQL" in r for r in body["reasons"]), body
            # A refresh while the database is away: its events are numbered but wait for the store.
            answer = {}
            t = threading.Thread(target=lambda: answer.update(r=call(g, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "pg-loss"})))
            t.start()
            # Nothing numbered goes out; once the leases cannot be renewed (60 % of cluster.leaseSeconds) the node stops
            # running the session and says so, unnumbered.
            numbered, paused, end = [], None, time.monotonic() + 6
            while time.monotonic() < end:
                try:
                    m = await recv(ws, max(0.05, end - time.monotonic()))
                except TimeoutError:
                    continue
                if "seq" in m:
                    numbered.append(m)
                if m.get("action") == "paused":
                    paused = m
            assert not numbered, f"events went out before they were stored: {numbered}"
            assert paused and "database" in paused["message"] and "seq" not in paused, paused
            t.join(30)
            # The refresh was never stored: its caller was told so, and nobody saw its events.
            status, _, body = answer["r"]
            assert status == 503 and ("not stored yet" in json.dumps(body) or "leases not renewed" in json.dumps(body)), (status, body)
            assert any("leases not renewed" in r for r in call(g, "GET", "/readyz")[2]["reasons"])
        finally:
            postgres.start()
        # Once the database is back the node takes its session again by itself and runs it from what is stored.
        await asyncio.to_thread(wait_for, lambda: call(g, "GET", "/readyz")[0] == 200, 20, "/readyz to recover")
        status, _, body = await asyncio.to_thread(call, g, "POST", "/api/v1/sessions/refresh-qr/", {"sessionId": "pg-loss"})
        assert status == 200, body
        regenerating = await next_action(ws, "qr_regenerating", 30)
        generated = await next_action(ws, "qr_generated", 30)
        # Numbering goes on from the last stored event: the forgotten refresh's numbers were never shown.
        assert regenerating["seq"] == snap["seq"] + 1 and generated["seq"] > regenerating["seq"], (snap, regenerating, generated)
        await ws.close()
        return generated

    generated = run(scenario(), 90)
    assert g.alive()
    assert postgres.sql(db, "SELECT max(seq) FROM events WHERE session_id = 'pg-loss'") == [[str(generated["seq"])]]


def test_control_characters_are_refused_and_another_seal_key_stops_start_up(gateway_factory, postgres):
    import base64
    import os

    import pytest
    db = postgres.new_database()
    key_a, key_b = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))

    def config(key):
        return pg_config(postgres, db, store={"mode": "postgres", "url": postgres.url(db), "sealKey": key})

    g = gateway_factory(config(key_a))
    # A NUL is text PostgreSQL refuses: refused at the door, with the reason, not stuck in the store.
    status, _, body = call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "pg-nul", "numberId": "55\u000011"})
    assert status == 400 and "control characters" in json.dumps(body), body
    assert call(g, "POST", "/api/v1/sessions/init/", {"sessionId": "pg-key", "instanceToken": "tok-sealed-0123456789"})[0] == 200
    g.stop()
    # Tokens sealed with one key cannot be opened with another: start-up stops and says so.
    with pytest.raises(RuntimeError) as refused:
        gateway_factory(config(key_b))
    assert "store.sealKey is not the key" in str(refused.value), refused.value
    g2 = gateway_factory(config(key_a))
    assert status_of(g2, "pg-key")["sessionId"] == "pg-key"
