"""The train job end to end: artifacts, resume after a kill, and warm start from the last model.

Prepared folders are written with pyarrow (tests/test_training.py) so the job's own work is what
runs here; the generate -> prepare -> train chain is covered by tests/test_pipeline.py.
"""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import recspark.train.loop
from recspark.cli import main
from recspark.model.saving import load_model
from tests.test_training import write_prepared

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
    whole_model, _, _ = load_model(Path(whole["outputs"]["model"]))

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
    metrics = json.loads(Path(resumed["outputs"]["metrics"]).read_text())
    assert metrics["resumed_from_epoch"] == 2 and metrics["epochs"] == 4
    model, _, _ = load_model(Path(resumed["outputs"]["model"]))
    for key, value in whole_model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_warm_start_carries_the_last_published_model(spark, tmp_path):
    root = tmp_path / "root"
    write_prepared(root / "prepared" / "2026-01-15", users=300, items=120, count=6000)
    status, first = train(root, **{"train.warm_start": "true"})
    assert status == 0 and first["counts"]["carried_users"] == 0  # nothing published before
    # The next day's id maps extend the first's: 40 new users and 10 new items at the end.
    write_prepared(root / "prepared" / "2026-01-16", users=340, items=130, count=6500, seed=1)
    status, second = train(root, "2026-01-16", **{"train.warm_start": "true", "train.epochs": 0})
    assert status == 0, second
    assert second["counts"]["carried_users"] == 300 and second["counts"]["carried_items"] == 120
    assert second["metrics"]["warm_start_from"] == "2026-01-15"
    old, _, _ = load_model(Path(first["outputs"]["model"]))
    new, _, _ = load_model(Path(second["outputs"]["model"]))
    assert torch.equal(new.user_factors.weight[:300], old.user_factors.weight)
    assert torch.equal(new.item_bias.weight[:120], old.item_bias.weight)
    assert not torch.equal(new.user_factors.weight[300:], old.user_factors.weight[:40])
    assert torch.all(new.user_bias.weight[300:] == 0)  # fresh biases start at zero
    # With no epoch run, the job still reports the carried model's validation RMSE.
    assert 0 < second["metrics"]["validation_rmse"] < 2
