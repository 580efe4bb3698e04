#!/bin/bash
# Fan-out with the SQLite store: events published at once (before) and only once stored (after), same client
# (picows x2), 10 000 subscribers x 10 rounds of the page's ["svg"] frame, Node ws at the same size in the same run.
# Usage: [ORDER=reversed] fanout-sqlite.sh BEFORE_BINARY AFTER_BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
run_gw() { # binary label tag
  rm -rf /tmp/pac-$3 && mkdir -p /tmp/pac-$3
  echo '{"refresh":{"minIntervalSeconds":0,"cycleSeconds":3600},"qr":{"ttlSeconds":3600},"server":{"maxConnectionsPerIP":100000,"messagesPerSecond":100000},"store":{"mode":"sqlite","path":"/tmp/pac-'$3'/qrgate.sqlite"},"log":{"level":"warning"},"upstream":{"concurrency":1024,"timeoutSeconds":30}}' > /tmp/pac-$3.json
  ($1 serve --port 0 --config /tmp/pac-$3.json --static-dir static > /tmp/pac-gw.out 2>/dev/null &)
  sleep 3
  PORT=$(grep -o '127.0.0.1:[0-9]*' /tmp/pac-gw.out | head -1 | cut -d: -f2); PID=$(pgrep -f "config /tmp/pac-$3.json" | head -1)
  python3 Benchmarks/clients/picows-fanout.py --url ws://127.0.0.1:$PORT/ws --clients 10000 --rounds 10 --trigger-url http://127.0.0.1:$PORT/api/v1/sessions/refresh-qr/ --trigger-body '{"sessionId":"demo"}' --server-pid $PID --subscribe '{"op":"subscribe","session":"demo","formats":["svg"]}' --label "$2" 2>/dev/null | tail -1
  kill $PID; sleep 2
}
run_node() { # bytes label
  (PEER_MESSAGE_BYTES=$1 NODE_PATH=/usr/share/nodejs node Benchmarks/peers/node-ws.js > /tmp/pac-node.out 2>&1 &); sleep 1
  PORT=$(grep -o '127.0.0.1:[0-9]*' /tmp/pac-node.out | cut -d: -f2); PID=$(pgrep -f "peers/node-ws.js" | head -1)
  python3 Benchmarks/clients/picows-fanout.py --url ws://127.0.0.1:$PORT/ws --clients 10000 --rounds 10 --trigger-url http://127.0.0.1:$PORT/publish --subscribe "" --match timestamp --server-pid $PID --label "$2" 2>/dev/null | tail -1
  kill $PID; sleep 2
}
for i in 1 2; do
  run_node 5450 "node-ws at the svg frame size"
  if [ "$ORDER" = reversed ]; then
    run_gw "$2" "qrgate sqlite, published once stored" after
    run_gw "$1" "qrgate sqlite, published at once" before
  else
    run_gw "$1" "qrgate sqlite, published at once" before
    run_gw "$2" "qrgate sqlite, published once stored" after
  fi
done
