"""Airflow 3 DAG: run ``jobs/nightly.py`` once a day through ``SparkSubmitOperator``.

An example to copy into the scheduler's ``dags/`` folder, not part of the recspark package (Airflow
is not a recspark dependency, and nothing in recspark imports this file). It needs Airflow 3 and
``apache-airflow-providers-apache-spark`` (``make airflow`` installs both, pinned in
``constraints-airflow.txt``, into ``.venv-airflow/``; ``tests/e2e/test_airflow.py`` imports, renders
and runs this file with them), a recspark checkout at ``RECSPARK_HOME`` (default
``/opt/recspark``) with its ``.venv`` and ``dist/recspark.zip``, and a Spark connection
``spark_default`` (host ``spark://spark-master:7077``, ``yarn``, ``k8s://https://...`` or
``local[4]``).

**Which day.** The schedule is a ``CronTriggerTimetable`` (Airflow 3's default for a cron string,
set here explicitly): a run's logical date is the moment it fires, 02:30 UTC, so ``{{ ds }}`` is
*today*, whose data is still coming in. ``run_date`` is therefore ``{{ macros.ds_add(ds, -1) }}``,
yesterday, the last complete day: what ``conf/scheduler/crontab.example`` passes too. A manual run
(``airflow dags trigger recspark_nightly -c '{"run_date": "2026-03-01"}'``) names its date in the
``run_date`` param; without it, a manual run also refreshes the day before its logical date.

**Failures.** ``nightly`` exits 3 when its quality gate rejects the candidate (nothing published,
yesterday's output stays live): the same data gives the same verdict, so
:class:`RecsparkSubmitOperator` fails the task at once, without a retry (``AirflowFailException``),
and the error mail goes out. Any other failure (exit 1: a crash, a held lock, a flaky store) is an
ordinary failure and is retried after ``retry_delay``. The exit status reaches Airflow in client
deploy mode (the driver runs in spark-submit; ``spark-defaults.standalone.conf`` sets it): in
cluster mode spark-submit reports only that the application failed, and a rejection is retried.

**Downstream.** On success the task updates the Asset :data:`RECOMMENDATIONS`, named
``recspark_recommendations`` (the recommendations table under ``paths.root``, ``RECSPARK_ROOT``),
with ``extra={"run_date": ...}``; a DAG scheduled on it runs after each publication
(``airflow_recspark_consumer_dag.py``). A night that skips an already published date (exit 0)
updates it too, with the same date.

**Backfills and clears** are safe: a date already published from the same input and settings is a
no-op, any other re-run replaces the date's outputs whole, and recspark's own lock on
``paths.root`` refuses overlapping runs (``max_active_runs=1`` keeps Airflow from trying). A
backfill (``airflow backfill create --dag-id recspark_nightly --from-date ... --to-date ...``) of
logical dates D refreshes the days D - 1, like the scheduled runs; ``catchup=False`` keeps a new
or paused-and-resumed DAG from starting one run per missed night.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param
from airflow.sdk.exceptions import AirflowFailException

#: A recspark checkout with its .venv (make setup); dist/recspark.zip is built at deploy time with
#: ``.venv/bin/python -m recspark.packaging dist/recspark.zip``.
RECSPARK = os.environ.get("RECSPARK_HOME", "/opt/recspark")
#: ``paths.root`` of conf/nightly.yaml, as a URI (``s3a://bucket/recspark``, ``hdfs://...``).
ROOT = os.environ.get("RECSPARK_ROOT", f"file://{RECSPARK}/runs/nightly")
#: The published recommendations table, one ``run_date=D`` partition per night.
RECOMMENDATIONS = Asset(name="recspark_recommendations", uri=f"{ROOT}/recommendations")
#: recspark's exit status for a result its gate rejected (docs/INTERFACE.md, Exit codes).
EXIT_REJECTED = 3


class RecsparkSubmitOperator(SparkSubmitOperator):
    """``SparkSubmitOperator`` for one recspark command on one ``run_date``: a rejection (exit 3)
    fails without a retry, and each outlet's event says which date was published.

    Parameters
    ----------
    config
        The recspark config file (``--config``).
    run_date
        The day to run for, a template (``--set run_date=...``).
    **kwargs
        ``SparkSubmitOperator``'s own arguments, ``application_args`` excepted.
    """

    template_fields = (*SparkSubmitOperator.template_fields, "run_date")

    def __init__(self, *, config: str, run_date: str, **kwargs: Any) -> None:
        super().__init__(
            application_args=["--config", config, "--set", f"run_date={run_date}"], **kwargs
        )
        self.run_date = run_date

    def execute(self, context: Any) -> None:
        try:
            super().execute(context)
        except Exception as error:
            if self.exit_status() == EXIT_REJECTED:
                raise AirflowFailException(
                    f"recspark rejected the model for {self.run_date} (exit 3; nothing published, "
                    "the previous recommendations stay live): not retried, the same data gives "
                    "the same verdict"
                ) from error
            raise
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {"run_date": self.run_date}

    def exit_status(self) -> int | None:
        """spark-submit's exit status (the driver's in client mode), or None if it never ran."""
        process = getattr(self._hook, "_submit_sp", None)
        if process is None or process.returncode is None:
            return None
        return process.returncode or getattr(self._hook, "_spark_exit_code", None)


with DAG(
    dag_id="recspark_nightly",
    description="prepare, train (warm start), evaluate, gate and publish recommendations",
    schedule=CronTriggerTimetable("30 2 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    params={
        "run_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="the day to refresh (YYYY-MM-DD); empty: the day before the logical date",
        )
    },
    default_args={
        "owner": "recsys",
        "retries": 1,
        "retry_delay": dt.timedelta(minutes=20),
        "email_on_failure": True,
    },
    tags=["recspark"],
) as dag:
    RecsparkSubmitOperator(
        task_id="nightly",
        conn_id="spark_default",
        application=f"{RECSPARK}/jobs/nightly.py",
        py_files=f"{RECSPARK}/dist/recspark.zip",
        properties_file=f"{RECSPARK}/conf/spark/spark-defaults.standalone.conf",
        name="recspark-nightly-{{ params.run_date or macros.ds_add(ds, -1) }}",
        config=f"{RECSPARK}/conf/nightly.yaml",
        # Yesterday: the logical date of a CronTriggerTimetable run is the day it runs.
        run_date="{{ params.run_date or macros.ds_add(ds, -1) }}",
        # spark-submit is the checkout's venv's: the operator looks it up on this PATH (Airflow 3
        # parses this file again on the worker, so os.environ is the worker's there).
        env_vars={
            "PATH": f"{RECSPARK}/.venv/bin:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PYSPARK_PYTHON": f"{RECSPARK}/.venv/bin/python",
        },
        outlets=[RECOMMENDATIONS],
        execution_timeout=dt.timedelta(hours=4),
    )
