"""MLflow tracking end to end, against a real ``mlflow server`` (SQLite store, loopback).

Two nightly dates publish and a third, its ratings shuffled across rows, is stopped by the gate,
all logged to one server (tests/e2e/test_nightly.py's planted world and settings). What was
logged is read back through ``MlflowClient``: the nightly runs and their nested stage runs,
params, per-epoch metrics, artifacts, datasets, the registered versions and their aliases. The
champion is day 2's version after the gated night; the registered model loaded with
``mlflow.pyfunc.load_model`` in a process where pyspark cannot be imported gives the published
lists, and ``recspark score`` of ``models:/NAME@champion`` publishes the same lists again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from recspark.core.storage import Layout
from recspark.ops.history import read_history
from tests.conftest import REPO, run_quietly
from tests.e2e.test_nightly import nightly_overrides, planted_ratings, write_input
from tests.unit.ops.test_nightly import DAY1, DAY2, DAY3

MODEL = "recspark-nightly-test"
DAY4 = "2026-03-04"

# Loads the champion where pyspark cannot be imported, and prints the lists of the users given.
LOAD_CHAMPION = """
import json, sys
sys.modules["pyspark"] = None  # `import pyspark` fails: the model must not need it
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
lists = model.predict(pd.DataFrame({"user_id": json.loads(sys.argv[2])}))
assert "pyspark" not in {name.split(".")[0] for name in sys.modules if sys.modules[name]}
print(lists.to_json(orient="records"))
"""


@pytest.fixture(scope="module")
def nights(spark, mlflow_server, tmp_path_factory):
    """Day 1 and day 2 published, day 3 gated, each nightly logged to the server."""
    base = tmp_path_factory.mktemp("mlflow-nightly")
    root = base / "root"
    world = planted_ratings(users=240, items=90, per_user=25)
    corrupted = world.assign(rating=world.rating.sample(frac=1.0, random_state=0).to_numpy())
    inputs = {
        DAY1: write_input(world[(world.user_id < 200) & (world.item_id < 75)], base / "day1"),
        DAY2: write_input(world, base / "day2"),
        DAY3: write_input(corrupted, base / "day3"),
    }
    tracking = {"tracking.uri": mlflow_server.uri, "tracking.model_name": MODEL}
    environment = os.environ.get("MLFLOW_TRACKING_URI")
    summaries = {
        day: run_quietly("nightly", nightly_overrides(root, day, inputs[day], **tracking))
        for day in (DAY1, DAY2, DAY3)
    }
    # A tracked command leaves the process's environment as it found it: MLflow's own
    # set_tracking_uri would otherwise turn tracking on for every later command of the process.
    assert os.environ.get("MLFLOW_TRACKING_URI") == environment
    return {"root": root, "summaries": summaries, "tracking": tracking, "inputs": inputs}


@pytest.fixture(scope="module")
def client(mlflow_server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)


def test_each_night_is_one_run_with_its_stages_nested(nights, client):
    (status1, _), (status2, day2), (status3, day3) = nights["summaries"].values()
    assert (status1, status2, status3) == (0, 0, 3), day3
    assert day3["error"].startswith("quality gate")
    parent = client.get_run(day2["tracking"]["run_id"])
    assert parent.data.tags["decision"] == "published"
    assert parent.data.params["settings_digest"] and parent.data.params["input_fingerprint"]
    assert parent.data.metrics["rmse"] == pytest.approx(day2["metrics"]["rmse"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    names = {run.info.run_name.split()[0]: run for run in children}
    assert set(names) == {"prepare", "train", "evaluate", "score"}
    assert {k: names[k].info.run_id for k in names} == day2["tracking"]["stages"]
    assert names["score"].data.metrics["count.rows"] == day2["counts"]["recommendation_rows"]
    # The history records name the nightly runs, the rejected one too.
    by_date = {record.run_date: record for record in read_history(nights["root"])}
    assert by_date[DAY2].mlflow_run_id == parent.info.run_id
    gated = client.get_run(by_date[DAY3].mlflow_run_id)
    assert gated.data.tags["decision"] == "rejected" and gated.info.status == "FAILED"


def test_the_train_run_holds_settings_curves_artifacts_and_datasets(nights, client):
    day2 = nights["summaries"][DAY2][1]
    train_id = day2["tracking"]["stages"]["train"]
    train = client.get_run(train_id)
    params, metrics = train.data.params, train.data.metrics
    assert params["train.epochs"] == "5" and params["model.kind"] == "dot_bias"
    assert (
        params["model_version"]
        == train.data.tags["model_version"]
        == day2["metrics"]["model_version"]
    )
    assert metrics["validation_rmse"] == pytest.approx(day2["metrics"]["validation_rmse"])
    curve = client.get_metric_history(train_id, "train_loss")
    assert sorted(point.step for point in curve) == list(range(1, int(metrics["epochs"]) + 1))
    assert {a.path for a in client.list_artifacts(train_id)} >= {"loss.png", "metrics.json"}
    datasets = {d.dataset.name: d.dataset for d in train.inputs.dataset_inputs}
    assert datasets["input"].digest and datasets[f"train {DAY2}"].digest
    assert datasets[f"train {DAY2}"].source and DAY2 in datasets[f"train {DAY2}"].source
    evaluate = client.get_run(day2["tracking"]["stages"]["evaluate"])
    assert evaluate.data.metrics["ndcg_at_k"] == pytest.approx(day2["metrics"]["ndcg_at_k"])
    shown = {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    assert {"evaluation.json", "training_curves.png"} <= shown


def test_the_champion_is_the_last_published_version_and_the_rejected_one_is_marked(nights, client):
    summaries = {day: summary for day, (_, summary) in nights["summaries"].items()}
    versions = {str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert len(versions) == 3  # every night's candidate is registered
    day2_version = summaries[DAY2]["tracking"]["registered_version"]
    assert summaries[DAY2]["tracking"]["champion"] == day2_version
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == day2_version
    assert champion.tags["model_version"] == summaries[DAY2]["metrics"]["model_version"]
    rejected = client.get_model_version_by_alias(MODEL, "rejected")
    assert str(rejected.version) not in (day2_version, summaries[DAY1]["tracking"]["champion"])
    assert rejected.tags["nightly_status"] == "rejected" and rejected.tags["run_date"] == DAY3


def test_the_champion_loads_without_spark_and_lists_what_was_published(
    nights, mlflow_server, tmp_path
):
    published = pd.read_parquet(Layout(nights["root"]).recommendations_partition(DAY2))
    users = sorted(published.user_id.unique().tolist())[:20]
    result = subprocess.run(
        [sys.executable, "-c", LOAD_CHAMPION, f"models:/{MODEL}@champion", json.dumps(users)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lists = pd.DataFrame(json.loads(result.stdout.strip().splitlines()[-1]))
    expected = published[published.user_id.isin(users)].sort_values(["user_id", "rank"])
    assert len(lists) == 20 * 10
    assert list(zip(lists.user_id, lists.item_id, strict=True)) == list(
        zip(expected.user_id, expected.item_id, strict=True)
    )


def test_score_scores_the_registry_champion(nights):
    root, tracking = nights["root"], nights["tracking"]
    overrides = nightly_overrides(root, DAY4, nights["inputs"][DAY2], **tracking)
    status, summary = run_quietly("score", [*overrides, f"score.model=models:/{MODEL}@champion"])
    assert status == 0, summary
    day2 = nights["summaries"][DAY2][1]
    assert summary["metrics"]["registered_version"] == day2["tracking"]["registered_version"]
    assert summary["metrics"]["model_version"] == day2["metrics"]["model_version"]
    layout = Layout(root)
    columns = ["user_id", "rank", "item_id"]
    again = pd.read_parquet(layout.recommendations_partition(DAY4))[columns]
    published = pd.read_parquet(layout.recommendations_partition(DAY2))[columns]
    pd.testing.assert_frame_equal(
        again.sort_values(columns, ignore_index=True),
        published.sort_values(columns, ignore_index=True),
    )


def test_an_unknown_alias_is_one_line_naming_the_server(nights, mlflow_server):
    overrides = nightly_overrides(
        nights["root"], DAY4, nights["inputs"][DAY2], **nights["tracking"]
    )
    status, summary = run_quietly("score", [*overrides, f"score.model=models:/{MODEL}@nobody"])
    assert status == 1 and mlflow_server.uri in summary["error"]
    assert "nobody" in summary["error"] and "\n" not in summary["error"]
