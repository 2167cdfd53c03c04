"""The ranking objective: its losses, its negative sampler, its epochs, and the whole pipeline.

Known answers: the losses against values worked out by hand, the sampler against its target
distribution, and a planted catalogue of item clusters whose unseen members the ranking model must
put on top of every user's list, where ranking by popularity cannot.
"""

from __future__ import annotations

import json
import shutil
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recspark.cli import main
from recspark.commands import recommend
from recspark.core.config import load_config
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.model.ease import EaseModel, ease_weights
from recspark.model.published import load_published_model
from recspark.train.objectives.sampling import item_popularity
from tests.conftest import tiny_overrides


def test_item_popularity_counts_positives_per_item(spark):
    frame = spark.createDataFrame(
        [(0, 2, 5.0), (1, 2, 4.0), (2, 2, 1.0), (0, 0, 3.0), (3, 0, 4.5)],
        "user_idx int, item_idx int, rating double",
    )
    assert item_popularity(frame, 4).tolist() == [2.0, 0.0, 3.0, 0.0]
    assert item_popularity(frame, 4, positive_threshold=4.0).tolist() == [1.0, 0.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="item_idx 2 outside"):
        item_popularity(frame, 2)


# ---------------------------------------------------------------------------------------------
# Planted clusters: a known answer for the epochs


def test_train_score_evaluate_with_the_ranking_objective(tiny_trained, tmp_path):
    # The session's tiny synthetic data set, generated and prepared once (tests/conftest.py):
    # a copy of it, so that the ranking model is trained, scored and evaluated in a root of its own.
    shared, _ = tiny_trained
    for name in ("data", "prepared"):
        shutil.copytree(shared / name, tmp_path / name)
    overrides = tiny_overrides(
        tmp_path,
        **{
            "model.objective": "ranking",
            "model.kind": "dot_bias",
            "ranking.loss": "softmax",
            "ranking.negatives": 64,
            "ranking.sampling_alpha": 0.5,
            "ranking.confidence": "rating",
            "ranking.confidence_alpha": 0.25,
            "train.epochs": 6,
            "train.lr": 0.03,
            "train.weight_decay": 0.001,
            "evaluate.relevance_threshold": 0,
            "evaluate.baselines": "[]",
        },
    )
    summaries = {}
    for command in ("train", "score", "evaluate"):
        buffer = StringIO()
        with redirect_stdout(buffer):
            status = main([command, *[arg for item in overrides for arg in ("--set", item)]])
        summary = json.loads(buffer.getvalue().strip().splitlines()[-1])
        assert status == 0, summary
        summaries[command] = summary
    from recspark.model.saving import load_model

    _, spec, meta = load_model(Location(summaries["train"]["outputs"]["model"]))
    assert spec["y_range"] is None and meta["objective"] == "ranking"
    history = json.loads(Location(summaries["train"]["outputs"]["metrics"]).read_text())["history"]
    assert history[-1]["validation_loss"] < history[0]["validation_loss"]
    # metrics.json's history names a ranking model's figures for what they are: the AUC is the
    # share of sampled items ranked below a positive (0.5 at random), never an "RMSE" or "MAE".
    assert history[-1]["validation_auc"] > max(0.55, history[0]["validation_auc"])
    assert history[-1]["validation_rmse"] is None and history[-1]["validation_mae"] is None
    # The summary calls it what it is: an AUC, not an RMSE of ratings it never predicted.
    trained = summaries["train"]["metrics"]
    assert trained["validation_rmse"] is None and trained["validation_mae"] is None
    assert trained["validation_auc"] == pytest.approx(
        history[trained["best_epoch"] - 1]["validation_auc"]
    )

    table = pd.read_parquet(Location(summaries["score"]["outputs"]["recommendations"]))
    assert table.groupby("user_id")["rank"].apply(lambda r: sorted(r) == list(range(1, 11))).all()
    ordered = table.sort_values(["user_id", "rank"])
    assert (ordered.groupby("user_id")["score"].diff().dropna() <= 0).all()

    metrics = summaries["evaluate"]["metrics"]
    # About 10 of ~150 unseen items per user are relevant: a random list has precision ~0.07.
    assert metrics["precision_at_k"] > 0.15 and metrics["ndcg_at_k"] > 0.15, metrics
    assert metrics["rmse"] is None and metrics["mae"] is None  # scores, not ratings
    plots = [Path(plot).name for plot in summaries["evaluate"]["outputs"]["plots"]]
    assert plots == ["training_curves.png", "metrics_vs_baselines.png"]


def _run_command(command: str, overrides: list[str]) -> dict:
    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main([command, *[arg for item in overrides for arg in ("--set", item)]])
    summary = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert status == 0, summary
    return summary


def test_a_blend_with_ease_is_published_scored_and_recommended_as_one_list(
    spark, tiny_trained, tmp_path
):
    """``model.blend.kind: ease`` through train, score and recommend: the published EASE is the
    closed form of the train split, and a known user's ``recommend`` list is the published one."""
    shared, _ = tiny_trained
    for name in ("data", "prepared"):
        shutil.copytree(shared / name, tmp_path / name)
    overrides = tiny_overrides(
        tmp_path,
        **{
            "model.objective": "ranking",
            "ranking.negatives": 64,
            "train.epochs": 3,
            "train.lr": 0.03,
            "train.weight_decay": 0.001,
            "model.blend.kind": "ease",
            "model.blend.regularization": 50,
        },
    )
    trained = _run_command("train", overrides)
    figures = trained["metrics"]["blend"]
    assert figures["kind"] == "ease" and figures["weight"] == pytest.approx(2 / 3)
    assert figures["regularization"] == 50 and 0.5 < figures["validation_auc"] <= 1
    model, published = load_published_model(Layout(tmp_path), "2026-01-15")
    assert published.spec.kind == "blend" and isinstance(model.members[1], EaseModel)
    # The published EASE is the closed form of the train split.
    train = pd.read_parquet(tmp_path / "prepared" / "2026-01-15" / "train")
    x = np.zeros((model.n_users, model.n_items), dtype=np.float32)
    x[train.user_idx, train.item_idx] = 1
    np.testing.assert_allclose(
        model.members[1].item_factors.weight.numpy().T,
        ease_weights(x.T.astype(np.float64) @ x, 50.0),
        atol=1e-6,
    )

    scored = _run_command("score", overrides)
    table = pd.read_parquet(Location(scored["outputs"]["recommendations"]))
    table = table.sort_values(["user_id", "rank"])
    lists = table.groupby("user_id")["item_id"].apply(list).to_dict()
    for user_id in sorted(lists)[:5]:
        config = load_config(None, [*overrides, f"recommend.user={user_id}"])
        result = recommend.run(config, spark).summary()
        assert [row["item_id"] for row in result["recommendations"]] == lists[user_id]
    liked = table["item_id"].drop_duplicates().head(4).tolist()
    pairs = ",".join(f"{item}=5" for item in liked)
    config = load_config(None, [*overrides, f"recommend.ratings={pairs}"])
    folded = recommend.run(config, spark).summary()
    listed = [row["item_id"] for row in folded["recommendations"]]
    assert len(listed) == 10 and not set(listed) & set(liked)
