"""nightly on a real Spark standalone cluster: a master and a worker from the installed pyspark.

The cluster runs on loopback with free ports; the job goes through ``spark-submit --master
spark://...`` with the package zipped by :mod:`recspark.packaging` on ``--py-files``, exactly as the
README and ``conf/scheduler/`` run it. The master, the worker and everything they started are
stopped by the fixture's finalizer, whatever the test did (each runs in its own process group).
Select it alone with ``pytest -m cluster``; it is part of the default suite.

The ``archives`` test (``pytest -m archives``, add ``-s`` for its timings) runs the same job from a
packed environment: ``scripts/pack-env`` packs the venv (without the editable recspark) with
venv-pack once per session, ``--archives env.tar.gz#env`` ships it and ``spark.pyspark.python`` is
``./env/bin/python``, so the executors run the Python unpacked into their work folder, not the
repo's ``.venv``. It moves several copies of the venv (~6 GB each) through the disk and takes a
few minutes; it skips, saying why, where the temporary folder has too little room.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyspark
import pytest

from recspark.packaging import build_zip
from tests.conftest import REPO
from tests.e2e.test_nightly import (
    DAY1,
    as_arguments,
    nightly_overrides,
    planted_ratings,
    write_input,
)

pytestmark = pytest.mark.cluster

SPARK_HOME = Path(pyspark.__file__).parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
VENV = Path(sys.prefix)
PACK_ENV = REPO / "scripts" / "pack-env"
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


def submit_nightly(cluster: Cluster, tmp_path: Path, options: list[str]) -> dict:
    """spark-submit ``jobs/nightly.py`` on ``cluster`` with ``options``; its summary line.

    The input is a small planted table under ``tmp_path``; ``options`` names the package zip
    (``--py-files``) and the Python the executors run.
    """
    root = tmp_path / "root"
    ratings = planted_ratings(users=120, items=60, per_user=20, seed=11)
    input_path = write_input(ratings, tmp_path / "input")
    overrides = nightly_overrides(root, DAY1, input_path, **{"train.epochs": 3})
    command = [
        str(SPARK_SUBMIT),
        "--master",
        cluster.url,
        *options,
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
    (tmp_path / "spark-submit.log").write_text(result.stderr)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["nightly"]["decision"] == "published", summary

    table = pd.read_parquet(summary["outputs"]["partition"])
    assert len(table) == 120 * 10 and table.user_id.nunique() == 120
    assert table.groupby("user_id")["rank"].apply(lambda r: sorted(r) == list(range(1, 11))).all()
    assert set(table.model_version) == {summary["metrics"]["model_version"]}
    assert math.isfinite(summary["metrics"]["rmse"])
    return summary


def wait_until_completed(cluster: Cluster, app_id: str | None = None) -> dict:
    """Wait until the master lists the app (by id, else recspark-nightly) as completed.

    The master lists an application once it has seen the driver go (a moment after exit).
    """
    deadline = time.monotonic() + 60
    while True:
        state = cluster.state() or {}
        done = state.get("completedapps", [])
        if any(
            app["id"] == app_id if app_id else app["name"] == "recspark-nightly" for app in done
        ):
            return state
        if time.monotonic() > deadline:
            pytest.fail(f"the master does not list {app_id or 'recspark-nightly'}: {state}")
        time.sleep(1)


def test_nightly_publishes_through_spark_submit_on_a_standalone_cluster(cluster, tmp_path):
    archive = build_zip(tmp_path / "dist" / "recspark.zip")
    submit_nightly(
        cluster,
        tmp_path,
        ["--py-files", str(archive), "--conf", f"spark.pyspark.python={sys.executable}"],
    )
    wait_until_completed(cluster)
    # The executor ran on the worker and fetched the package zip that --py-files shipped.
    assert list(cluster.work_dir.glob("app-*/*/recspark.zip")), sorted(cluster.work_dir.rglob("*"))


# -- the job's Python from a packed environment (--archives) -------------------------------------

# Imported by site at the start of every Python an executor runs (it is first on the executors'
# PYTHONPATH, through spark.executorEnv): records which interpreter and environment that is, and
# where its imports would come from, in the executor's working folder.
EXECUTOR_PROBE = """\
import importlib.util, json, os, sys


def _origin(name):
    spec = importlib.util.find_spec(name)
    return spec.origin if spec else None


with open(f"python-probe-{os.getpid()}.json", "w") as _handle:
    json.dump(
        {
            "executable": sys.executable,
            "prefix": sys.prefix,
            "cwd": os.getcwd(),
            "path": sys.path,
            "PATH": os.environ.get("PATH", ""),
            "origins": {
                name: _origin(name) for name in ("pyspark", "torch", "pyarrow", "recspark")
            },
        },
        _handle,
    )
