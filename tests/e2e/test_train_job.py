"""The train job end to end: artifacts, resume after a kill, warm start from the last model, and
the runs that must not publish (an untrained or worse-than-the-mean model, stale id maps).

Prepared folders are written with pyarrow (tests/test_training.py) so the job's own work is what
runs here; the generate -> prepare -> train chain is covered by tests/test_pipeline.py.
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
import torch

import recspark.train.loop
from recspark.cli import main
from recspark.core.config import load_config
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.data.prepared import PreparedRun, read_manifest
from recspark.model.published import index_fingerprint
from recspark.model.saving import load_model
from recspark.train.job import (
    build_objective,
    global_mean_rmse,
    model_spec,
    publication_refusal,
    run_fingerprint,
    train_settings,
    warm_start,
)
from recspark.train.loop import init_model
from recspark.train.objectives.joint import JointObjective
from recspark.train.objectives.ranking import RankingObjective
from recspark.train.objectives.rating import RatingObjective
from tests.unit.train.test_training import write_prepared

BASE = {
    "model.kind": "dot_bias",
    "model.factors": 6,
    "train.epochs": 4,
    "train.batch_size": 512,
    "train.lr": 0.03,
    "train.weight_decay": 0.0005,
    "train.shuffle_buffer": 4096,
    "train.patience": 4,
    "train.seed": 3,
    "spark.conf": "{}",
}


def train(root: Path, run_date: str = "2026-01-15", **extra) -> tuple[int, dict]:
    values = {**BASE, "paths.root": str(root), "run_date": run_date, **extra}
    arguments = ["train"]
    for key, value in values.items():
        arguments += ["--set", f"{key}={value}"]
    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main(arguments)
    return status, json.loads(buffer.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("job")
    write_prepared(folder / "prepared" / "2026-01-15", count=6000)
    return folder


def test_train_publishes_model_factors_metrics_and_curve(spark, root):
    status, summary = train(root)
    assert status == 0, summary
    outputs = summary["outputs"]
    model, spec, meta = load_model(Path(outputs["model"]))
    assert meta["index_date"] == "2026-01-15" and spec["kind"] == "dot_bias"
    # Which id maps it was trained on: what score, evaluate, recommend and warm start check.
    manifest = read_manifest(Layout(root), "2026-01-15")
    assert meta["index_fingerprint"] == index_fingerprint(manifest)
    users = pd.read_parquet(outputs["user_factors"]).sort_values("user_idx")
    assert list(users["user_idx"]) == list(range(300))
    assert list(users["user_id"]) == [f"u{u}" for u in range(300)]  # raw ids, for downstream
    items = pd.read_parquet(outputs["item_factors"]).sort_values("item_idx")
    assert list(items["item_id"]) == [10 * i for i in range(120)]
    weights = model.user_factors.weight.detach().numpy()
    np.testing.assert_allclose(np.stack(users["factors"].to_numpy()), weights, rtol=1e-6)
    np.testing.assert_allclose(
        users["bias"], model.user_bias.weight.detach().numpy()[:, 0], rtol=1e-6
    )
    metrics = json.loads(Path(outputs["metrics"]).read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3, 4]
    best = metrics["history"][metrics["best_epoch"] - 1]
    assert summary["metrics"]["validation_rmse"] == pytest.approx(best["validation_rmse"])
    assert Path(outputs["loss_curve"]).read_bytes()[:4] == b"\x89PNG"
    assert summary["counts"]["carried_users"] == 0 and summary["counts"]["carried_items"] == 0
    assert summary["metrics"]["device"] == "cpu"  # no GPU on this machine
    assert not (root / "_checkpoints" / "2026-01-15").exists()


def test_a_killed_train_job_resumes_to_the_uninterrupted_result(spark, root, tmp_path, monkeypatch):
    status, whole = train(root)
    assert status == 0
    whole_model, _, _ = load_model(Location(whole["outputs"]["model"]))

    save = recspark.train.loop.save_checkpoint

    def save_then_die_after_epoch_2(folder, checkpoint):
        path = save(folder, checkpoint)
        if checkpoint.epoch == 2:
            raise KeyboardInterrupt("killed after epoch 2")
        return path

    monkeypatch.setattr(recspark.train.loop, "save_checkpoint", save_then_die_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(root)
    assert (root / "_checkpoints" / "2026-01-15" / "last.pt").exists()
    monkeypatch.setattr(recspark.train.loop, "save_checkpoint", save)
    status, resumed = train(root, **{"train.resume": "true"})
    assert status == 0, resumed
    assert resumed["metrics"]["validation_rmse"] == whole["metrics"]["validation_rmse"]
    metrics = json.loads(Location(resumed["outputs"]["metrics"]).read_text())
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs"] == 4
    model, _, _ = load_model(Location(resumed["outputs"]["model"]))
    for key, value in whole_model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_warm_start_carries_the_last_published_model(spark, tmp_path):
    root = tmp_path / "root"
    write_prepared(root / "prepared" / "2026-01-15", users=300, items=120, count=6000)
    status, first = train(root, **{"train.warm_start": "true"})
    assert status == 0 and first["counts"]["carried_users"] == 0  # nothing published before
    # The next day's id maps extend the first's: 40 new users and 10 new items at the end.
    write_prepared(root / "prepared" / "2026-01-16", users=340, items=130, count=6500, seed=1)
    config = load_config(None, [f"paths.root={root}", "run_date=2026-01-16", "model.factors=6"])
    spec = model_spec(config, read_manifest(Layout(root), "2026-01-16"))
    new = init_model(spec, seed=3)
    carried = warm_start(Layout(root), "2026-01-16", new, spec)
    assert carried == {"from": "2026-01-15", "users": 300, "items": 120}
    old, _, _ = load_model(Location(first["outputs"]["model"]))
    assert torch.equal(new.user_factors.weight[:300], old.user_factors.weight)
    assert torch.equal(new.item_bias.weight[:120], old.item_bias.weight)
    assert not torch.equal(new.user_factors.weight[300:], old.user_factors.weight[:40])
    assert torch.all(new.user_bias.weight[300:] == 0)  # fresh biases start at zero
    # The job does the same, then trains on from there. (The second day's ratings come from
    # another planted matrix, which one epoch from the carried rows does not learn well enough to
    # beat the mean rating: that rule is not what this test is about.)
    status, second = train(
        root, "2026-01-16",
        **{"train.warm_start": "true", "train.epochs": 1, "train.allow_worse": "true"},
    )
    assert status == 0, second
    assert second["counts"]["carried_users"] == 300 and second["counts"]["carried_items"] == 120
    assert second["metrics"]["warm_start_from"] == "2026-01-15"
    assert 0 < second["metrics"]["validation_rmse"] < 2


def test_warm_start_refuses_a_model_whose_id_maps_were_prepared_again(spark, tmp_path):
    """prepare re-run for the previous date on other data: its model's rows are other ids now."""
    root = tmp_path / "root"
    write_prepared(root / "prepared" / "2026-01-15", users=300, items=120, count=6000)
    status, first = train(root)
    assert status == 0, first
    shutil.rmtree(root / "prepared" / "2026-01-15")
    write_prepared(root / "prepared" / "2026-01-15", users=300, items=120, count=6000, seed=5)
    write_prepared(root / "prepared" / "2026-01-16", users=340, items=130, count=6500, seed=1)
    status, second = train(root, "2026-01-16", **{"train.warm_start": "true"})
    assert status == 1, second
    assert "the model for 2026-01-15 was trained on other id maps" in second["error"]
    assert "train.warm_start=false" in second["error"]
    assert not (root / "models" / "2026-01-16").exists()


