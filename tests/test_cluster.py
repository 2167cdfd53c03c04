"""nightly on a real Spark standalone cluster: a master and a worker from the installed pyspark.

The cluster runs on loopback with free ports; the job goes through ``spark-submit --master
spark://...`` with the package zipped by :mod:`recspark.packaging` on ``--py-files``, exactly as the
README and ``conf/scheduler/`` run it. The master, the worker and everything they started are
stopped by the fixture's finalizer, whatever the test did (each runs in its own process group).
Select it alone with ``pytest -m cluster``; it is part of the default suite.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyspark
import pytest

from recspark.packaging import build_zip
from tests.conftest import REPO
from tests.test_nightly import DAY1, as_arguments, nightly_overrides, planted_ratings, write_input

pytestmark = pytest.mark.cluster

SPARK_HOME = Path(pyspark.__file__).parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
# Loopback needs no proxy, whatever the environment says.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    url: str
    web_port: int
    work_dir: Path
    logs: list[Path]

    def state(self) -> dict | None:
        """The master's JSON status page, or None while it is not answering."""
        try:
            with _NO_PROXY.open(f"http://127.0.0.1:{self.web_port}/json/", timeout=5) as page:
                return json.load(page)
        except OSError:
            return None


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group, give it time, then SIGKILL whatever is left of the group."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=20)


def _wait_for(condition, what: str, processes: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if condition():
            return
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                pytest.fail(
                    f"{what}: {process.args[1]} exited with {process.returncode}:\n"
                    f"{log.read_text()[-3000:]}"
                )
        time.sleep(1)
    pytest.fail(f"{what} within 180 s; logs:\n" + "\n".join(p.read_text()[-2000:] for p in logs))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request) -> Cluster:
    base = tmp_path_factory.mktemp("cluster")
    port, web_port, worker_web_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SPARK_LOCAL_DIRS": str(base / "local"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_HOME": str(SPARK_HOME),
        "PYSPARK_PYTHON": sys.executable,
    }
    processes: list[subprocess.Popen] = []
    logs: list[Path] = []

    def stop_all() -> None:
        for process in reversed(processes):
            _stop(process)

    request.addfinalizer(stop_all)

    def start(name: str, *arguments: str) -> None:
        log = base / f"{name}.log"
        with open(log, "w") as handle:
            processes.append(
                subprocess.Popen(
                    [str(SPARK_CLASS), *arguments],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
        logs.append(log)

    url = f"spark://127.0.0.1:{port}"
    cluster = Cluster(url, web_port, base / "work", logs)
    start(
        "master",
        "org.apache.spark.deploy.master.Master",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--webui-port",
        str(web_port),
    )
    _wait_for(
        lambda: (cluster.state() or {}).get("status") == "ALIVE", "the master up", processes, logs
    )
    start(
        "worker",
        "org.apache.spark.deploy.worker.Worker",
        url,
        "--host",
        "127.0.0.1",
        "--cores",
        "1",
        "--memory",
        "1g",
        "--webui-port",
        str(worker_web_port),
        "--work-dir",
        str(cluster.work_dir),
    )
    _wait_for(
        lambda: (cluster.state() or {}).get("aliveworkers", 0) >= 1,
        "a worker registered with the master",
        processes,
        logs,
    )
    return cluster


def test_nightly_publishes_through_spark_submit_on_a_standalone_cluster(cluster, tmp_path):
    root = tmp_path / "root"
    ratings = planted_ratings(users=120, items=60, per_user=20, seed=11)
    input_path = write_input(ratings, tmp_path / "input")
    archive = build_zip(tmp_path / "dist" / "recspark.zip")
    overrides = nightly_overrides(root, DAY1, input_path, **{"train.epochs": 3})
    command = [
        str(SPARK_SUBMIT),
        "--master",
        cluster.url,
        "--py-files",
        str(archive),
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        "spark.executor.memory=512m",
        "--conf",
        "spark.cores.max=1",
        "--conf",
        "spark.ui.enabled=false",
        # A tiny table on one core: a few partitions per shuffle, not 200 one-row tasks.
        "--conf",
        "spark.sql.shuffle.partitions=2",
        "--conf",
        "spark.default.parallelism=2",
        "--conf",
        f"spark.local.dir={tmp_path / 'local'}",
        str(REPO / "jobs" / "nightly.py"),
        # Explicit, as a scheduler passes it: recspark imported from the zip cannot find
        # conf/default.yaml beside the package.
        "--config",
        str(REPO / "conf" / "nightly.yaml"),
        *as_arguments(overrides),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=540,
        cwd=tmp_path,
        # spark-submit looks for Spark with PYSPARK_PYTHON (else a bare python3 without pyspark).
        env={
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_HOME": str(SPARK_HOME),
            "PYSPARK_PYTHON": sys.executable,
        },
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["nightly"]["decision"] == "published", summary

    table = pd.read_parquet(summary["outputs"]["partition"])
    assert len(table) == 120 * 10 and table.user_id.nunique() == 120
    assert table.groupby("user_id")["rank"].apply(lambda r: sorted(r) == list(range(1, 11))).all()
    assert set(table.model_version) == {summary["metrics"]["model_version"]}
    assert math.isfinite(summary["metrics"]["rmse"])

    # The master lists the application once it has seen the driver go (a moment after exit).
    deadline = time.monotonic() + 60
    while True:
        state = cluster.state() or {}
        names = [app["name"] for app in state.get("completedapps", [])]
        if "recspark-nightly" in names or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "recspark-nightly" in names, state
    # The executor ran on the worker and fetched the package zip that --py-files shipped.
    assert list(cluster.work_dir.glob("app-*/*/recspark.zip")), sorted(cluster.work_dir.rglob("*"))
