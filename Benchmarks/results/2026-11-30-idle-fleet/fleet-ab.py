#!/usr/bin/env python3
"""The fleet scenario (Benchmarks/run --full --only fleet) against two gateway builds, alternating:
BEFORE_DIR and AFTER_DIR each hold a `qrgate` binary; the simulator out of process and the load client
(qrgate-bench) are the current build's, so only the gateway differs. One JSON line per run.
Usage, from the repository root: fleet-ab.py BEFORE_DIR AFTER_DIR [PAIRS]"""
import importlib.machinery, importlib.util, json, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
loader = importlib.machinery.SourceFileLoader("bench_run", os.path.join(ROOT, "Benchmarks", "run"))
run = importlib.util.module_from_spec(importlib.util.spec_from_loader("bench_run", loader))
loader.exec_module(run)

before, after = sys.argv[1], sys.argv[2]
pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
S = dict(fl_embedded=3000, fl_sessions=10000, fl_seconds=60, fl_first=60, fl_next=20)
bench_bin = os.path.join(ROOT, ".build", "release", "qrgate-bench")
real_simulator = run.simulator
# The simulator out of process is always the current build's, so both gateways get the same answers.
run.simulator = lambda build, settings: real_simulator(os.path.join(ROOT, ".build", "release"), settings)
for _ in range(pairs):
    for label, build in (("before", before), ("after", after)):
        for r in run.fleet(build, bench_bin, S):
            print(json.dumps(dict(build=label, server=r["server"], sessions=r.get("sessions"), cpu_share=r.get("cpu_share"),
                                  rss_mib=r.get("rss_mib"), db_growth_bytes_per_min=r.get("db_growth_bytes_per_min"),
                                  p50_ms=r.get("p50_ms"), p99_ms=r.get("p99_ms"), delivered=r.get("delivered"))), flush=True)
