"""One local SparkSession for the whole test session, and shared small data sets."""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
REPO = Path(__file__).resolve().parents[1]


# The modules that take longest (end-to-end runs, subprocesses, a cluster, an S3 server), longest
# first, as measured (seconds of a module's tests on a 2-core machine, `--junitxml`): nightly 154,
# tables 146, movielens 142, prepare 139, object_store 134, ... `make test` runs the suite on two
# pytest-xdist workers, a module to a worker (`--dist loadfile`), handing out modules in
# collection order (`--no-loadscope-reorder`): these go first, so that the workers end together
# instead of one finishing a long module alone. The modules added with the two stacks are placed by
# their times alone here: trial_errors ~130, cross_stack ~115, trial_inputs ~95, untrusted_files
# ~65, trial_paths_config ~60.
LONGEST_FIRST = (
    "test_nightly",
    "test_airflow",
    "test_tables",
    "test_movielens",
    "test_prepare",
    "test_object_store",
    "test_trial_errors",
    "test_cross_stack",
    "test_score_job",
    "test_baselines",
    "test_ranking",
    "test_trial_inputs",
    "test_notebook",
    "test_input_hardening",
    "test_cluster",
    "test_pipeline",
    "test_untrusted_files",
    "test_trial_paths_config",
    "test_benchmark",
    "test_one_list",
    "test_evaluate",
    "test_metrics",
)


def pytest_collection_modifyitems(config, items):
    """Order the modules of :data:`LONGEST_FIRST` first; tests keep their order within a module.

    The names are the end-to-end modules' (``tests.e2e.test_nightly`` is ``test_nightly``); a unit
    module of the same name (``tests.unit.ops.test_nightly``, the JVM-free half split out of it)
    takes seconds, so it goes with the rest of the unit lane, after them.
    """

    def rank(item) -> int:
        module = item.module.__name__ if item.module else ""
        name = module.rpartition(".")[2]
        if module.startswith("tests.unit.") or name not in LONGEST_FIRST:
            return len(LONGEST_FIRST)
        return LONGEST_FIRST.index(name)

    items.sort(key=rank)  # stable: each module's own order is kept


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Torch computes on one thread in this process, as ``train.cpu_threads: 1`` sets it.

    The suite's models are tiny, so a second thread gains nothing, and on cores shared with
    Spark's JVM and workers (or other jobs) torch's default, a thread per core, is many times
    slower: every small op waits in a spinning barrier for a thread that is not running. Runs
    of ``train`` with ``train.cpu_threads`` set (the shipped MovieLens config) set it again.
    """
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def no_spark(monkeypatch):
    """Spark may not start: a check that runs before the session must have failed first."""

    def refuse(*args, **kwargs):
        raise AssertionError("Spark must not start: the check should have failed first")

    monkeypatch.setattr("recspark.core.spark.get_spark", refuse)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from recspark.core.spark import get_spark

    local_dir = tmp_path_factory.mktemp("spark-local")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = get_spark(
        "recspark-tests",
        master="local[2]",
        conf={
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "4",
            "spark.local.dir": str(local_dir),
            "spark.ui.enabled": "false",
            "spark.driver.memory": "2g",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").exists():
        pytest.skip(f"MovieLens 100K is not at {ML100K} (its licence forbids shipping a copy)")
    return ML100K


#: Run date of the session's prepared MovieLens 100K u1 split: the shipped config's own.
ML100K_U1_DATE = "2026-01-01"


@pytest.fixture(scope="session")
def ml100k_u1(spark, ml100k, tmp_path_factory) -> tuple[Path, dict]:
    """MovieLens 100K's u1 split (u1.base -> u1.test, ``split.method: given``) prepared once for
    the session, as ``prepare`` prepares it with ``conf/movielens-100k.yaml`` but for u1.test,
    which is its validation split here (as before issue 33), not a test split.

    ``input.format: auto`` here, which tests/e2e/test_prepare.py checks on this run: it resolves to
    the shipped config's ``movielens-100k`` (asserted below), so the tables are the shipped
    config's. Returns the root holding ``prepared/2026-01-01`` and prepare's summary fields.
    Nothing may change it: a test that trains on it copies ``prepared/`` into a root of its own
    (:func:`copy_prepared`).
    """
    from recspark.commands import prepare
    from recspark.core.config import load_config
    from recspark.core.storage import read_json

    root = tmp_path_factory.mktemp("ml100k-u1")
    overrides = [
        f"paths.root={root}",
        f"input.path={ml100k / 'u1.base'}",
        f"input.validation_path={ml100k / 'u1.test'}",
        "input.test_path=null",  # u1.test as validation: the protocol the accuracy marks assume
        "input.format=auto",
    ]
    config = load_config(REPO / "conf" / "movielens-100k.yaml", overrides)
    assert str(config.run_date) == ML100K_U1_DATE
    summary = prepare.run(config, spark).summary()
    assert read_json(summary["outputs"]["manifest"])["input"]["format"] == "movielens-100k"
    return root, summary


def copy_prepared(source: Path, target: Path) -> Path:
    """Copy the prepared runs under root ``source`` into root ``target``; returns ``target``."""
    shutil.copytree(source / "prepared", target / "prepared")
    return target


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """Where the crafted Parquet file's pickle would write (tests/fixtures/, issue 28); no test of
    tests/unit/core/test_untrusted_files.py or tests/e2e/test_untrusted_files.py may see it
    appear."""
    path = tmp_path / "pickle-ran"
    monkeypatch.setenv("RECSPARK_PICKLE_MARKER", str(path))
    yield path
    assert not path.exists(), "the crafted file's pickle ran"


@pytest.fixture(scope="session")
def object_store(tmp_path_factory):
    """A SeaweedFS S3 server for the session, started by the first test that asks for it."""
    from tests.objectstore import start_object_store

    store = start_object_store(tmp_path_factory.mktemp("object-store"))
    yield store
    store.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` (SQLite store) for the session, started by the first test that
    asks for it."""
    from tests.mlflow_server import start_mlflow_server

    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


