"""End to end: every command's main() on a small synthetic run, checked against known answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recspark.cli import main
from recspark.core.location import Location
from tests.conftest import REPO, run_quietly, tiny_overrides


def run_command(command: str, overrides: list[str], capsys) -> dict:
    status = main([command, *[part for item in overrides for part in ("--set", item)]])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert status == 0, summary
    assert summary["status"] == "ok" and summary["command"] == command
    return summary


@pytest.fixture(scope="module")
def pipeline(tiny_trained):
    """generate -> prepare -> train -> score -> evaluate once for the module's tests.

    ``paths.root`` is a ``file://`` URI here (the rest of the suite gives plain paths, and
    ``tests/e2e/test_object_store.py`` an ``s3a://`` one). The first three stages are the session's
    ``tiny_trained`` (``tests/conftest.py``), run with this same URI; score and evaluate follow
    here. Evaluate fits no baselines: ``tests/e2e/test_evaluate.py`` checks them.
    """
    root, trained = tiny_trained
    overrides = tiny_overrides(root.as_uri(), **{"evaluate.baselines": "[]"})
    summaries = dict(trained)
    for command in ("score", "evaluate"):
        status, summary = run_quietly(command, overrides)
        assert status == 0, summary
        assert summary["status"] == "ok" and summary["command"] == command
        summaries[command] = summary
    return root, summaries


def test_generate_writes_exactly_the_requested_ratings(pipeline):
    _, summaries = pipeline
    generated = summaries["generate"]
    assert generated["counts"]["ratings"] == 30000
    assert generated["counts"]["users"] == 600
    ratings = pd.read_parquet(generated["outputs"]["ratings"])
    assert len(ratings) == 30000
    assert not ratings.duplicated(["user_id", "item_id"]).any()
    assert set(ratings["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    truth = json.loads((Location(generated["outputs"]["truth"]) / "truth.json").read_text())
    assert truth["noise_floor_rmse"] == pytest.approx(generated["metrics"]["noise_floor_rmse"])


def test_prepare_accounts_for_every_rating(pipeline):
    _, summaries = pipeline
    counts = summaries["prepare"]["counts"]
    assert (
        counts["train"] + counts["validation"] + counts["cold_start"] + counts["quarantined"]
        == 30000
    )
    assert counts["quarantined"] == 0
    assert 0.15 < counts["validation"] / 30000 < 0.25
    users = pd.read_parquet(summaries["prepare"]["outputs"]["user_index"])
    assert sorted(users["user_idx"]) == list(range(len(users)))
    assert users["user_id"].is_unique


def test_train_gets_close_to_the_planted_noise_floor(pipeline):
    _, summaries = pipeline
    floor = summaries["generate"]["metrics"]["noise_floor_rmse"]
    rmse = summaries["train"]["metrics"]["validation_rmse"]
    # Global-mean prediction is ~1.0 RMSE here; a model that learned the planted structure is close
    # to the floor (600 users x 50 ratings is little data, hence the margin).
    assert floor < rmse < floor + 0.12, (rmse, floor)


def test_evaluate_recomputes_the_trainer_rmse_in_spark(pipeline):
    _, summaries = pipeline
    metrics = summaries["evaluate"]["metrics"]
    assert metrics["rmse"] == pytest.approx(
        summaries["train"]["metrics"]["validation_rmse"], abs=1e-4
    )
    assert 0 < metrics["mae"] < metrics["rmse"]
    for name in ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "coverage"):
        assert 0.0 <= metrics[name] <= 1.0


def test_score_publishes_top_n_without_seen_items(pipeline):
    _, summaries = pipeline
    scored = summaries["score"]
    assert scored["counts"]["users"] == 600 and scored["counts"]["rows"] == 6000
    assert scored["metrics"]["user_factors"] == "broadcast"  # prepare's rated/ lists every user
    table = pd.read_parquet(Location(scored["outputs"]["recommendations"]))
    assert set(table["run_date"].astype(str)) == {"2026-01-15"}
    assert (Location(scored["outputs"]["partition"]) / "_SUCCESS").exists()
    assert table.groupby("user_id")["rank"].apply(lambda r: sorted(r) == list(range(1, 11))).all()
    ordered = table.sort_values(["user_id", "rank"])
    assert (ordered.groupby("user_id")["score"].diff().dropna() <= 1e-6).all()
    prepared = Location(summaries["prepare"]["outputs"]["train"]).parent
    users = pd.read_parquet(prepared / "user_index")
    items = pd.read_parquet(prepared / "item_index")
    rated = pd.concat(
        pd.read_parquet(prepared / name) for name in ("train", "validation", "cold_start")
    )
    rated = rated.merge(users, on="user_idx").merge(items, on="item_idx")[["user_id", "item_id"]]
    assert table.merge(rated, on=["user_id", "item_id"]).empty


def test_score_matches_a_brute_force_ranking(pipeline):
    import torch

    from recspark.model.saving import load_model

    _, summaries = pipeline
    from recspark.model.lists import lists_model

    model, _, meta = load_model(Location(summaries["train"]["outputs"]["model"]))
    # The lists rank by the ranking head's model (the default lists.source: head).
    model, _ = lists_model(model, meta["lists_rating_weight"])
    prepared = Location(summaries["prepare"]["outputs"]["train"]).parent
    users = pd.read_parquet(prepared / "user_index")
    items = pd.read_parquet(prepared / "item_index").set_index("item_idx")["item_id"]
    rated = pd.concat(
        pd.read_parquet(prepared / name) for name in ("train", "validation", "cold_start")
    )
    table = pd.read_parquet(Location(summaries["score"]["outputs"]["recommendations"]))
    with torch.no_grad():
        scores = model.score_items(torch.arange(model.n_users), torch.arange(model.n_items)).numpy()
    for user_idx in (0, 17, 333):
        row = scores[user_idx].copy()
        row[rated.loc[rated.user_idx == user_idx, "item_idx"].to_numpy()] = -np.inf
        best = np.argsort(-row, kind="stable")[:10]
        user_id = users.loc[users.user_idx == user_idx, "user_id"].item()
        published = table[table.user_id == user_id].sort_values("rank")["item_id"].tolist()
        assert published == items.loc[best].tolist()


def test_spark_submit_runs_the_same_job_as_the_cli(spark, tmp_path, capsys):
    """The README's spark-submit line, as written: scripts/spark-submit from a bare shell (no venv
    on PATH, no SPARK_HOME, another working folder) runs the job the CLI runs."""
    overrides = tiny_overrides(
        tmp_path / "cli", **{"synthetic.ratings": 5000, "synthetic.users": 300}
    )
    via_cli = run_command("generate", overrides, capsys)
    sets = [
        part
        for item in overrides
        for part in ("--set", item.replace(str(tmp_path / "cli"), str(tmp_path / "submit")))
    ]
    bare = {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "RECSPARK_VENV": sys.prefix,
    }  # this stack's venv (.venv or .venv-current)
    if "JAVA_HOME" in os.environ:
        bare["JAVA_HOME"] = os.environ["JAVA_HOME"]
    result = subprocess.run(
        [
            str(REPO / "scripts" / "spark-submit"),
            "--master",
            "local[1]",
            str(REPO / "jobs" / "generate.py"),
            *sets,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=bare,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    via_submit = json.loads(result.stdout.strip().splitlines()[-1])
    assert via_submit["status"] == "ok" and via_submit["counts"] == via_cli["counts"]
    key = ["user_id", "item_id"]
    cli_ratings = (
        pd.read_parquet(via_cli["outputs"]["ratings"]).sort_values(key).reset_index(drop=True)
    )
    submit_ratings = (
        pd.read_parquet(via_submit["outputs"]["ratings"]).sort_values(key).reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(cli_ratings, submit_ratings)


def test_a_failing_command_prints_an_error_line(spark, tmp_path, capsys):
    status = main(["train", "--set", f"paths.root={tmp_path}", "--set", "spark.conf={}"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 1 and summary["status"] == "error"
    assert "recspark prepare" in summary["error"]
