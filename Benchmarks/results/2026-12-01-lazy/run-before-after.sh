#!/bin/bash
# The send path before (cbcd5dc) and after (ad4515c: frames and pictures made when first needed, the Hub's
# picturesWanted, the countdown wheel), Benchmarks/run with Node ws in the same run, in the order before, after, after, before.
# Run from the repository root on a clean tree; it checks the two commits out in turn and comes back to main.
set -euo pipefail
out=Benchmarks/results/2026-12-01-lazy
i=0
for rev in cbcd5dc ad4515c ad4515c cbcd5dc; do
  i=$((i + 1))
  git checkout -q "$rev"
  Benchmarks/run --full --only fanout,peers --peers node-ws --no-crosscheck --tag "$i-$rev" --out-dir /tmp/lazy-runs > "/tmp/lazy-run-$i.log" 2>&1 || true
  git checkout -q main
done
cp /tmp/lazy-runs/*.md /tmp/lazy-runs/*.json "$out"/
