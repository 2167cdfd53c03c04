"""The train job end to end: artifacts, resume after a kill, warm start from the last model, and
the runs that must not publish (an untrained or worse-than-the-mean model, stale id maps). The
tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_train_job.py.
"""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recspark.cli import main
from recspark.core.config import load_config
from recspark.data.prepared import PreparedRun
from recspark.train.job import build_objective, run_fingerprint
from recspark.train.objectives.joint import JointObjective
from recspark.train.objectives.ranking import RankingObjective
from recspark.train.objectives.rating import RatingObjective
from recspark.train.publication_gate import (
    ValidationScores,
    global_mean_rmse,
    publication_refusal,
)
from recspark.train.spec import model_spec, train_settings
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


def test_zero_epochs_is_a_config_error_naming_the_key(tmp_path):
    status, summary = train(tmp_path, **{"train.epochs": 0})
    assert status == 2 and "train.epochs" in summary["error"], summary


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
        return ValidationScores(validation_loss=loss, validation_rmse=rmse, validation_auc=auc)

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
        {
            "run_date": "2026-01-15",
            "users": 7,
            "items": 5,
            "rating_range": [1.0, 5.0],
            "input": {"fingerprint": "x"},
        }
    )
    ranking = load_config(
        None,
        [
            "model.objective=ranking",
            "ranking.loss=bpr",
            "train.optimizer=sparse_adam",
            "train.lr=0.5",
        ],
    )
    spec = _spec(ranking, manifest).as_dict()
    assert (
        spec["y_range"] is None and spec["sparse"] and (spec["n_users"], spec["n_items"]) == (7, 5)
    )
    objective = _objective(ranking, manifest)  # uniform negatives: no Spark aggregate needed
    assert isinstance(objective, RankingObjective) and objective.settings.loss == "bpr"
    assert _settings(ranking).lr == 0.5 and _settings(ranking).optimizer == "sparse_adam"
    rating = load_config(None, [])
    assert _spec(rating, manifest).as_dict()["y_range"] == [1.0, 5.5]
    # By default a rating model trains a ranking head beside its rating head (lists.source: head):
    # its loss adds the head's softmax, whose every train row is a positive.
    joint = _objective(rating, manifest)
    assert isinstance(joint, JointObjective) and _spec(rating, manifest).as_dict()["lists_head"]
    assert joint.head_weight == rating.lists.head_weight
    assert joint.ranking.settings.positive_threshold == 0.0
    assert _settings(rating).head_lr_scale == rating.lists.head_lr_scale
    plain = load_config(None, ["lists.source=ratings"])
    assert isinstance(_objective(plain, manifest), RatingObjective)
    assert "lists_head" not in _spec(plain, manifest).as_dict()
    assert _settings(plain).head_lr_scale == 1.0
    assert "lists_head" not in _spec(ranking, manifest).as_dict()
    # A resume may change where and how fast it runs, not what it computes.
    spec = _spec(rating, manifest)
    same = load_config(None, ["train.device=cpu", "train.reader_workers=3", "train.resume=true"])
    other = load_config(None, ["train.lr=0.123"])
    fingerprint = run_fingerprint(rating, spec, 100, manifest, None)
    assert run_fingerprint(same, spec, 100, manifest, None) == fingerprint
    assert run_fingerprint(other, spec, 100, manifest, None) != fingerprint
    head = load_config(None, ["lists.head_weight=0.9"])
    assert run_fingerprint(head, spec, 100, manifest, None) != fingerprint
    assert run_fingerprint(rating, spec, 101, manifest, None) != fingerprint


def _spec(config, manifest):
    return model_spec(config.model, config.train, config.lists, manifest)


def _objective(config, manifest):
    return build_objective(config.model, config.ranking, config.lists, manifest=manifest)


def _settings(config):
    return train_settings(config.train, config.lists.head_lr_scale if config.lists_head else None)