def tiny_overrides(root: str | Path, **extra: object) -> list[str]:
    """--set overrides for a small synthetic run under ``root`` that trains in seconds."""
    values = {
        "paths.root": str(root),
        "run_date": "2026-01-15",
        "synthetic.users": 600,
        "synthetic.items": 200,
        "synthetic.ratings": 30000,
        "synthetic.factors": 4,
        "synthetic.noise": 0.3,
        "model.factors": 8,
        "train.epochs": 12,
        "train.batch_size": 1024,
        "train.lr": 0.02,
        "train.weight_decay": 0.02,
        "train.patience": 3,
        "spark.conf": "{}",
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def run_quietly(command: str, overrides: list[str]) -> tuple[int, dict]:
    """``main()`` of one command with ``--set`` overrides: its exit status and summary line
    (captured here, so that fixtures wider than a test need no capsys)."""
    from recspark.cli import main

    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main([command, *[part for item in overrides for part in ("--set", item)]])
    return status, json.loads(buffer.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_trained(spark, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """generate -> prepare -> train of :func:`tiny_overrides`, once for the session.

    The commands are given ``paths.root`` as a ``file://`` URI (tests/e2e/test_pipeline.py goes on
    to score and evaluate it so, and checks all five stages); tests/e2e/test_recommend.py queries
    its model with a plain path, and tests/e2e/test_ranking.py trains a ranking model on a copy of
    its data and prepared split. Returns the root, a local path, and the summaries by command.
    Tests add outputs under it (scores, evaluations, similar-items tables) but never replace these.
    """
    root = tmp_path_factory.mktemp("tiny-run")
    overrides = tiny_overrides(root.as_uri())
    summaries = {}
    for command in ("generate", "prepare", "train"):
        status, summary = run_quietly(command, overrides)
        assert status == 0, summary
        assert summary["status"] == "ok" and summary["command"] == command
        summaries[command] = summary
    return root, summaries
