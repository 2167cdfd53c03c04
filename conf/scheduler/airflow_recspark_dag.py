"""Airflow DAG: run ``jobs/nightly.py`` once a day through ``SparkSubmitOperator``.

An example to copy into the scheduler's ``dags/`` folder, not part of the recspark package (Airflow
is not a recspark dependency, and nothing imports this file). It needs
``apache-airflow-providers-apache-spark`` and a Spark connection (``spark_default`` below: host
``spark://spark-master:7077``, ``yarn`` or ``k8s://https://...``).

``run_date`` is ``{{ ds }}``, the logical date of the run, i.e. the day whose data is complete when
the run starts, exactly what ``conf/scheduler/crontab.example`` passes. Backfills and
"clear task" re-runs are safe: a date already published from the same input and settings is a
no-op, any other re-run replaces the date's outputs whole, and recspark's own lock on
``paths.root`` refuses overlapping runs (``max_active_runs=1`` keeps Airflow from trying). A failed
quality gate fails the task without publishing; the error line says why.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

RECSPARK = "/opt/recspark"  # a checkout with its .venv; dist/recspark.zip built at deploy time

with DAG(
    dag_id="recspark_nightly",
    description="prepare, train (warm start), evaluate, gate and publish recommendations",
    schedule="30 2 * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "recsys",
        "retries": 1,
        "retry_delay": dt.timedelta(minutes=20),
        "email_on_failure": True,
    },
    tags=["recspark"],
) as dag:
    SparkSubmitOperator(
        task_id="nightly",
        conn_id="spark_default",
        application=f"{RECSPARK}/jobs/nightly.py",
        py_files=f"{RECSPARK}/dist/recspark.zip",
        properties_file=f"{RECSPARK}/conf/spark/spark-defaults.standalone.conf",
        name="recspark-nightly-{{ ds }}",
        application_args=[
            "--config", f"{RECSPARK}/conf/nightly.yaml",
            "--set", "run_date={{ ds }}",
        ],
        env_vars={"PYSPARK_PYTHON": f"{RECSPARK}/.venv/bin/python"},
        execution_timeout=dt.timedelta(hours=4),
    )
