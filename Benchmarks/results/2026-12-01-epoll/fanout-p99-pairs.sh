#!/bin/bash
# More pairs for the p99: the build before (cb7a177, poll) and after (9c26bfa, libev, our keep-alive, JSON writer),
# on their defaults, Node ws in each pair; two pairs in each order. Usage: fanout-p99-pairs.sh BEFORE AFTER > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
pair_runs "$1" "qrgate before (cb7a177, poll)" "$2" "qrgate after (9c26bfa, libev)" "$PAIR_MEMORY"
ORDER=reversed pair_runs "$1" "qrgate before (cb7a177, poll)" "$2" "qrgate after (9c26bfa, libev)" "$PAIR_MEMORY"
