#!/bin/bash
# The build after (9c26bfa: our keep-alive, the JSON writer) on poll and on libev, two pairs in each order, Node ws
# in each pair: which loop gives the better round p99 now. Usage: fanout-after-poll-vs-libev.sh BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
POLL=${PAIR_MEMORY/\"server\":\{/\"server\":\{\"eventLoop\":\"poll\",}
LIBEV=${PAIR_MEMORY/\"server\":\{/\"server\":\{\"eventLoop\":\"libev\",}
pair_runs "$1" "9c26bfa poll" "$1" "9c26bfa libev" "$POLL" "$LIBEV"
ORDER=reversed pair_runs "$1" "9c26bfa poll" "$1" "9c26bfa libev" "$POLL" "$LIBEV"
