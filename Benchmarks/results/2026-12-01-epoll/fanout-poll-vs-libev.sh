#!/bin/bash
# Fan-out on lws's poll() loop against the libev (epoll) loop, the same binary, now that frames are written
# at once (no POLLOUT toggled per frame); memory store; see ../pairs.sh for the run.
# Usage: [ORDER=reversed] fanout-poll-vs-libev.sh BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
LIBEV=${PAIR_MEMORY/\"server\":\{/\"server\":\{\"eventLoop\":\"libev\",}
pair_runs_configs() { # BINARY
  for _ in 1 2; do
    pair_node 5450 "node-ws at the svg frame size"
    if [ "${ORDER:-}" = reversed ]; then
      pair_gateway "$1" "qrgate libev (epoll)" "$LIBEV"; pair_gateway "$1" "qrgate poll" "$PAIR_MEMORY"
    else
      pair_gateway "$1" "qrgate poll" "$PAIR_MEMORY"; pair_gateway "$1" "qrgate libev (epoll)" "$LIBEV"
    fi
  done
}
pair_runs_configs "$1"
