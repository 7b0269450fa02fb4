"""Fixtures that start a real `freshet` server for the Python client suites.

The binary is `target/debug/freshet` (or $FRESHET_BIN). Each server gets its own working
directory (an allowed root for local files) and data directory, and listens on free ports.
"""

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("FRESHET_BIN", REPO / "target" / "debug" / "freshet"))
FIXTURES = REPO / "tests" / "data"
LISTEN = re.compile(r"(\w+) listening on (\S+)")


class FreshetServer:
    """A running server; `stop()` sends SIGTERM."""

    def __init__(self, work_dir: Path, config: str | None = None, args: tuple[str, ...] = (), env: dict | None = None):
        self.work_dir = work_dir
        self.data_dir = work_dir / "data-dir"
        self.logs: list[str] = []
        self.addresses: dict[str, str] = {}
        command = [
            str(BINARY), "serve",
            "--data-dir", str(self.data_dir),
            "--pg-addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0",
            "--flight-addr", "127.0.0.1:0",
            *args,
        ]
        if config is not None:
            path = work_dir / "freshet.toml"
            path.write_text(config)
            command += ["--config", str(path)]
        env = dict(os.environ, RUST_LOG="info", **(env or {}))
        self.process = subprocess.Popen(
            command, cwd=work_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self._ready = threading.Event()
        threading.Thread(target=self._read_logs, daemon=True).start()
        if not self._ready.wait(timeout=120):
            self.stop()
            raise RuntimeError("freshet did not start:\n" + "\n".join(self.logs))

    def _read_logs(self):
        for line in self.process.stderr:
            self.logs.append(line.rstrip())
            match = LISTEN.search(line)
            if match:
                self.addresses[match.group(1)] = match.group(2)
                # The server reports its HTTP address last, once every listener is bound.
                if match.group(1) == "http":
                    self._ready.set()
        self._ready.set()

    def _host_port(self, name: str) -> tuple[str, int]:
        if name not in self.addresses:
            raise RuntimeError(f"freshet did not report a {name} address:\n" + "\n".join(self.logs))
        host, port = self.addresses[name].rsplit(":", 1)
        return host, int(port)

    @property
    def pg_port(self) -> int:
        return self._host_port("pgwire")[1]

    def pg_dsn(self, user: str = "pytest", password: str | None = None) -> str:
        host, port = self._host_port("pgwire")
        dsn = f"host={host} port={port} user={user} dbname=freshet"
        return dsn + (f" password={password}" if password else "")

    @property
    def flight_uri(self) -> str:
        host, port = self._host_port("flight")
        return f"grpc://{host}:{port}"

    @property
    def http_url(self) -> str:
        host, port = self._host_port("http")
        return f"http://{host}:{port}"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """A fresh working directory with the fixtures of tests/data copied to ./data."""
    shutil.copytree(FIXTURES, tmp_path / "data")
    return tmp_path


@pytest.fixture
def start_server(work_dir: Path):
    """Factory: start_server(config=None, args=(), env=None) -> FreshetServer, stopped at teardown."""
    servers = []

    def start(config: str | None = None, args: tuple[str, ...] = (), env: dict | None = None) -> FreshetServer:
        server = FreshetServer(work_dir, config=config, args=args, env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server) -> FreshetServer:
    """A server without authentication."""
    return start_server()
