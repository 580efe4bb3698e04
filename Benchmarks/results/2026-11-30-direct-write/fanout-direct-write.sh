#!/bin/bash
# Fan-out with frames queued for a WRITEABLE turn (before) and written at once when nothing is queued (after),
# memory store; see ../pairs.sh for the run.
# Usage: [ORDER=reversed] fanout-direct-write.sh BEFORE_BINARY AFTER_BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
pair_runs "$1" "qrgate queued (WRITEABLE turn per frame)" "$2" "qrgate direct write" "$PAIR_MEMORY"
