#!/usr/bin/env bash
# Countdowns before and after "ticks are not events" (issue 19), one script, same client, same simulator:
# 1 000 sessions × 10 subscribers, 10 s, the simulator out of process. BEFORE and AFTER are two release
# builds' directories (each with qrgate); the client and the simulator are AFTER's.
# Usage: countdown-before-after.sh BEFORE_BUILD_DIR AFTER_BUILD_DIR OUT.jsonl
set -euo pipefail
before=$1 after=$2 out=$3
tmp=$(mktemp -d)
echo '{"simulator":{"firstQrSeconds":3600,"nextQrSeconds":3600},"log":{"level":"warning"}}' > "$tmp/sim.json"
"$after/qrgate" simulate --port 0 --config "$tmp/sim.json" > "$tmp/sim.out" 2>/dev/null &
sim=$!
trap 'kill $sim 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do grep -q listening "$tmp/sim.out" && break; sleep 0.2; done
sport=$(sed -E 's/.*:([0-9]+).*/\1/' "$tmp/sim.out")
python3 - "$tmp/gw.json" "$sport" <<'PY'
import json, sys
json.dump({"sessions": [{"sessionId": f"s{i}"} for i in range(1000)], "demoSession": "", "qr": {"ttlSeconds": 3600},
           "store": {"mode": "memory"}, "log": {"level": "warning"},
           "server": {"maxConnectionsPerIP": 100000, "messagesPerSecond": 100000},
           "upstream": {"mode": "evolution", "baseURL": f"http://127.0.0.1:{sys.argv[2]}", "apiKey": "qrgate-simulator-key", "concurrency": 1024}},
          open(sys.argv[1], "w"))
PY
for run in 1 2; do
  for label in before after; do
    dir=$([ $label = before ] && echo "$before" || echo "$after")
    "$dir/qrgate" serve --port 0 --config "$tmp/gw.json" --static-dir static > "$tmp/gw.out" 2>/dev/null &
    gw=$!
    for _ in $(seq 100); do grep -q listening "$tmp/gw.out" && break; sleep 0.2; done
    port=$(sed -E 's/.*:([0-9]+).*/\1/' "$tmp/gw.out")
    sleep 8  # every session shows its QR
    "$after/qrgate-bench" countdown --url "ws://127.0.0.1:$port/ws" --sessions 1000 --per-session 10 --duration 10 \
      --server-pid $gw --label "qrgate-$label" --out "$tmp/r.json" 2>/dev/null
    python3 -c "import json,sys; r=json.load(open('$tmp/r.json')); r['build']='$label'; r['run']=$run; print(json.dumps(r))" >> "$out"
    kill $gw; wait $gw 2>/dev/null || true
  done
done
