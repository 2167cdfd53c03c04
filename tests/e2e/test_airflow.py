"""The scheduling examples of ``conf/scheduler/`` as Airflow 3 and cron run them.

The DAGs are imported, scheduled, rendered and run by a real Airflow 3 (``make airflow`` installs it
into ``.venv-airflow/``, pinned in ``constraints-airflow.txt``; ``make test`` sets it up), in
subprocesses with an ``AIRFLOW_HOME`` under ``tmp_path`` and a SQLite metadata database. The runs
are ``airflow dags test`` of the nightly DAG against a "deployment" laid out as the DAG expects
(``RECSPARK_HOME`` with ``jobs/``, ``.venv``, ``dist/recspark.zip``, ``conf/``), submitting
``jobs/nightly.py`` with the real ``spark-submit`` to ``local[2]`` on a few thousand ratings. A
rejected night ends ``failed`` after one try, a crashed one ``up_for_retry``: read from Airflow's
own database, not from the DAG file. The successful end-to-end night is marked ``airflow`` and left
out of the default run (``pytest -m airflow``): with the rejected one it is the slow part, each a
whole nightly (3-4 minutes on a busy 2-core machine).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recspark.packaging import build_zip
from tests.conftest import REPO
from tests.e2e.test_nightly import planted_ratings, write_input

AIRFLOW_BIN = REPO / ".venv-airflow" / "bin"
DAGS = REPO / "conf" / "scheduler"
PROBE = Path(__file__).with_name("airflow_probe.py")
needs_airflow = pytest.mark.skipif(
    not (AIRFLOW_BIN / "airflow").exists(),
    reason="no Airflow 3 venv at .venv-airflow/: run `make airflow` (`make test` does)",
)
#: A scheduled night: the logical date of a CronTriggerTimetable run is the moment it fires.
FIRES = "2026-03-02T02:30:00+00:00"
#: ... and the day it refreshes.
YESTERDAY = "2026-03-01"
#: The spark-defaults of the test deployment: the shipped standalone file names a cluster.
SPARK_DEFAULTS = (
    "spark.driver.memory 1g\nspark.ui.enabled false\nspark.ui.showConsoleProgress false\n"
)


def airflow_env(home: Path, deployment: Path | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # As a deployment runs them: the consumer DAG is queued by the nightly's Asset event.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
    }
    if deployment is not None:
        env["RECSPARK_HOME"] = str(deployment)
    env.pop("PYTHONPATH", None)  # the worktree's recspark is not Airflow's business
    return env


def airflow(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(AIRFLOW_BIN / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


def probe(env: dict[str, str], name: str) -> dict:
    done = subprocess.run(
        [str(AIRFLOW_BIN / "python"), str(PROBE), name],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def migrated(tmp_path_factory) -> Path:
    """An AIRFLOW_HOME whose SQLite metadata database is migrated (copied for each run)."""
    if not (AIRFLOW_BIN / "airflow").exists():
        pytest.skip("no Airflow 3 venv at .venv-airflow/: run `make airflow` (`make test` does)")
    home = tmp_path_factory.mktemp("airflow-home")
    airflow(airflow_env(home), "db", "migrate")
    return home


def fresh_home(migrated: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(migrated / "airflow.db", folder / "airflow.db")
    return folder


def deployment(folder: Path, **config: object) -> Path:
    """``RECSPARK_HOME`` as the DAG expects it: this checkout's jobs, this venv, a fresh zip of the
    package, and ``conf/`` with the nightly config given and local spark-defaults."""
    (folder / "conf" / "spark").mkdir(parents=True)
    (folder / "jobs").symlink_to(REPO / "jobs")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    build_zip(folder / "dist" / "recspark.zip")
    (folder / "conf" / "nightly.yaml").write_text(yaml.safe_dump(config))
    (folder / "conf" / "spark" / "spark-defaults.standalone.conf").write_text(SPARK_DEFAULTS)
    return folder


def tiny_nightly(deploy: Path, input_path: str, **nightly: object) -> dict:
    """A small nightly config; ``paths.root`` where the DAG's Asset says (``runs/nightly``)."""
    return {
        "paths": {"root": str(deploy / "runs" / "nightly")},
        "input": {"format": "parquet", "path": input_path},
        "model": {"factors": 8},
        "train": {"epochs": 1, "batch_size": 1024, "lr": 0.02, "patience": 1, "reader_workers": 1},
        "evaluate": {"baselines": []},
        "nightly": {"keep_runs": 3, **nightly},
        "spark": {"conf": {"spark.sql.shuffle.partitions": "4"}},
    }


