#!/bin/bash
# The accept path before (2b48ff2) and after (cc28d08: one lock per accept, the spare descriptor), Benchmarks/run
# with Node ws in the same run, in the order before, after, after, before. Run from the repository root on a
# clean tree; it checks the two commits out in turn and comes back to main.
set -euo pipefail
out=Benchmarks/results/2026-12-01-shed
i=0
for rev in 2b48ff2 cc28d08 cc28d08 2b48ff2; do
  i=$((i + 1))
  git checkout -q "$rev"
  Benchmarks/run --full --only fanout,peers --peers node-ws --no-crosscheck --tag "$i-$rev" --out-dir /tmp/shed-runs > "/tmp/shed-run-$i.log" 2>&1 || true
  git checkout -q main
done
cp /tmp/shed-runs/*.md /tmp/shed-runs/*.json "$out"/
