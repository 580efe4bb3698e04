# Shared by the before/after scripts under Benchmarks/results: one run of the fan-out against a gateway
# binary or against Node ws, with the same independent client (picows, 2 processes), 10 000 subscribers of
# one session, 10 rounds of the page's ["svg"] frame; one JSON line each. Source it from the repository root.

# The gateway's configuration for these runs; @DIR@ becomes the run's own temporary directory.
PAIR_MEMORY='{"refresh":{"minIntervalSeconds":0,"cycleSeconds":3600},"qr":{"ttlSeconds":3600},"server":{"maxConnectionsPerIP":100000,"messagesPerSecond":100000},"store":{"mode":"memory"},"log":{"level":"warning"},"upstream":{"concurrency":1024,"timeoutSeconds":30}}'
PAIR_SQLITE='{"refresh":{"minIntervalSeconds":0,"cycleSeconds":3600},"qr":{"ttlSeconds":3600},"server":{"maxConnectionsPerIP":100000,"messagesPerSecond":100000},"store":{"mode":"sqlite","path":"@DIR@/qrgate.sqlite"},"log":{"level":"warning"},"upstream":{"concurrency":1024,"timeoutSeconds":30}}'

pair_gateway() { # BINARY LABEL CONFIG
  local dir port pid
  dir=$(mktemp -d /tmp/pair-gw.XXXXXX)
  echo "${3//@DIR@/$dir}" > "$dir/config.json"
  ("$1" serve --port 0 --config "$dir/config.json" --static-dir static > "$dir/out" 2>/dev/null &)
  sleep 3
  port=$(grep -o '127.0.0.1:[0-9]*' "$dir/out" | head -1 | cut -d: -f2); pid=$(pgrep -f "config $dir/config.json" | head -1)
  python3 Benchmarks/clients/picows-fanout.py --url "ws://127.0.0.1:$port/ws" --clients 10000 --rounds 10 \
    --trigger-url "http://127.0.0.1:$port/api/v1/sessions/refresh-qr/" --trigger-body '{"sessionId":"demo"}' --server-pid "$pid" \
    --subscribe '{"op":"subscribe","session":"demo","formats":["svg"]}' --label "$2" 2>/dev/null | tail -1
  kill "$pid"; sleep 2; rm -rf "$dir"
}

pair_node() { # BYTES LABEL: Node ws sending messages of BYTES (the gateway's frame size)
  local out port pid
  out=$(mktemp /tmp/pair-node.XXXXXX)
  (PEER_MESSAGE_BYTES=$1 NODE_PATH=/usr/share/nodejs node Benchmarks/peers/node-ws.js > "$out" 2>&1 &); sleep 1
  port=$(grep -o '127.0.0.1:[0-9]*' "$out" | cut -d: -f2); pid=$(pgrep -f "peers/node-ws.js" | head -1)
  python3 Benchmarks/clients/picows-fanout.py --url "ws://127.0.0.1:$port/ws" --clients 10000 --rounds 10 \
    --trigger-url "http://127.0.0.1:$port/publish" --subscribe "" --match timestamp --server-pid "$pid" --label "$2" 2>/dev/null | tail -1
  kill "$pid"; sleep 2; rm -f "$out"
}

# Two rounds of Node, then before and after (after first with ORDER=reversed, which shows a first-run effect).
pair_runs() { # BEFORE_BINARY BEFORE_LABEL AFTER_BINARY AFTER_LABEL CONFIG [AFTER_CONFIG]
  for _ in 1 2; do
    pair_node 5450 "node-ws at the svg frame size"
    if [ "${ORDER:-}" = reversed ]; then
      pair_gateway "$3" "$4" "${6:-$5}"; pair_gateway "$1" "$2" "$5"
    else
      pair_gateway "$1" "$2" "$5"; pair_gateway "$3" "$4" "${6:-$5}"
    fi
  done
}