def test_zero_epochs_is_a_config_error_naming_the_key(tmp_path):
    status, summary = train(tmp_path, **{"train.epochs": 0})
    assert status == 2 and "train.epochs" in summary["error"], summary


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        # Too small a step to move the loss at all: no better than the starting weights.
        ({"train.lr": 1e-12, "train.epochs": 1}, "no epoch improved on the validation loss"),
        # Better than its random start, still worse than predicting the mean for everyone.
        (
            {"train.lr": 1e-3, "train.epochs": 1, "train.schedule": "constant"},
            "worse than predicting the train mean rating",
        ),
    ],
)
def test_a_run_that_did_not_learn_is_not_published_and_the_old_model_stays(
    spark, tmp_path, settings, reason
):
    root = tmp_path / "root"
    write_prepared(root / "prepared" / "2026-01-15", count=6000)
    status, good = train(root)
    assert status == 0, good
    published = (root / "models" / "2026-01-15" / "model.pt").read_bytes()
    status, bad = train(root, **settings)
    assert status == 1 and bad["status"] == "error", bad
    assert "was not published" in bad["error"] and reason in bad["error"], bad["error"]
    assert "train.allow_worse=true" in bad["error"]
    assert (root / "models" / "2026-01-15" / "model.pt").read_bytes() == published
    # Asked for, it is published all the same.
    status, forced = train(root, **settings, **{"train.allow_worse": "true"})
    assert status == 0, forced
    assert forced["metrics"]["validation_rmse"] > good["metrics"]["validation_rmse"]
    assert (root / "models" / "2026-01-15" / "model.pt").read_bytes() != published


