"""What Airflow itself makes of ``conf/scheduler/``: run with the Airflow venv's Python.

``tests/e2e/test_airflow.py`` runs this script with ``.venv-airflow/bin/python`` (recspark's venv
has no Airflow, and Airflow's has no recspark), with ``AIRFLOW_HOME`` and
``AIRFLOW__CORE__DAGS_FOLDER`` set, and reads the one JSON line it prints: ``imports`` fills a
DagBag from the DAGs folder as the DAG processor does and describes the two DAGs; ``next-run`` asks
the nightly DAG's own timetable, after serialization (the scheduler's view), for the run it would
create next.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def dag_bag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


def imports() -> dict[str, Any]:
    """Import errors, DAG ids, and what the scheduler needs to know of the two DAGs."""
    bag = dag_bag()
    nightly = bag.get_dag("recspark_nightly")
    consumer = bag.get_dag("recspark_recommendations_consumer")
    described: dict[str, Any] = {
        "import_errors": {path: str(error) for path, error in bag.import_errors.items()},
        "dag_ids": sorted(bag.dag_ids),
    }
    if nightly is not None:
        task = nightly.get_task("nightly")
        described["nightly"] = {
            "timetable": type(nightly.timetable).__name__,
            "max_active_runs": nightly.max_active_runs,
            "task_class": [cls.__name__ for cls in type(task).__mro__],
            "retries": task.retries,
            "outlets": [{"name": asset.name, "uri": asset.uri} for asset in task.outlets],
        }
    if consumer is not None:
        condition = consumer.timetable.asset_condition
        described["consumer"] = {
            "timetable": type(consumer.timetable).__name__,
            "schedule_assets": [getattr(ref, "name", None) for ref in condition.objects],
        }
    return described


def next_run() -> dict[str, Any]:
    """The nightly DAG's next scheduled run, from its serialized timetable and settings."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    dag = DagSerialization.from_dict(
        DagSerialization.to_dict(dag_bag().get_dag("recspark_nightly"))
    )
    info = dag.timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup),
    )
    return {
        "timetable": type(dag.timetable).__name__,
        "logical_date": info.data_interval.start.isoformat(),
        "run_after": info.run_after.isoformat(),
    }


if __name__ == "__main__":
    probes = {"imports": imports, "next-run": next_run}
    print(json.dumps(probes[sys.argv[1]]()), flush=True)
