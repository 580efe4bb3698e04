"""Starts the real qrgate binary on 127.0.0.1 and an ephemeral port for end-to-end tests."""
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("QRGATE_BIN_FOR_TESTS") or os.path.join(ROOT, ".build", "debug", "qrgate")


class Gateway:
    """One running `qrgate serve --port 0` with its own config file."""

    def __init__(self, config: dict, extra_args=()):
        # Each gateway gets its own database unless the test names one (restart tests do).
        if "store" not in config:
            self.data_dir = tempfile.mkdtemp(prefix="qrgate-test-")
            config = {**config, "store": {"path": os.path.join(self.data_dir, "qrgate.sqlite")}}
        self.config_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(config, self.config_file)
        self.config_file.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("QRGATE_")}
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--port", "0", "--config", self.config_file.name,
             "--static-dir", os.path.join(ROOT, "static"), *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line or self.proc.poll() is not None:
                break
        m = re.match(r"listening on https?://([\d.]+):(\d+)", line or "")
        if not m:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"gateway did not start: {line!r} {err}")
        self.host, self.port = m.group(1), int(m.group(2))

    @property
    def http(self):
        return f"http://{self.host}:{self.port}"

    @property
    def ws(self):
        return f"ws://{self.host}:{self.port}/ws"

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.config_file.name) if os.path.exists(self.config_file.name) else None
        return self.proc.returncode


@pytest.fixture
def gateway_factory():
    started = []

    def make(config=None, extra_args=()):
        g = Gateway(config or {}, extra_args)
        started.append(g)
        return g

    yield make
    for g in started:
        g.stop()


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory({})


@pytest.fixture(scope="module")
def driver():
    """Headless Chromium, one per test module (the page, the client, the embedding tests)."""
    from pagekit import chrome  # pagekit imports this module: import it when the fixture runs
    d = chrome()
    d.set_page_load_timeout(20)
    d.set_script_timeout(10)
    yield d
    d.quit()
