"""One 10 000-session fleet, created over 20 s (as users arrive), simulator out of process, one subscriber each with the
page's formats; prints qr_generated p50/p99. From the repository root, after a release build:
  python3 Benchmarks/results/2026-12-01-lazy/fleet10k.py LABEL '{config overrides}' [sessions] [seconds]  (PERF=file: a profile;
  CLIENT_LOOP=libev|poll: how the load client waits, for builds that have --client-loop)"""
import importlib.machinery, importlib.util, json, os, sys, tempfile, time, shutil, subprocess, threading
spec = importlib.util.spec_from_loader("brun", importlib.machinery.SourceFileLoader("brun", "/work/main/Benchmarks/run"))
B = importlib.util.module_from_spec(spec); spec.loader.exec_module(B)
label, extra = sys.argv[1], json.loads(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 30
build = os.environ.get("BUILD", ".build/release")
os.chdir("/work/main")
rotation = {"firstQrSeconds": 60, "nextQrSeconds": 20, "maxRefs": 1000000}
sim, sport, simcfg = B.simulator(build, dict(rotation, **extra.pop("simulator", {})))
data = tempfile.mkdtemp(prefix="qrgate-fleet-")
cfg = {"qr": {"maxAttempts": 1000000}, "log": {"level": "warning"}, "demoSession": "", "store": {"path": os.path.join(data, "q.sqlite")},
       "server": B.BASE_CONFIG["server"],
       "upstream": dict(B.BASE_CONFIG["upstream"], mode="evolution", baseURL=f"http://127.0.0.1:{sport}", apiKey="qrgate-simulator-key")}
for k, v in extra.items():
    if isinstance(v, dict): cfg.setdefault(k, {}).update(v)
    else: cfg[k] = v
g, port = B.gateway(build, cfg)


def store_wait():
    """qrgate_store_write_duration_seconds's buckets: {le: count}."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {l.split('"')[1]: float(l.split()[-1]) for l in text.splitlines() if l.startswith("qrgate_store_write_duration_seconds_bucket")}


try:
    B.create_spread(port, "f", n, 20)
    B.wait_qrs(port, n)
    time.sleep(5)
    perf = os.environ.get("PERF")
    if perf:
        subprocess.Popen(["bash", "-c", f"sleep 25; perf record -F 499 -g -p {g.pid} -o {perf} -- sleep 20 >/dev/null 2>&1"])
    before = store_wait()
    r = B.bench(B.bench_path(build) if hasattr(B, "bench_path") else os.path.join(build, "qrgate-bench"),
                ["countdown", "--url", f"ws://127.0.0.1:{port}/ws", "--sessions", str(n), "--per-session", "1", "--prefix", "f",
                 "--match", "qr_generated", "--formats", "svg", "--duration", str(seconds), "--server-pid", str(g.pid)]
                + (["--client-loop", os.environ["CLIENT_LOOP"]] if os.environ.get("CLIENT_LOOP") else []), timeout=1800)
    print(json.dumps(r), file=sys.stderr)
    after = store_wait()
    print("store write wait during the window (le: count): " + ", ".join(f"{k}: {after[k] - before.get(k, 0)}" for k in after), file=sys.stderr)
    print(json.dumps({"label": label, "p50": r.get("p50_ms"), "p99": r.get("p99_ms"), "max": r.get("max_ms"), "delivered": r.get("delivered"),
                      "cpu": r.get("server_cpu_share"), "client_cpu": r.get("client_cpu_share"),
                      "client_loop": r.get("client_loop", "poll")}), flush=True)
finally:
    B.stop(g); B.stop(sim); os.unlink(simcfg); shutil.rmtree(data, ignore_errors=True)
