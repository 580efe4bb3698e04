#!/bin/bash
# The fan-out before and after the default loop became libev with QRGate's own keep-alive: the build before
# (cb7a177) on its default poll loop and on libev, the build after on its defaults; memory store; see
# ../pairs.sh for the run. Usage: fanout-before-after.sh BEFORE_BINARY AFTER_BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
LIBEV=${PAIR_MEMORY/\"server\":\{/\"server\":\{\"eventLoop\":\"libev\",}
for _ in 1 2; do
  pair_node 5450 "node-ws at the svg frame size"
  pair_gateway "$1" "qrgate before, poll (its default)" "$PAIR_MEMORY"
  pair_gateway "$1" "qrgate before, libev" "$LIBEV"
  pair_gateway "$2" "qrgate after (libev, own keep-alive)" "$PAIR_MEMORY"
done
