#!/bin/bash
# before/after fan-out, same client (picows x2), Node ws peer at each frame size, all in one run
cd /work/main
run_gw() { # binary config subscribe label
  ($1 serve --port 0 --config $2 --static-dir /work/main/static > /tmp/ba-gw.out 2>/dev/null &)
  sleep 2
  PORT=$(grep -o '127.0.0.1:[0-9]*' /tmp/ba-gw.out | head -1 | cut -d: -f2); PID=$(pgrep -f "config $2" | head -1)
  python3 Benchmarks/clients/picows-fanout.py --url ws://127.0.0.1:$PORT/ws --clients 10000 --rounds 10 --trigger-url http://127.0.0.1:$PORT/api/v1/sessions/refresh-qr/ --trigger-body '{"sessionId":"demo"}' --server-pid $PID --subscribe "$3" --label "$4" 2>/dev/null | tail -1
  kill $PID; sleep 2
}
run_node() { # bytes label
  (PEER_MESSAGE_BYTES=$1 NODE_PATH=/usr/share/nodejs node Benchmarks/peers/node-ws.js > /tmp/ba-node.out 2>&1 &); sleep 1
  PORT=$(grep -o '127.0.0.1:[0-9]*' /tmp/ba-node.out | cut -d: -f2); PID=$(pgrep -f "peers/node-ws.js" | head -1)
  python3 Benchmarks/clients/picows-fanout.py --url ws://127.0.0.1:$PORT/ws --clients 10000 --rounds 10 --trigger-url http://127.0.0.1:$PORT/publish --subscribe "" --match timestamp --server-pid $PID --label "$2" 2>/dev/null | tail -1
  kill $PID; sleep 2
}
cp /tmp/bcfg.json /tmp/ba-before.json; cp /tmp/bcfg.json /tmp/ba-after.json
run_gw /tmp/before/.build/release/qrgate /tmp/ba-before.json '{"op":"subscribe","session":"demo"}' "qrgate before (f5f8b48, 1 loop, standard frame)"
run_node 11880 "node-ws at the before frame size"
run_gw /work/main/.build/release/qrgate /tmp/ba-after.json '{"op":"subscribe","session":"demo","formats":["svg"]}' "qrgate after (2 loops, the page's svg frame)"
run_gw /work/main/.build/release/qrgate /tmp/ba-after.json '{"op":"subscribe","session":"demo"}' "qrgate after (2 loops, standard frame)"
run_node 5450 "node-ws at the after frame size"
