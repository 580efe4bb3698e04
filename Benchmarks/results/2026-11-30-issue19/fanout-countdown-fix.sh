#!/bin/bash
# Fan-out before and after the countdown fix (a QR issued inside a countdown slot's window got a tick within
# the second), memory store; see ../pairs.sh for the run.
# Usage: [ORDER=reversed] fanout-countdown-fix.sh BEFORE_BINARY AFTER_BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
pair_runs "$1" "qrgate before the countdown fix" "$2" "qrgate after the countdown fix" "$PAIR_MEMORY"