def task_state(home: Path) -> tuple[str | None, int | None]:
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute(
            "SELECT state, try_number FROM task_instance WHERE dag_id = 'recspark_nightly'"
        ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def dags_test(home: Path, recspark_home: Path, conf: dict | None = None, timeout=600) -> dict:
    """``airflow dags test recspark_nightly FIRES [-c CONF]``: the task's state, tries, and log.

    ``dags test`` waits out a retry's delay (20 minutes) in a loop: once the task is
    ``up_for_retry`` Airflow has decided, and the run is stopped there.
    """
    started = time.monotonic()
    log = home / "dags-test.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(AIRFLOW_BIN / "airflow"), "dags", "test", "recspark_nightly", FIRES]
            + (["-c", json.dumps(conf)] if conf else []),
            env=airflow_env(home, recspark_home),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            while process.poll() is None and task_state(home)[0] != "up_for_retry":
                assert time.monotonic() - started < timeout, log.read_text()[-5000:]
                time.sleep(1)
        finally:
            if process.poll() is None:  # waiting out the retry delay: nothing left to clean up
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
    state, tries = task_state(home)
    return {
        "state": state,
        "tries": tries,
        "log": log.read_text(),
        "returncode": process.returncode,
    }


# -- the DAG files as Airflow reads them -------------------------------------------------------


@needs_airflow
def test_both_dags_import_and_the_consumer_is_scheduled_on_the_nightly_outlet(migrated, tmp_path):
    described = probe(airflow_env(fresh_home(migrated, tmp_path / "home")), "imports")
    assert described["import_errors"] == {}
    assert described["dag_ids"] == ["recspark_nightly", "recspark_recommendations_consumer"]
    nightly = described["nightly"]
    assert nightly["timetable"] == "CronTriggerTimetable" and nightly["max_active_runs"] == 1
    assert "SparkSubmitOperator" in nightly["task_class"] and nightly["retries"] == 1
    assert [outlet["name"] for outlet in nightly["outlets"]] == ["recspark_recommendations"]
    assert nightly["outlets"][0]["uri"].endswith("/runs/nightly/recommendations")
    consumer = described["consumer"]
    assert consumer["timetable"] == "AssetTriggeredTimetable"
    assert consumer["schedule_assets"] == ["recspark_recommendations"]


def rendered_field(rendered: str, name: str) -> str:
    """One field of ``airflow tasks render``'s output (``# property: NAME`` then its value)."""
    match = re.search(rf"# property: {name}\n# -+\n(.*?)\n", rendered)
    assert match, rendered[-3000:]
    return match.group(1)


@needs_airflow
def test_a_scheduled_run_refreshes_the_day_before_it_fires(migrated, tmp_path):
    """The timetable's next run fires at 02:30 UTC on day D (its logical date); run_date is D-1."""
    env = airflow_env(fresh_home(migrated, tmp_path / "home"), tmp_path / "deploy")
    scheduled = probe(env, "next-run")
    assert scheduled["timetable"] == "CronTriggerTimetable"
    fires = dt.datetime.fromisoformat(scheduled["logical_date"])
    assert (fires.hour, fires.minute, fires.utcoffset()) == (2, 30, dt.timedelta(0))
    assert scheduled["run_after"] == scheduled["logical_date"]
    rendered = airflow(env, "tasks", "render", "recspark_nightly", "nightly", fires.isoformat())
    yesterday = (fires.date() - dt.timedelta(days=1)).isoformat()
    assert rendered_field(rendered, "run_date") == yesterday
    args = f"'--set', 'run_date={yesterday}'"
    assert args in rendered_field(rendered, "application_args")


# -- what Airflow does with recspark's exit status ---------------------------------------------


@pytest.fixture(scope="module")
def ratings(tmp_path_factory) -> str:
    return write_input(
        planted_ratings(users=150, items=60, per_user=20), tmp_path_factory.mktemp("in") / "r"
    )


@needs_airflow
def test_a_gate_rejection_fails_the_task_without_a_retry(migrated, ratings, tmp_path):
    """nightly exits 3 (a first run bounded by nightly.max_rmse): failed on its first try."""
    deploy = tmp_path / "deploy"
    deployment(deploy, **tiny_nightly(deploy, ratings, max_rmse=0.01))
    run = dags_test(fresh_home(migrated, tmp_path / "home"), deploy)
    assert (run["state"], run["tries"]) == ("failed", 1), run["log"][-5000:]
    assert "AirflowFailException" in run["log"] and "Error code is: 3" in run["log"]
    assert f"recspark rejected the model for {YESTERDAY}" in run["log"]
    assert '"error": "quality gate: ' in run["log"]
    assert not (deploy / "runs" / "nightly" / "recommendations" / f"run_date={YESTERDAY}").exists()


@needs_airflow
def test_a_crash_is_retried_and_a_manual_run_names_its_day(migrated, tmp_path):
    """nightly exits 1 (here: its input is gone): up for retry, as any failure but a rejection.
    The run is given its day as a manual run is (``-c '{"run_date": ...}'``), not from the date."""
    deploy = tmp_path / "deploy"
    deployment(deploy, **tiny_nightly(deploy, str(tmp_path / "no-such-export")))
    home = fresh_home(migrated, tmp_path / "home")
    run = dags_test(home, deploy, conf={"run_date": "2026-02-14"})
    assert run["state"] == "up_for_retry", run["log"][-5000:]
    assert "Error code is: 1" in run["log"] and "AirflowFailException" not in run["log"]
    assert "no-such-export does not exist" in run["log"]
    assert "--set run_date=2026-02-14" in run["log"] and YESTERDAY not in run["log"]


# -- a night end to end ------------------------------------------------------------------------


@needs_airflow
@pytest.mark.airflow
def test_a_night_publishes_yesterday_and_updates_the_asset(migrated, ratings, tmp_path):
    deploy = tmp_path / "deploy"
    root = deploy / "runs" / "nightly"
    home = fresh_home(migrated, tmp_path / "home")
    deployment(deploy, **tiny_nightly(deploy, ratings))
    run = dags_test(home, deploy)
    assert run["state"] == "success", run["log"][-5000:]
    assert run["returncode"] == 0
    partition = root / "recommendations" / f"run_date={YESTERDAY}"
    assert any(partition.glob("*.parquet"))
    with sqlite3.connect(home / "airflow.db") as db:
        events = db.execute(
            "SELECT asset.name, asset.uri, asset_event.extra FROM asset_event "
            "JOIN asset ON asset.id = asset_event.asset_id"
        ).fetchall()
        queued = db.execute("SELECT target_dag_id FROM asset_dag_run_queue").fetchall()
    assert [(name, json.loads(extra)) for name, _, extra in events] == [
        ("recspark_recommendations", {"run_date": YESTERDAY})
    ]
    assert events[0][1] == f"file://{deploy}/runs/nightly/recommendations"
    assert queued == [("recspark_recommendations_consumer",)]  # the scheduler's next run of it


# -- cron ---------------------------------------------------------------------------------------


def test_the_crontab_line_passes_yesterday():
    """The entry's command as cron runs it: `\\%` becomes `%`, then /bin/sh expands $(date ...)."""
    entry = next(
        line
        for line in (DAGS / "crontab.example").read_text().splitlines()
        if line and not line.startswith("#") and "=" in line and line.split()[0][0].isdigit()
    )
    command = entry.split(None, 5)[5]
    expression = re.search(r"run_date=(\$\([^)]*\))", command)
    assert expression, command
    before = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    shell = subprocess.run(
        ["/bin/sh", "-c", f"echo {expression.group(1).replace(chr(92) + '%', '%')}"],
        env={"PATH": os.environ["PATH"], "TZ": "Pacific/Kiritimati"},  # UTC+14: -u must matter
        capture_output=True,
        text=True,
        check=True,
    )
    after = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    assert shell.stdout.strip() in {before, after}
