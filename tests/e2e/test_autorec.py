"""The item autoencoder (I-AutoRec) and the blend that averages it into a model's predictions
(``model.blend``): its codes by hand, the scoring contract, saving, what the blend publishes, and
the train job with a blend end to end (its figures, its lists, a warm start from it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recspark.core.config import load_config
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.data.prepared import read_manifest
from recspark.model.autorec import Blend
from recspark.model.published import load_published_model
from recspark.model.saving import load_model
from recspark.train.loop import init_model
from recspark.train.spec import model_spec
from recspark.train.warm import warm_start
from tests.e2e.test_train_job import train
from tests.unit.train.test_training import write_prepared


def test_train_publishes_the_blend_and_the_next_run_warm_starts_its_main_model(spark, tmp_path):
    root = tmp_path / "root"
    write_prepared(root / "prepared" / "2026-01-15", users=300, items=120, count=6000)
    blend = {
        "model.blend.kind": "autorec",
        "model.blend.hidden": 24,
        "model.blend.epochs": 6,
        "model.blend.lr": 0.01,
        "model.blend.weight_decay": 2.0,
        "model.blend.weight": 0.4,
    }
    status, summary = train(root, **{**blend, "train.warm_start": "true"})
    assert status == 0, summary
    model, published = load_published_model(Layout(root), "2026-01-15")
    assert isinstance(model, Blend) and published.spec.kind == "blend"
    assert published.lists_from_head and summary["outputs"]["lists_item_factors"]
    figures = published.metrics["blend"]
    assert summary["metrics"]["blend"] == {k: v for k, v in figures.items() if k != "history"}
    assert figures["weight"] == 0.4 and 1 <= figures["partner_best_epoch"] <= 6
    assert len(figures["history"]) == figures["partner_epochs"]
    # The summary's RMSE is the published blend's on the validation split, recomputed here.
    validation = pd.read_parquet(root / "prepared" / "2026-01-15" / "validation")
    with torch.no_grad():
        predicted = model(
            torch.as_tensor(validation.user_idx.to_numpy(), dtype=torch.long),
            torch.as_tensor(validation.item_idx.to_numpy(), dtype=torch.long),
        )
    rmse = float(np.sqrt(np.mean((predicted.numpy() - validation.rating.to_numpy()) ** 2)))
    assert summary["metrics"]["validation_rmse"] == pytest.approx(rmse, abs=1e-5)
    assert rmse != pytest.approx(figures["main_validation_rmse"], abs=1e-6)

    # The next run carries the main model's rows; the autoencoder trains afresh.
    write_prepared(root / "prepared" / "2026-01-16", users=340, items=130, count=6500, seed=1)
    config = load_config(None, [f"paths.root={root}", "run_date=2026-01-16", "model.factors=6"])
    manifest = read_manifest(Layout(root), "2026-01-16")
    spec = model_spec(config.model, config.train, config.lists, manifest)
    fresh = init_model(spec.as_dict(), seed=3)
    assert warm_start(Layout(root), "2026-01-16", fresh, spec).users == 300
    old, _, _ = load_model(Location(summary["outputs"]["model"]))
    assert torch.equal(fresh.user_factors.weight[:300], old.main.user_factors.weight)
