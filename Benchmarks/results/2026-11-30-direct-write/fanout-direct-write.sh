#!/bin/bash
# Fan-out before and direct write (a QR issued inside a countdown slot's window got a tick within
# same client (picows x2), Node ws at the same frame size, alternating twice.
# Usage: [ORDER=reversed] fanout-direct-write.sh BEFORE_BINARY AFTER_BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
echo '{"refresh":{"minIntervalSeconds":0,"cycleSeconds":3600},"qr":{"ttlSeconds":3600},"server":{"maxConnectionsPerIP":100000,"messagesPerSecond":100000},"store":{"mode":"memory"},"log":{"level":"warning"},"upstream":{"concurrency":1024,"timeoutSeconds":30}}' > /tmp/cfix.json
run_gw() { # binary label tag
  cp /tmp/cfix.json /tmp/cfix-$3.json
  ($1 serve --port 0 --config /tmp/cfix-$3.json --static-dir static > /tmp/cfix-gw.out 2>/dev/null &)
  sleep 3
  PORT=$(grep -o '127.0.0.1:[0-9]*' /tmp/cfix-gw.out | head -1 | cut -d: -f2); PID=$(pgrep -f "config /tmp/cfix-$3.json" | head -1)
  python3 Benchmarks/clients/picows-fanout.py --url ws://127.0.0.1:$PORT/ws --clients 10000 --rounds 10 --trigger-url http://127.0.0.1:$PORT/api/v1/sessions/refresh-qr/ --trigger-body '{"sessionId":"demo"}' --server-pid $PID --subscribe '{"op":"subscribe","session":"demo","formats":["svg"]}' --label "$2" 2>/dev/null | tail -1
  kill $PID; sleep 2
}
run_node() { # bytes label
  (PEER_MESSAGE_BYTES=$1 NODE_PATH=/usr/share/nodejs node Benchmarks/peers/node-ws.js > /tmp/cfix-node.out 2>&1 &); sleep 1
  PORT=$(grep -o '127.0.0.1:[0-9]*' /tmp/cfix-node.out | cut -d: -f2); PID=$(pgrep -f "peers/node-ws.js" | head -1)
  python3 Benchmarks/clients/picows-fanout.py --url ws://127.0.0.1:$PORT/ws --clients 10000 --rounds 10 --trigger-url http://127.0.0.1:$PORT/publish --subscribe "" --match timestamp --server-pid $PID --label "$2" 2>/dev/null | tail -1
  kill $PID; sleep 2
}
# ORDER=reversed runs the "after" build first in each pair (a first-run effect shows up as the same order twice).
for i in 1 2; do
  run_node 5450 "node-ws at the svg frame size"
  if [ "$ORDER" = reversed ]; then
    run_gw "$2" "qrgate direct write" after
    run_gw "$1" "qrgate queued (WRITEABLE turn per frame)" before
  else
    run_gw "$1" "qrgate queued (WRITEABLE turn per frame)" before
    run_gw "$2" "qrgate direct write" after
  fi
done
