#!/bin/bash
# Fan-out with the SQLite store: events published at once (before) and only once stored (after); see
# ../pairs.sh for the run.
# Usage: [ORDER=reversed] fanout-sqlite.sh BEFORE_BINARY AFTER_BINARY > results.jsonl
cd "$(dirname "$0")/../../.."
. Benchmarks/results/pairs.sh
pair_runs "$1" "qrgate sqlite, published at once" "$2" "qrgate sqlite, published once stored" "$PAIR_SQLITE"
