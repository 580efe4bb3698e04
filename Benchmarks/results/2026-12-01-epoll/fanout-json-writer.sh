#!/bin/bash
# The fan-out with QRGate's own keep-alive (b20dc89) and then also the direct JSON writer (9c26bfa), Node ws
# in the same run; memory store; see ../pairs.sh. Usage: fanout-json-writer.sh KEEPALIVE_BINARY JSON_BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
for _ in 1 2; do
  pair_node 5450 "node"
  pair_gateway "$1" "b20dc89 keepalive" "$PAIR_MEMORY"
  pair_gateway "$2" "9c26bfa json" "$PAIR_MEMORY"
done
