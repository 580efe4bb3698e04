#!/usr/bin/env bash
# Issue 17's cluster benchmark, in one run, with the same independent client (picows, 2 processes) as every
# fan-out figure in NOTES.md, page frames (["svg"]), 10 rounds:
#   1. Node ws, 5 000 subscribers, at the gateway's svg frame size (the peer);
#   2. one node on PostgreSQL, 5 000 subscribers on it (single-node delivery);
#   3. three nodes on the same PostgreSQL: the session runs on A, its 5 000 subscribers are on B and C (2 500 each),
#      refreshed on A: delivery crosses the bus (NOTIFY, a read of the events table, the pictures drawn on B and C);
#   2 and 3 again in the order 3 2 2 3 (three pairs, alternating who goes first); then
#   4. bus throughput: 1 000 pending sessions, all refreshed at once (Benchmarks/clients/cluster-bus.py), on one node,
#      then over the three nodes.
# Run from the repository root after `swift build -c release --product qrgate`. Prints JSON lines.
set -euo pipefail
BIN=${BIN:-.build/release/qrgate}
ROOT_PG=$(mktemp -d /tmp/bench-pg.XXXXXX)
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort | tail -1)")
AS=(); [ "$(id -u)" = 0 ] && { chown postgres "$ROOT_PG"; AS=(runuser -u postgres --); }
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${AS[@]}" "$PGBIN/initdb" -D "$ROOT_PG/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$ROOT_PG/data" -l "$ROOT_PG/log" -w -o "-p $PGPORT -k $ROOT_PG -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
trap '"${AS[@]}" "$PGBIN/pg_ctl" -D "$ROOT_PG/data" -m immediate stop >/dev/null; rm -rf "$ROOT_PG"' EXIT
newdb() { local n="b_$RANDOM$RANDOM"; "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE $n"; echo "postgres://postgres@127.0.0.1:$PGPORT/$n"; }

CFG='{"refresh":{"minIntervalSeconds":0,"cycleSeconds":3600},"qr":{"ttlSeconds":3600},"server":{"maxConnectionsPerIP":100000,"messagesPerSecond":100000},"log":{"level":"warning"},"upstream":{"concurrency":1024,"timeoutSeconds":30},"store":{"mode":"postgres","url":"@URL@"},"cluster":{"nodeId":"@NODE@"},"demoSession":"@DEMO@"}'
DIRS=()
node_up() { # URL NODE DEMO → prints "PORT PID"
  local dir; dir=$(mktemp -d /tmp/bench-node.XXXXXX); DIRS+=("$dir")
  local c=${CFG//@URL@/$1}; c=${c//@NODE@/$2}; c=${c//@DEMO@/$3}; echo "$c" > "$dir/config.json"
  ("$BIN" serve --port 0 --config "$dir/config.json" --static-dir static > "$dir/out" 2>"$dir/err" &)
  for _ in $(seq 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
  echo "$(grep -o '127.0.0.1:[0-9]*' "$dir/out" | head -1 | cut -d: -f2) $(pgrep -f "config $dir/config.json" | head -1)"
}
stop_all() { pkill -f "bench-node" || true; sleep 2; for d in "${DIRS[@]}"; do grep -h " error " "$d/err" >&2 || true; done; rm -rf "${DIRS[@]}"; DIRS=(); }
fanout() { # LABEL TRIGGER_PORT PIDS… -- URLS…
  local label=$1 trig=$2; shift 2; local pids=() urls=()
  while [ "$1" != -- ]; do pids+=(--server-pid "$1"); shift; done; shift
  for u in "$@"; do urls+=(--url "$u"); done
  python3 Benchmarks/clients/picows-fanout.py "${urls[@]}" --clients 5000 --rounds 10 \
    --trigger-url "http://127.0.0.1:$trig/api/v1/sessions/refresh-qr/" --trigger-body '{"sessionId":"demo"}' "${pids[@]}" \
    --subscribe '{"op":"subscribe","session":"demo","formats":["svg"]}' --label "$label" 2>/dev/null | tail -1
}
single() {
  read -r pa ia < <(node_up "$(newdb)" solo demo); sleep 2
  fanout "one node on PostgreSQL, 5000 subscribers on it" "$pa" "$ia" -- "ws://127.0.0.1:$pa/ws"; stop_all
}
three() {
  local url; url=$(newdb)
  read -r pa ia < <(node_up "$url" node-a demo); sleep 2
  read -r pb ib < <(node_up "$url" node-b ""); read -r pc ic < <(node_up "$url" node-c ""); sleep 3
  fanout "three nodes: runs on A, 5000 subscribers on B and C" "$pa" "$ia" "$ib" "$ic" -- "ws://127.0.0.1:$pb/ws" "ws://127.0.0.1:$pc/ws"; stop_all
}
if [ "${ONLY:-}" != bus ]; then   # ONLY=bus: the bus throughput alone
out=$(mktemp); (PEER_MESSAGE_BYTES=5450 NODE_PATH=/usr/share/nodejs node Benchmarks/peers/node-ws.js > "$out" 2>&1 &); sleep 1
np=$(grep -o '127.0.0.1:[0-9]*' "$out" | cut -d: -f2); nid=$(pgrep -f "peers/node-ws.js" | head -1)
python3 Benchmarks/clients/picows-fanout.py --url "ws://127.0.0.1:$np/ws" --clients 5000 --rounds 10 --trigger-url "http://127.0.0.1:$np/publish" \
  --subscribe "" --match timestamp --server-pid "$nid" --label "node-ws at the svg frame size" 2>/dev/null | tail -1
kill "$nid"; rm -f "$out"; sleep 2
single; three; three; single; single; three
fi
# The same 1 000 sessions on one node first (no bus): what the refresh itself costs on this machine.
read -r pa ia < <(node_up "$(newdb)" solo ""); sleep 2
python3 Benchmarks/clients/cluster-bus.py --node "http://127.0.0.1:$pa" --sessions 1000
stop_all
url=$(newdb)
read -r pa ia < <(node_up "$url" node-a ""); read -r pb ib < <(node_up "$url" node-b ""); read -r pc ic < <(node_up "$url" node-c ""); sleep 3
python3 Benchmarks/clients/cluster-bus.py --node "http://127.0.0.1:$pa" --node "http://127.0.0.1:$pb" --node "http://127.0.0.1:$pc" --sessions 1000
stop_all
