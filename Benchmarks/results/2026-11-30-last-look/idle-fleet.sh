#!/bin/bash
# The embedded default with 3 000 pending sessions and no subscriber (issue 19's first target), one gateway
# binary at a time: WhatsApp-like rotations (first QR 60 s, then every 20 s), SQLite, the simulator in process.
# Prints the process's CPU (share of one core) from START to START+WINDOW seconds after start-up — after
# 100 s the rotations run in their steady 20 s rhythm — with each thread's share, and the database growth.
# Also prints (to stderr, "# in window:") what the gateway's /metrics counted in the window: new codes, expiries,
# upstream requests. EXTRA='{"qr": {...}}' merges settings into the config; PERF=FILE records a 30 s profile.
# usage, from the repository root: idle-fleet.sh BINARY [START] [WINDOW] [LABEL]
set -euo pipefail
bin=$1; start=${2:-100}; window=${3:-60}; label=${4:-$1}
dir=$(mktemp -d /tmp/idle-fleet.XXXXXX)
python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
import os
extra = json.loads(os.environ.get("EXTRA", "{}"))
cfg = {"qr": {"maxAttempts": 1000000}, "log": {"level": "warning"}, "demoSession": "", "store": {"path": d + "/q.sqlite"},
           "simulator": {"firstQrSeconds": 60, "nextQrSeconds": 20, "maxRefs": 1000000},
           "sessions": [{"sessionId": f"e{i}"} for i in range(3000)]}
for k, v in extra.items(): cfg.setdefault(k, {}).update(v)
json.dump(cfg, open(d + "/cfg.json", "w"))
PY
"$bin" serve --port 0 --config "$dir/cfg.json" --static-dir static > "$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
sleep "$start"
threads() { for t in /proc/$pid/task/*; do echo "$(basename "$t") $(awk '{print $14+$15}' "$t/stat")"; done | sort; }
port=$(grep -o "127.0.0.1:[0-9]*" "$dir/log" | head -1 | cut -d: -f2)
m() { curl -s "http://127.0.0.1:$port/metrics" | grep -E "^qrgate_(events_pushed_total|upstream_requests_total)" | sort; }
m > "$dir/m0"
if [ -n "${PERF:-}" ]; then perf record -F 499 -g -p $pid -o "$PERF" -- sleep 30 >/dev/null 2>&1 & fi
threads > "$dir/t0"; d0=$(du -sb "$dir" | cut -f1)
sleep "$window"
threads > "$dir/t1"; d1=$(du -sb "$dir" | cut -f1)
m > "$dir/m1"; join <(sed "s/ /\t/" "$dir/m0" | sort) <(sed "s/ /\t/" "$dir/m1" | sort) -t $'\t' | awk -F"\t" '{print "# in window:", $1, $3-$2}' >&2
hz=$(getconf CLK_TCK)
join "$dir/t0" "$dir/t1" | awk -v w="$window" -v hz="$hz" -v label="$label" -v growth=$(( (d1 - d0) * 60 / window / 1024 )) '
  { d = $3 - $2; total += d; if (d > 0) parts = parts sprintf("%s\"%s\": %.3f", (parts ? ", " : ""), $1, d / (w * hz)) }
  END { printf "{\"label\": \"%s\", \"cpu_share\": %.3f, \"threads\": {%s}, \"db_kib_per_min\": %d}\n", label, total / (w * hz), parts, growth }'
