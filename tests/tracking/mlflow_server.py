"""A real `mlflow server` for the tracking tests: SQLite backend and artifacts in a temporary folder, a free
port on 127.0.0.1, up when /health answers; stopped by its process group (the tests start it, they end it)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path, port: int | None = None):
        self.root, self.port = Path(root), port or free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc, self.up = None, False

    @property
    def url(self) -> str:
        """The server's address, once it answers: a server started with wait=False is waited for here."""
        if self.proc is not None and not self.up:
            self.wait()
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> "Server":
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job runner process (huey): not needed here
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        self.log = open(self.root / "server.log", "a")  # a file, not a pipe: a full pipe would block the server
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.up = False
        return self.wait() if wait else self

    def wait(self, timeout: float = 120) -> "Server":
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mlflow server exited:\n" + (self.root / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        self.up = True
                        return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError("mlflow server did not answer /health:\n" + (self.root / "server.log").read_text()[-3000:])

    def stop(self, sig=signal.SIGTERM) -> None:
        """The server and its uvicorn child: the process group this object started (its own session)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        self.proc, self.up = None, False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One server for a test module (import it into the module: `from mlflow_server import mlflow_server`)."""
    server = Server(tmp_path_factory.mktemp("mlflow")).start(wait=False)  # starts while the tests prepare
    try:
        yield server
    finally:
        server.stop()
