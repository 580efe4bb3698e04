#!/bin/bash
# Issue 19's first target, before and after the PNG writer change: 3 000 pending sessions, embedded default,
# no subscriber; one binary at a time, in the order before, after, after, before (100–160 s after start-up).
# usage, from the repository root: idle-fleet-ab.sh BEFORE_BINARY AFTER_BINARY > idle-fleet-ab.jsonl
set -euo pipefail
s=Benchmarks/results/2026-11-30-last-look/idle-fleet.sh
for pair in "$1 before" "$2 after" "$2 after" "$1 before"; do set -- $pair; "$s" "$1" 100 60 "$2" 2>/dev/null; done
