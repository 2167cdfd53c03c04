"""A real MLflow tracking server for tests: ``mlflow server`` with a SQLite store on loopback.

Tracking and the model registry are read back through ``MlflowClient`` from a server that stores
what it is sent, as a deployment's does; a mock would only agree with our reading of the REST
API. The server is the ``mlflow`` console script beside this Python (the ``mlflow`` extra); tests
reach it through the ``mlflow_server`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_SECONDS = 300.0  # a few seconds on a quiet machine; over 80 s seen on a loaded 2-core one


@dataclass
class MlflowServer:
    """A running ``mlflow server``; :meth:`stop` ends it. ``uri`` is its ``http://`` address."""

    uri: str
    folder: Path
    process: subprocess.Popen

    def log_tail(self, lines: int = 30) -> str:
        log = self.folder / "server.log"
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """End the server's process group (gunicorn or uvicorn and its workers)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(folder: Path) -> MlflowServer:
    """Start ``mlflow server`` under ``folder`` (SQLite store, local artifacts) and wait for its
    ``/health``. Skips the calling test when mlflow is not installed beside this Python."""
    executable = Path(sys.executable).parent / "mlflow"
    if not executable.exists():
        pytest.skip(f"no mlflow at {executable}: pip install -e .[mlflow] to run MLflow tests")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(executable),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(folder / "server.log", "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", folder, process)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with {process.returncode}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"mlflow server did not answer in {STARTUP_SECONDS}s:\n{server.log_tail()}"
            )
        time.sleep(0.5)
