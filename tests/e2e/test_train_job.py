"""The train job end to end: artifacts, resume after a kill, warm start from the last model, and
the runs that must not publish (an untrained or worse-than-the-mean model, stale id maps).

Prepared folders are written with pyarrow (tests/unit/train/test_training.py) so the job's own
work is what runs here; the generate -> prepare -> train chain is covered by
tests/e2e/test_pipeline.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import recspark.train.loop
from recspark.core.config import load_config
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.data.prepared import read_manifest
from recspark.model.published import index_fingerprint
from recspark.model.saving import load_model
from recspark.train.loop import init_model
from recspark.train.warm import Carried, warm_start
from tests.unit.train.test_train_job import _spec, train
from tests.unit.train.test_training import write_prepared


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
    spec = _spec(config, read_manifest(Layout(root), "2026-01-16"))
    new = init_model(spec.as_dict(), seed=3)
    carried = warm_start(Layout(root), "2026-01-16", new, spec)
    assert carried == Carried(source="2026-01-15", users=300, items=120)
    old, _, _ = load_model(Location(first["outputs"]["model"]))
    assert torch.equal(new.user_factors.weight[:300], old.user_factors.weight)
    assert torch.equal(new.item_bias.weight[:120], old.item_bias.weight)
    assert not torch.equal(new.user_factors.weight[300:], old.user_factors.weight[:40])
    assert torch.all(new.user_bias.weight[300:] == 0)  # fresh biases start at zero
    # The job does the same, then trains on from there. (The second day's ratings come from
    # another planted matrix, which one epoch from the carried rows does not learn well enough to
    # beat the mean rating: that rule is not what this test is about.)
    status, second = train(
        root,
        "2026-01-16",
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
    assert status == 3 and bad["status"] == "error", bad
    assert "was not published" in bad["error"] and reason in bad["error"], bad["error"]
    assert "train.allow_worse=true" in bad["error"]
    assert (root / "models" / "2026-01-15" / "model.pt").read_bytes() == published
    # Asked for, it is published all the same.
    status, forced = train(root, **settings, **{"train.allow_worse": "true"})
    assert status == 0, forced
    assert forced["metrics"]["validation_rmse"] > good["metrics"]["validation_rmse"]
    assert (root / "models" / "2026-01-15" / "model.pt").read_bytes() != published
