"""Starts the real qrgate binary on 127.0.0.1 and an ephemeral port for end-to-end tests."""
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("QRGATE_BIN_FOR_TESTS") or os.path.join(ROOT, ".build", "debug", "qrgate")


# Environment variables the gateway reads as configuration besides QRGATE_* (Config.environmentAliases):
# a developer's own must not leak into the tests.
CONFIG_ENV_ALIASES = {"EVOLUTION_API_BASE_URL", "EVOLUTION_API_KEY", "SUPABASE_JWT_SECRET", "DATABASE_URL"}


def gateway_env():
    """The environment a qrgate process gets: without the developer's own configuration variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QRGATE_") and k not in CONFIG_ENV_ALIASES}


def qrgate(*args, timeout=30, env=None):
    """Runs a qrgate command to its end (output captured), in `gateway_env()` unless `env` is given."""
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env or gateway_env())


def qrgate_process(*args):
    """Starts a qrgate command that runs on (`simulate`), its stdout a pipe, in `gateway_env()`."""
    return subprocess.Popen([BINARY, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=gateway_env())


class Gateway:
    """One running `qrgate serve --port 0` with its own config file."""

    def __init__(self, config: dict, extra_args=(), port=0, nofile=None):
        # Each gateway gets its own database unless the test names one (restart tests do).
        if "store" not in config:
            self.data_dir = tempfile.mkdtemp(prefix="qrgate-test-")
            config = {**config, "store": {"path": os.path.join(self.data_dir, "qrgate.sqlite")}}
        self.config_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(config, self.config_file)
        self.config_file.close()
        env = gateway_env()
        # `nofile`: an open-files limit of its own (soft and hard), for the tests of what happens at that limit;
        # util-linux's prlimit sets it and then becomes the gateway (exec: the same pid).
        limit = ["prlimit", f"--nofile={nofile}:{nofile}"] if nofile else []
        self.proc = subprocess.Popen(
            [*limit, BINARY, "serve", "--port", str(port), "--config", self.config_file.name,
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

    def make(config=None, extra_args=(), port=0, nofile=None):
        g = Gateway(config or {}, extra_args, port, nofile)
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


class Postgres:
    """A throwaway PostgreSQL cluster: initdb in a temp directory, a free loopback port, stopped at the end.
    The server refuses to run as root, so as root it runs as the `postgres` user Debian's package makes."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (Debian's postgresql package): scripts/setup --test installs it")
        self.bin = os.path.dirname(bins[-1])
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.dir = tempfile.mkdtemp(prefix="qrgate-pg-")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        subprocess.run([*self.as_user, f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        self.start()

    def start(self):
        subprocess.run([*self.as_user, f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log", "-w", "-t", "60",
                        "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                        "start"], check=True, capture_output=True, timeout=90)

    def stop(self, mode="immediate"):
        subprocess.run([*self.as_user, f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=60)

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, database, statement):
        """Runs one statement with psql; returns the rows as lists of strings."""
        out = subprocess.run([f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
                              "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", statement],
                             check=True, capture_output=True, text=True, timeout=30).stdout
        return [line.split("\t") for line in out.splitlines()]

    def new_database(self):
        name = "t_" + uuid.uuid4().hex[:12]
        self.sql("postgres", f"CREATE DATABASE {name}")
        return name

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    pg = Postgres()
    yield pg
    pg.close()
