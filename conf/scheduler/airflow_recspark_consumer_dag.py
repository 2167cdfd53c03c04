"""Airflow 3 DAG: a downstream job that runs each time recspark publishes recommendations.

An example beside ``airflow_recspark_dag.py`` (copy both into ``dags/``): its schedule is the
recommendations table's Asset, named ``recspark_recommendations``, which the nightly task updates
on success, so it runs once per
published night instead of guessing when the nightly is done. The triggering event's
``extra["run_date"]`` names the partition just published (``recommendations/run_date=D``); replace
the task with the real consumer (a push to a serving store, an e-mail campaign, a report).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset

#: The nightly DAG's outlet, by its name: the URI (``paths.root``) is the nightly DAG's business.
RECOMMENDATIONS = Asset.ref(name="recspark_recommendations")


def published_partitions(triggering_asset_events: Any) -> list[str]:
    """The partitions named by the events that triggered this run (one per published night)."""
    partitions = [
        f"{event.asset.uri}/run_date={event.extra['run_date']}"
        for events in triggering_asset_events.values()
        for event in events
    ]
    print("published:", *partitions)
    return partitions


with DAG(
    dag_id="recspark_recommendations_consumer",
    description="runs after each publication of recspark's recommendations",
    schedule=[RECOMMENDATIONS],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["recspark"],
) as dag:
    PythonOperator(task_id="read_published_partition", python_callable=published_partitions)
