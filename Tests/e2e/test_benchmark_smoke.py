"""The benchmark tooling runs and writes a parseable report (tiny sizes; no timing is asserted)."""
import json
import os
import subprocess

from conftest import ROOT, gateway_env


def test_benchmark_smoke_run_writes_a_report(tmp_path):
    r = subprocess.run([os.path.join(ROOT, "Benchmarks", "run"), "--smoke", "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=gateway_env())
    assert r.returncode == 0, r.stderr[-3000:]
    reports = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    assert len(reports) == 1
    data = json.loads((tmp_path / reports[0]).read_text())
    scenarios = {(x["scenario"], x.get("server")) for x in data["runs"]}
    assert {("fanout", "qrgate"), ("countdown", "qrgate"), ("firehose", "qrgate"), ("footprint", "qrgate"),
            ("refresh", "qrgate (defaults)")} <= scenarios
    assert any(s == "fanout" and srv != "qrgate" for s, srv in scenarios), "no peer ran"
    fleet = [x for x in data["runs"] if x["scenario"] == "fleet"]
    # Embedded; out of process created as users arrive, without and with subscribers; all created at once.
    assert len(fleet) == 4, fleet
    assert "created over" in fleet[1]["server"] and "created over" in fleet[2]["server"], fleet
    assert "all created at once" in fleet[3]["server"], fleet[3]
    # The fleet rows report the gateway's CPU, RSS and database growth; with subscribers, rotations were seen.
    assert all(x["cpu_share"] >= 0 and x["rss_mib"] > 0 and "db_growth_bytes_per_min" in x for x in fleet), fleet
    for row in fleet[2:]:
        assert row["delivered"] > 0 and row["p99_ms"] >= 0, row
    for run in data["runs"]:
        if run["scenario"] == "fleet":
            continue
        if run["scenario"] in ("countdown", "firehose"):
            # Ticks counted over a window of D seconds: each stream may show one tick more or less at its edges.
            streams = run["clients"] if run["scenario"] == "countdown" else run["sessions"]
            assert abs(run["delivered"] - run["expected"]) <= streams, run
        else:
            assert run["delivered"] == run["expected"], run
    # Every fan-out reports the server's CPU per delivered message, peers included, at QRGate's frame size.
    fanouts = [x for x in data["runs"] if x["scenario"] == "fanout"]
    # (/proc counts CPU in 10 ms ticks: at smoke size a figure may be 0, never missing.)
    assert all(x.get("server_us_per_message", -1) >= 0 for x in fanouts), fanouts
    qrgate = next(x for x in fanouts if x["server"] == "qrgate")
    for peer in fanouts:
        assert abs(peer["bytes_per_message"] - qrgate["bytes_per_message"]) <= 16, (peer["server"], peer["bytes_per_message"])
    assert (tmp_path / reports[0].replace(".json", ".md")).read_text().startswith("# QRGate benchmarks")
