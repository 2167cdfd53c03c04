"""The unit lane: tests that need no JVM, and the guard that proves they start none.

Everything under ``tests/unit/`` runs without Java, Spark, a subprocess that starts Spark or a
server (``make test-fast``); what needs them lives in ``tests/e2e/``. The guard is set up around
every unit module, so it also holds when ``make test`` runs both lanes in the same pytest-xdist
workers: the ``spark`` and ``object_store`` fixtures fail with a message that says where such a
test belongs; starting a SparkContext or a SparkSession in this process fails the same way;
``JAVA_HOME`` points at a folder with no ``java``, so ``spark-submit`` or a CLI run in a
subprocess cannot start a JVM either; and a module that leaves a new ``java`` process behind
fails at its teardown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

#: Where ``JAVA_HOME`` points in the unit lane: no ``bin/java`` there, so no JVM starts.
NO_JAVA_HOME = "/nonexistent/the-unit-lane-starts-no-jvm"

MOVE_IT = "a unit test may not start {what}: it belongs in tests/e2e/ (tests/unit/conftest.py)"


def refuse(what: str) -> NoReturn:
    """Fail the test (not an ``Exception``, so no ``except Exception`` in the code swallows it)."""
    pytest.fail(MOVE_IT.format(what=what), pytrace=False)


@pytest.fixture
def spark() -> NoReturn:
    """The unit lane's ``spark``: asking for a SparkSession fails (tests/conftest.py has it)."""
    refuse("Spark (it asked for the spark fixture)")


@pytest.fixture
def object_store() -> NoReturn:
    """The unit lane's ``object_store``: an S3 server is for the end-to-end lane."""
    refuse("an S3 server (it asked for the object_store fixture)")


@pytest.fixture
def mlflow_server() -> NoReturn:
    """The unit lane's ``mlflow_server``: a tracking server is for the end-to-end lane."""
    refuse("an MLflow server (it asked for the mlflow_server fixture)")


def java_processes() -> set[int]:
    """The ids of this process's descendants that run ``java`` (empty where there is no /proc)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and ")", so split at the last ")".
        head, _, tail = text.rpartition(")")
        pid_text, _, name = head.partition(" (")
        parents[int(pid_text)] = int(tail.split()[1])
        names[int(pid_text)] = name
    mine = {os.getpid()}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in mine} - mine
        grew = bool(children)
        mine |= children
    return {pid for pid in mine if names.get(pid) == "java"}


@pytest.fixture(scope="module", autouse=True)
def no_jvm() -> Iterator[None]:
    """Around each unit module: no SparkContext or SparkSession, no ``java`` for subprocesses.

    Module-scoped and autouse, so it is in place before the module's own fixtures and undone
    before the next module, which may be an end-to-end one in the same xdist worker.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    def no_context(*args: object, **kwargs: object) -> NoReturn:
        refuse("a SparkContext")

    def no_session(*args: object, **kwargs: object) -> NoReturn:
        refuse("a SparkSession")

    before = java_processes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAVA_HOME", NO_JAVA_HOME)
        patch.setattr(SparkContext, "_ensure_initialized", no_context)
        patch.setattr(SparkContext, "getOrCreate", no_context)
        patch.setattr(SparkSession.Builder, "getOrCreate", no_session)
        yield
    started = java_processes() - before
    assert not started, (
        f"the unit lane started java (pids {sorted(started)}): move it to tests/e2e/"
    )
