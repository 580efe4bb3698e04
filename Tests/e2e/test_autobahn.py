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


# Cases whose client gives the server one second (`killAfter(1)`) to fail the connection: on a machine
# busy with the rest of the suite that second can run out before the server's loop gets its turn,
# and the client then records "failed by the wrong endpoint". Such a case is run once more on its own;
# any other failure, or a second one, fails the test.
TIMING_REASONS = {"The connection was failed by the wrong endpoint",
                  "The WebSocket opening handshake was never completed!"}


def run_kosoku(kosoku, url, out, args):
    r = subprocess.run([kosoku, *args, "-p", "1", "-o", str(out), url],
                       capture_output=True, text=True, timeout=600)
    index = json.loads((out / "index.json").read_text())
    return r, next(iter(index.values()))


def failures(results):
    return {case: res for case, res in results.items()
            if res["behavior"] not in ("OK", "NON-STRICT", "INFORMATIONAL")
            or res["behaviorClose"] not in ("OK", "INFORMATIONAL")}


def reason(out, res):
    report = json.loads((out / res["reportfile"]).read_text())
    return report.get("resultClose", ""), report.get("result", "")


def test_autobahn_cases_pass(gateway_factory, tmp_path):
    kosoku = shutil.which("kosoku")
    assert kosoku, "kosoku (PyPI) is not installed: run scripts/test, which installs it"
    g = gateway_factory({"server": {"conformanceEcho": True, "maxMessageBytes": 20_000_000, "outboxBytes": 64 << 20}})
    url = f"ws://127.0.0.1:{g.port}/ws/echo"
    out = tmp_path / "autobahn"
    r, results = run_kosoku(kosoku, url, out, ["-x", "12.*", "-x", "13.*"])
    failed = failures(results)
    print(f"autobahn: {len(results) - len(failed)} of {len(results)} cases passed; failed: {sorted(failed)}")
    report = os.environ.get("QRGATE_AUTOBAHN_REPORT_DIR_FOR_TESTS")
    if report:
        shutil.copytree(out, report, dirs_exist_ok=True)
    assert len(results) >= 290, r.stdout[-2000:]
    unexpected = {}
    for case in sorted(set(failed) - EXPECTED_FAILURES):
        why = reason(out, failed[case])
        print(f"autobahn: case {case} failed: {why}")
        if why[0] not in TIMING_REASONS:
            unexpected[case] = why
            continue
        again_out = tmp_path / f"again-{case}"
        _, again = run_kosoku(kosoku, url, again_out, ["-i", case])
        if failures(again):
            unexpected[case] = (why, reason(again_out, again[case]))
    assert not unexpected, f"unexpected failures: {unexpected}"
    assert g.alive()
