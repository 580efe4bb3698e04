"""Autobahn conformance cases (kosoku) against the WebSocket stack, compression cases excluded.

QRGate's /ws speaks JSON, not echo, so the run targets /ws/echo, which only exists with
server.conformanceEcho = true: the same lws context, callback, reassembly and limits.
"""
import json
import os
import shutil
import subprocess

# Known, explained failures (see README "Conformance"): lws answers only the newest of several
# pings that arrive before the socket is writable, which RFC 6455 5.5.3 allows; 2.11 hits it
# only when the machine is busy.
EXPECTED_FAILURES = {"2.10", "2.11"}


def test_autobahn_cases_pass(gateway_factory, tmp_path):
    kosoku = shutil.which("kosoku")
    assert kosoku, "kosoku (PyPI) is not installed: run scripts/test, which installs it"
    g = gateway_factory({"server": {"conformanceEcho": True, "maxMessageBytes": 20_000_000, "outboxBytes": 64 << 20}})
    out = tmp_path / "autobahn"
    r = subprocess.run([kosoku, "-x", "12.*", "-x", "13.*", "-p", "1", "-o", str(out),
                        f"ws://127.0.0.1:{g.port}/ws/echo"], capture_output=True, text=True, timeout=600)
    index = json.loads((out / "index.json").read_text())
    results = next(iter(index.values()))
    failed = sorted(case for case, res in results.items()
                    if res["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL") or res["behaviorClose"] not in ("OK", "INFORMATIONAL"))
    passed = len(results) - len(failed)
    print(f"autobahn: {passed} of {len(results)} cases passed; failed: {failed}")
    report = os.environ.get("QRGATE_AUTOBAHN_REPORT_DIR_FOR_TESTS")
    if report:
        shutil.copytree(out, report, dirs_exist_ok=True)
    assert len(results) >= 290, r.stdout[-2000:]
    assert set(failed) <= EXPECTED_FAILURES, f"unexpected failures: {sorted(set(failed) - EXPECTED_FAILURES)}"
    assert g.alive()
