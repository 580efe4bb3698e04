#!/bin/bash
# Fan-out on lws's poll() loop against the libev (epoll) loop, the same binary, now that frames are written
# at once (no POLLOUT toggled per frame); memory store; see ../pairs.sh for the run.
# Usage: [ORDER=reversed] fanout-poll-vs-libev.sh BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
LIBEV=${PAIR_MEMORY/\"server\":\{/\"server\":\{\"eventLoop\":\"libev\",}
pair_runs "$1" "qrgate poll" "$1" "qrgate libev (epoll)" "$PAIR_MEMORY" "$LIBEV"