def test_the_mean_rating_baseline_and_the_publication_rules(tmp_path):
    prepared = write_prepared(tmp_path / "2026-01-15", count=2000)
    train_ratings = pd.read_parquet(prepared / "train")["rating"].to_numpy(np.float64)
    validation = pd.read_parquet(prepared / "validation")["rating"].to_numpy(np.float64)
    expected = np.sqrt(np.mean((validation - train_ratings.mean()) ** 2))
    assert global_mean_rmse(prepared) == pytest.approx(expected, rel=1e-9)
    assert global_mean_rmse(prepared, 3.0) == pytest.approx(
        np.sqrt(np.mean((validation - 3.0) ** 2)), rel=1e-9
    )

    def figures(loss, rmse=None, auc=None):
        return {"validation_loss": loss, "validation_rmse": rmse, "validation_mae": None,
                "validation_auc": auc}

    start = figures(1.0, 1.0)
    assert publication_refusal("rating", figures(0.64, 0.8), start, 0.9) is None
    assert "no epoch improved" in publication_refusal("rating", figures(1.0, 1.0), start, 1.5)
    assert "train mean" in publication_refusal("rating", figures(0.96, 0.98), start, 0.95)
    assert publication_refusal("rating", figures(0.96, 0.98), start, None) is None
    # Ranking models: their own loss must improve; the mean-rating rule does not apply.
    ranking_start = figures(4.0, auc=0.5)
    assert publication_refusal("ranking", figures(3.0, auc=0.7), ranking_start, None) is None
    assert publication_refusal("ranking", figures(3.0, auc=0.7), ranking_start, 0.1) is None
    assert "no epoch improved" in publication_refusal(
        "ranking", figures(4.0, auc=0.5), ranking_start, None
    )


def test_the_job_picks_spec_objective_settings_and_fingerprint_from_the_config():
    manifest = PreparedRun.model_validate(
        {"run_date": "2026-01-15", "users": 7, "items": 5, "rating_range": [1.0, 5.0],
         "input": {"fingerprint": "x"}}
    )
    ranking = load_config(
        None,
        ["model.objective=ranking", "ranking.loss=bpr", "train.optimizer=sparse_adam",
         "train.lr=0.5"],
    )
    spec = model_spec(ranking, manifest)
    assert spec["y_range"] is None and spec["sparse"] and (spec["n_users"], spec["n_items"]) == (7, 5)
    objective = build_objective(ranking, manifest)  # uniform negatives: no Spark aggregate needed
    assert isinstance(objective, RankingObjective) and objective.settings.loss == "bpr"
    assert train_settings(ranking).lr == 0.5 and train_settings(ranking).optimizer == "sparse_adam"
    rating = load_config(None, [])
    assert model_spec(rating, manifest)["y_range"] == [1.0, 5.5]
    # By default a rating model trains a ranking head beside its rating head (lists.source: head):
    # its loss adds the head's softmax, whose every train row is a positive.
    joint = build_objective(rating, manifest)
    assert isinstance(joint, JointObjective) and model_spec(rating, manifest)["lists_head"]
    assert joint.head_weight == rating.lists.head_weight
    assert joint.ranking.settings.positive_threshold == 0.0
    assert train_settings(rating).head_lr_scale == rating.lists.head_lr_scale
    plain = load_config(None, ["lists.source=ratings"])
    assert isinstance(build_objective(plain, manifest), RatingObjective)
    assert "lists_head" not in model_spec(plain, manifest)
    assert train_settings(plain).head_lr_scale == 1.0
    assert "lists_head" not in model_spec(ranking, manifest)
    # A resume may change where and how fast it runs, not what it computes.
    spec = model_spec(rating, manifest)
    same = load_config(None, ["train.device=cpu", "train.reader_workers=3", "train.resume=true"])
    other = load_config(None, ["train.lr=0.123"])
    fingerprint = run_fingerprint(rating, spec, 100, manifest, None)
    assert run_fingerprint(same, spec, 100, manifest, None) == fingerprint
    assert run_fingerprint(other, spec, 100, manifest, None) != fingerprint
    head = load_config(None, ["lists.head_weight=0.9"])
    assert run_fingerprint(head, spec, 100, manifest, None) != fingerprint
    assert run_fingerprint(rating, spec, 101, manifest, None) != fingerprint