"""


@dataclass
class PackedEnv:
    archive: Path
    seconds: float


@pytest.fixture(scope="session")
def packed_env(tmp_path_factory) -> Iterator[PackedEnv]:
    """The venv packed once per session by ``scripts/pack-env``, gzip level 0 (stored).

    ``.tar.gz`` because Spark 4.0 unpacks a plain ``.tar`` in Java (``Utils.unTarUsingJava``):
    that drops file modes and refuses the venv's ``bin/python3.12``, a link to the base
    interpreter outside the archive ("would create entry outside of"); a ``.tar.gz`` goes to
    Hadoop's ``FileUtil.unTar``, which runs ``tar``. Level 0 because compressing ~6 GB (mostly
    torch and its CUDA libraries) on 2 cores is the slow part: about 15-35 s at level 0, 130 s
    at level 1 (3.6 GB).
    """
    if not (Path(sys.executable).parent / "venv-pack").exists():
        pytest.fail(f"no venv-pack in {VENV}: {VENV}/bin/pip install venv-pack==0.2.0")
    folder = tmp_path_factory.mktemp("packed-env")
    size = sum(f.stat().st_size for f in (VENV / "lib").rglob("*") if f.is_file())
    # The archive, the driver's copy and unpacked tree, the executor's download and unpacked tree.
    needed = 5 * size + (2 << 30)
    if shutil.disk_usage(folder).free < needed:
        pytest.skip(f"packing and shipping {VENV} needs about {needed >> 30} GB free in {folder}")
    archive = folder / "env.tar.gz"
    started = time.monotonic()
    subprocess.run(
        [str(PACK_ENV), str(archive), "--compress-level", "0"],
        check=True,
        env={**os.environ, "RECSPARK_VENV": str(VENV)},
        timeout=600,
    )
    packed = PackedEnv(archive, time.monotonic() - started)
    yield packed
    archive.unlink(missing_ok=True)


def _archive_log_lines(executor_dir: Path) -> list[str]:
    """The executor's log lines about fetching and unpacking the archive (for timings)."""
    log = executor_dir / "stderr"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [line for line in lines if "env.tar" in line]


@pytest.mark.archives
def test_nightly_runs_from_a_packed_environment_shipped_with_archives(
    cluster, packed_env, tmp_path
):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(EXECUTOR_PROBE)
    # The executors' PATH leads nowhere near the repo's venv, and PYSPARK_PYTHON (the worker's
    # own points at the venv, see the cluster fixture) names the packed one.
    path = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not Path(entry).is_relative_to(REPO) and not Path(entry).is_relative_to(VENV)
    )
    apps_before = set(cluster.work_dir.glob("app-*"))
    archive = build_zip(tmp_path / "dist" / "recspark.zip")
    started = time.monotonic()
    try:
        submit_nightly(
            cluster,
            tmp_path,
            [
                "--py-files",
                str(archive),
                "--archives",
                f"{packed_env.archive}#env",
                # Executors: the interpreter unpacked into their working folder. The driver (client
                # mode) runs this machine's venv: spark.pyspark.python would otherwise name it too.
                "--conf",
                "spark.pyspark.python=./env/bin/python",
                "--conf",
                f"spark.pyspark.driver.python={sys.executable}",
                "--conf",
                "spark.executorEnv.PYSPARK_PYTHON=./env/bin/python",
                "--conf",
                f"spark.executorEnv.PATH={path}",
                "--conf",
                f"spark.executorEnv.PYTHONPATH={probe}",
                # Download the archive straight to the executor (no second copy in a fetch cache)
                # and keep the temporary copies under tmp_path rather than /tmp.
                "--conf",
                "spark.files.useFetchCache=false",
                "--conf",
                f"spark.driver.extraJavaOptions=-Djava.io.tmpdir={_mkdir(tmp_path / 'driver-tmp')}",
                "--conf",
                "spark.executor.extraJavaOptions="
                f"-Djava.io.tmpdir={_mkdir(tmp_path / 'executor-tmp')}",
            ],
        )
        submitted = time.monotonic() - started
        apps = sorted(set(cluster.work_dir.glob("app-*")) - apps_before)
        assert len(apps) == 1, apps
        wait_until_completed(cluster, apps[0].name)
        executors = [folder for folder in apps[0].iterdir() if folder.is_dir()]
        probes = [
            json.loads(found.read_text())
            for executor in executors
            for found in executor.glob("python-probe-*.json")
        ]
        assert probes, sorted(str(p) for p in apps[0].rglob("*") if "env" not in p.parts)
        for record in probes:
            here = Path(record["cwd"])
            # The executor's Python: ./env/bin/python in its own working folder, and the
            # environment (sys.prefix, from env/pyvenv.cfg) the one unpacked there.
            assert here in executors and Path(record["executable"]) == here / "env/bin/python"
            assert Path(record["prefix"]) == here / "env", record
            assert record["origins"]["torch"].startswith(f"{here}/env/lib/"), record
            assert record["origins"]["pyarrow"].startswith(f"{here}/env/lib/"), record
            # The package is not in the environment (no editable finder to the checkout): the
            # executors import it from the --py-files zip, added to sys.path per task.
            assert record["origins"]["recspark"] is None, record
            # pyspark comes from the worker's Spark installation ($SPARK_HOME/python/lib/
            # pyspark.zip, as on any Spark node; here SPARK_HOME is the pip-installed pyspark):
            # nothing else on sys.path or PATH is in the repo or its venv.
            assert record["origins"]["pyspark"] == str(
                SPARK_HOME / "python/lib/pyspark.zip/pyspark/__init__.py"
            ), record
            assert not [
                entry
                for entry in record["path"]
                if (Path(entry).is_relative_to(REPO) or Path(entry).is_relative_to(VENV))
                and not Path(entry).is_relative_to(SPARK_HOME)
            ], record["path"]
            assert str(VENV) not in record["PATH"], record["PATH"]
        print(
            f"\npacked env: {packed_env.archive.stat().st_size / 2**30:.1f} GiB in "
            f"{packed_env.seconds:.0f} s; spark-submit nightly with --archives: {submitted:.0f} s"
        )
        for executor in executors:
            print(*_archive_log_lines(executor), sep="\n")
    finally:
        # The unpacked trees are as large as the venv: drop them, keep the logs.
        for app in set(cluster.work_dir.glob("app-*")) - apps_before:
            for unpacked in app.glob("*/env"):
                shutil.rmtree(unpacked, ignore_errors=True)
        for scratch in ("driver-tmp", "executor-tmp", "local"):
            shutil.rmtree(tmp_path / scratch, ignore_errors=True)


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
