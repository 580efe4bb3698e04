#!/usr/bin/env python3
"""10 000 pending sessions, simulator out of process, one subscriber each (svg): variants of the gateway config.
usage, from the repository root: fleet-variants.py BUILD_DIR VARIANT... (BUILD_DIR holds `qrgate`, e.g. .build/release)   (VARIANT: poll | libev | webhooks | libev+webhooks)"""
import importlib.machinery, importlib.util, json, os, socket, sys, tempfile, shutil, time
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
loader = importlib.machinery.SourceFileLoader("bench_run", os.path.join(ROOT, "Benchmarks", "run"))
run = importlib.util.module_from_spec(importlib.util.spec_from_loader("bench_run", loader)); loader.exec_module(run)
build = sys.argv[1]
n, seconds = 10000, 60
bench_bin = os.path.join(ROOT, ".build", "release", "qrgate-bench")
for variant in sys.argv[2:]:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); gport = s.getsockname()[1]; s.close()
    rotation = {"firstQrSeconds": 60, "nextQrSeconds": 20, "maxRefs": 1000000}
    if "webhooks" in variant:
        rotation["webhookURL"] = f"http://127.0.0.1:{gport}/webhooks/evolution"
    sim, sport, simcfg = run.simulator(build, rotation)
    data = tempfile.mkdtemp(prefix="qrgate-fleetx-")
    server = dict(run.BASE_CONFIG["server"])
    if "libev" in variant: server["eventLoop"] = "libev"
    cfg = {"qr": {"maxAttempts": 1000000}, "log": {"level": "warning"}, "demoSession": "",
           "store": {"path": os.path.join(data, "q.sqlite")}, "sessions": [{"sessionId": f"f{i}"} for i in range(n)],
           "server": server,
           "upstream": dict(run.BASE_CONFIG["upstream"], mode="evolution", baseURL=f"http://127.0.0.1:{sport}", apiKey="qrgate-simulator-key")}
    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False); json.dump(cfg, f); f.close()
    g, port = run.start([os.path.join(build, "qrgate"), "serve", "--port", str(gport), "--config", f.name, "--static-dir", os.path.join(ROOT, "static")])
    try:
        run.wait_qrs(port, n); time.sleep(5)
        idle = run.sample(g.pid, data, 30)
        r = run.bench(bench_bin, ["countdown", "--url", f"ws://127.0.0.1:{port}/ws", "--sessions", str(n), "--per-session", "1",
                                  "--prefix", "f", "--match", "qr_generated", "--formats", "svg", "--duration", str(seconds),
                                  "--server-pid", str(g.pid)], timeout=1800)
        print(json.dumps(dict(variant=variant, idle_cpu=round(idle["cpu_share"], 3), p50_ms=r.get("p50_ms"), p99_ms=r.get("p99_ms"),
                              cpu_share=r.get("server_cpu_share"), delivered=r.get("delivered"), rss_mib=run.rss_mib(g.pid))), flush=True)
    finally:
        run.stop(g); run.stop(sim); os.unlink(simcfg); shutil.rmtree(data, ignore_errors=True)
