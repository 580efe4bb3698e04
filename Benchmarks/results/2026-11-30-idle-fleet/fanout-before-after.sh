#!/usr/bin/env bash
# The send-path check for the idle-fleet changes (timerfd loop timer, libcurl's socket API, HTTP bodies written
# behind their headers, 1-bit PNGs): one node on SQLite, 10 000 subscribers of one session, the page's svg frames,
# 10 rounds, the same picows client; the build before (4ed17ce, release) and after, with Node ws at the same frame
# size in the same run; the second half in reversed order.
# Run from the repository root: BEFORE=path/to/qrgate-4ed17ce AFTER=.build/release/qrgate
set -euo pipefail
source Benchmarks/results/pairs.sh
BEFORE=${BEFORE:-/tmp/qrgate-4ed17ce}
AFTER=${AFTER:-.build/release/qrgate}
pair_runs "$BEFORE" "before (4ed17ce)" "$AFTER" "after the idle-fleet changes" "$PAIR_SQLITE"
ORDER=reversed pair_runs "$BEFORE" "before (4ed17ce)" "$AFTER" "after the idle-fleet changes" "$PAIR_SQLITE"
