#!/usr/bin/env bash
# The send-path check for the cluster change (issue 17): one node on SQLite, 10 000 subscribers of one session,
# the page's svg frames, 10 rounds, the same picows client; the build before the change (83a17dd, release) and
# after it, with Node ws at the same frame size in the same run; the second half in reversed order.
# Run from the repository root: BEFORE=path/to/qrgate-83a17dd AFTER=.build/release/qrgate
set -euo pipefail
source Benchmarks/results/pairs.sh
BEFORE=${BEFORE:-/tmp/qrgate-before-cluster}
AFTER=${AFTER:-.build/release/qrgate}
pair_runs "$BEFORE" "before the cluster (83a17dd)" "$AFTER" "after the cluster" "$PAIR_SQLITE"
ORDER=reversed pair_runs "$BEFORE" "before the cluster (83a17dd)" "$AFTER" "after the cluster" "$PAIR_SQLITE"
