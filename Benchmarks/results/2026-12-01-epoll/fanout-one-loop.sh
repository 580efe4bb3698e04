#!/bin/bash
# The same build on two loops (the default here, one per core) and on one: whether the second loop is what
# costs the CPU per message above Node's. Usage: fanout-one-loop.sh BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
ONE=${PAIR_MEMORY/\"server\":\{/\"server\":\{\"loops\":1,}
for _ in 1 2; do
  pair_node 5450 node
  pair_gateway "$1" "9c26bfa 2 loops" "$PAIR_MEMORY"
  pair_gateway "$1" "9c26bfa 1 loop" "$ONE"
done
