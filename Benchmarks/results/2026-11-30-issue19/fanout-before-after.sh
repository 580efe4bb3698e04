#!/bin/bash
# Fan-out before (ccfb527, the session's start) and after issue 19's changes, memory store; see ../pairs.sh for
# the run (Node ws at the same frame size in the same run).
# Usage: [ORDER=reversed] fanout-before-after.sh BEFORE_BINARY AFTER_BINARY > fanout-before-after.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
pair_runs "$1" "qrgate before (ccfb527, the page's svg frame)" "$2" "qrgate after (HEAD, the page's svg frame)" "$PAIR_MEMORY"
