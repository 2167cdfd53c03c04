"""benchmark: runs on a tiny synthetic size, and its figures are the outputs' own."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recspark.cli import main
from recspark.core.location import Location
from recspark.model.saving import load_model
from tests.e2e.test_score_job import set_args


@pytest.fixture(scope="module")
def tiny_benchmark(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    sets = [
        f"paths.root={root}",
        "run_date=2026-01-15",
        "spark.conf={}",
        "benchmark.datasets=[synthetic]",
        "benchmark.synthetic_sizes=[4000]",
        "benchmark.ratings_per_user=20",
        "benchmark.ratings_per_item=40",
        "synthetic.factors=2",
        "synthetic.noise=0.3",
        "model.factors=4",
        "train.epochs=3",
        "train.batch_size=512",
        "train.lr=0.02",
        "evaluate.als_ranks=[2]",
        "evaluate.als_reg_params=[0.1]",
        "evaluate.als_max_iter=4",
        "benchmark.contenders=[recspark, als, als-implicit]",
        "benchmark.als_implicit_rank=2",
    ]
    errors = io.StringIO()
    output = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(output):
        status = main(["benchmark", *set_args(sets)])
    summary = json.loads(output.getvalue().strip().splitlines()[-1])
    assert status == 0, summary
    return root, summary, errors.getvalue()


def test_benchmark_prints_the_table_and_one_json_line(tiny_benchmark):
    _, summary, stderr = tiny_benchmark
    assert summary["command"] == "benchmark" and summary["status"] == "ok"
    assert "data set" in stderr and "NDCG@10" in stderr and "recspark/als" in stderr
    assert "Precision@10" in stderr and "MAP@10" in stderr  # the ranking table
    figures = summary["metrics"]["synthetic-4k"]
    assert set(figures) == {"recspark", "als", "als-implicit"}
    for name, contender in figures.items():
        assert contender["train_seconds"] > 0 and contender["score_seconds"] > 0
        for key in ("ndcg_at_k", "precision_at_k", "recall_at_k", "map_at_k"):
            assert 0 <= contender[key] <= 1, (name, key)
        if name == "als-implicit":
            assert contender["rmse"] is None  # preferences, not ratings: no RMSE
        else:
            assert 0 < contender["rmse"] < 2
    ratio = summary["ratios"]["synthetic-4k"]["recspark"]
    assert ratio["score_seconds"] == pytest.approx(
        figures["als"]["score_seconds"] / figures["recspark"]["score_seconds"]
    )


def test_benchmark_figures_come_from_the_published_outputs(tiny_benchmark):
    _, summary, _ = tiny_benchmark
    report = json.loads(Location(summary["outputs"]["report"]).read_text())
    data = Path(report["datasets"]["synthetic-4k"]["root"])
    recspark = report["results"]["synthetic-4k"]["recspark"]
    # RMSE recomputed here from the published model and the prepared validation split.
    model, _, _ = load_model(data / "models" / "2026-01-15")
    validation = pd.read_parquet(data / "prepared" / "2026-01-15" / "validation")
    with torch.no_grad():
        predicted = model(
            torch.as_tensor(validation.user_idx.values, dtype=torch.long),
            torch.as_tensor(validation.item_idx.values, dtype=torch.long),
        ).numpy()
    rmse = float(np.sqrt(np.mean((predicted - validation.rating.values) ** 2)))
    assert recspark["metrics"]["rmse"] == pytest.approx(rmse, abs=1e-5)
    # The score time is the score command's: its partition holds every user's ten items.
    published = pd.read_parquet(data / "recommendations")
    assert len(published) == recspark["info"]["scored_rows"] == 200 * 10
    als = report["results"]["synthetic-4k"]["als"]
    written = pd.read_parquet(als["info"]["recommendations"])
    assert len(written) == 200 and written["recommendations"].map(len).eq(10).all()
    assert als["info"]["rank"] == 2
