#!/bin/bash
# Connection set-up as the peers are measured: 10 000 WebSocket handshakes, no subscribe (picows ×2), the build
# before (cb7a177: poll, lws's keep-alive timers, JSONEncoder) and after (9c26bfa). Node ws's rate with the same
# client is in the other files of this directory. Usage: connect-handshake-only.sh BEFORE AFTER > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
gw_connect() { # BINARY LABEL
  local dir port pid
  dir=$(mktemp -d /tmp/pair-gw.XXXXXX); echo "$PAIR_MEMORY" > "$dir/config.json"
  ("$1" serve --port 0 --config "$dir/config.json" --static-dir static > "$dir/out" 2>/dev/null &); sleep 3
  port=$(grep -o '127.0.0.1:[0-9]*' "$dir/out" | head -1 | cut -d: -f2); pid=$(pgrep -f "config $dir/config.json" | head -1)
  python3 Benchmarks/clients/picows-fanout.py --url "ws://127.0.0.1:$port/ws" --clients 10000 --rounds 0 \
    --trigger-url "http://127.0.0.1:$port/healthz" --server-pid "$pid" --subscribe "" --label "$2" 2>/dev/null | tail -1
  kill "$pid"; sleep 2; rm -rf "$dir"
}
for _ in 1 2; do gw_connect "$1" "cb7a177 handshake only"; gw_connect "$2" "9c26bfa handshake only"; done
