"""evaluate end to end on a planted model: its figures, the baselines beside it, the report
folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recspark.cli import main
from recspark.core.storage import Layout
from recspark.model.registry import build_model
from recspark.model.spec import spec_from_dict
from tests.e2e.test_score_job import RUN_DATE, publish_hand_made_run, set_args

USERS, ITEMS = 60, 40


@pytest.fixture(scope="module")
def planted_ratings(spark, tmp_path_factory):
    """Ratings drawn from a planted dot_bias model plus noise; the planted model is 'trained'.

    User 59 appears only in the cold-start rows.
    """
    root = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(5)
    spec = {
        "kind": "dot_bias",
        "n_users": USERS,
        "n_items": ITEMS,
        "factors": 2,
        "y_range": [1.0, 5.5],
    }
    model = build_model(spec_from_dict(spec))
    with torch.no_grad():
        model.user_factors.weight.normal_(0, 1.0)
        model.item_factors.weight.normal_(0, 1.0)
        model.item_bias.weight.normal_(0, 0.5)
        truth = model.score_items(torch.arange(USERS), torch.arange(ITEMS)).numpy()
    rng = np.random.default_rng(11)
    rated = {"train": [], "validation": [], "cold_start": []}
    for user in range(USERS):
        for item in rng.choice(ITEMS, size=20, replace=False):
            rating = float(np.clip(truth[user, item] + rng.normal(0, 0.3), 1, 5))
            split = (
                "cold_start"
                if user == USERS - 1
                else ("validation" if rng.random() < 0.25 else "train")
            )
            rated[split].append((user, int(item), rating))
    publish_hand_made_run(
        root, model, spec, [f"u{u}" for u in range(USERS)], list(range(ITEMS)), rated
    )
    sets = [
        f"paths.root={root}",
        f"run_date={RUN_DATE}",
        "spark.conf={}",
        "evaluate.k=5",
        "evaluate.relevance_threshold=4",
        "evaluate.als_ranks=[1, 2]",
        "evaluate.als_reg_params=[0.05]",
        "evaluate.als_max_iter=5",
        "evaluate.bias_reg=2",
        "evaluate.als_implicit_rank=2",
    ]
    assert main(["evaluate", *set_args(sets)]) == 0
    return root, model, rated


def rmse(rows, model) -> float:
    users = torch.tensor([r[0] for r in rows])
    items = torch.tensor([r[1] for r in rows])
    with torch.no_grad():
        predicted = model(users, items).numpy()
    return float(np.sqrt(np.mean((predicted - np.array([r[2] for r in rows])) ** 2)))


def test_evaluate_report_has_the_known_figures(planted_ratings):
    root, model, rated = planted_ratings
    folder = Layout(root).evaluation(RUN_DATE)
    report = json.loads((folder / "evaluation.json").read_text())
    metrics = report["metrics"]
    assert metrics["rmse"] == pytest.approx(rmse(rated["validation"], model), abs=1e-5)
    assert metrics["cold_start_rmse"] == pytest.approx(rmse(rated["cold_start"], model), abs=1e-5)
    assert metrics["cold_start_rows"] == 20 and metrics["validation_rows"] == len(
        rated["validation"]
    )
    validation = np.array([r[2] for r in rated["validation"]])
    mean = np.mean([r[2] for r in rated["train"]])
    baselines = report["baselines"]
    assert baselines["global_mean"]["metrics"]["rmse"] == pytest.approx(
        np.sqrt(np.mean((validation - mean) ** 2)), rel=1e-5
    )
    assert baselines["global_mean"]["metrics"]["ndcg_at_k"] is None
    # The planted model is the truth: nothing fitted on 900 noisy ratings beats it.
    for name in ("biases", "als"):
        assert (
            metrics["rmse"]
            < baselines[name]["metrics"]["rmse"]
            < baselines["global_mean"]["metrics"]["rmse"]
        )
    assert metrics["ndcg_at_k"] > baselines["biases"]["metrics"]["ndcg_at_k"]
    relevant_users = {r[0] for r in rated["validation"] if r[2] >= 4}
    assert metrics["ranked_users"] == len(relevant_users)
    for value in (
        metrics[m]
        for m in (
            "precision_at_k",
            "recall_at_k",
            "ndcg_at_k",
            "map_at_k",
            "hit_rate_at_k",
            "coverage",
        )
    ):
        assert 0.0 <= value <= 1.0
    assert metrics["novelty"] > 0
    als = baselines["als"]["info"]
    assert [t["rank"] for t in als["trials"]] == [1, 2]
    assert als["rank"] == min(als["trials"], key=lambda t: t["holdout_rmse"])["rank"]
    distribution = report["rating_distribution"]
    assert sum(distribution["truth"]) == sum(distribution["prediction"]) == len(validation)


def test_evaluate_report_folder_holds_pngs(planted_ratings):
    root, _, _ = planted_ratings
    folder = Layout(root).evaluation(RUN_DATE)
    assert (folder / "_SUCCESS").exists()
    for name in ("metrics_vs_baselines.png", "rating_distribution.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The planted model has no training history, so no loss curve is drawn.
    assert not (folder / "training_curves.png").exists()


def test_evaluate_report_has_every_baseline_and_marks_the_best(planted_ratings):
    root, _, _ = planted_ratings
    folder = Layout(root).evaluation(RUN_DATE)
    report = json.loads((folder / "evaluation.json").read_text())
    baselines = report["baselines"]
    assert set(baselines) == {"global_mean", "biases", "als", "most_popular", "als_implicit"}
    rows = {"model": report["metrics"], **{name: b["metrics"] for name, b in baselines.items()}}
    assert rows["most_popular"]["rmse"] is None and rows["als_implicit"]["rmse"] is None
    for name, metrics in rows.items():
        if name == "global_mean":  # it cannot rank
            assert metrics["rare_item_share"] is None
            continue
        for key in ("ndcg_at_k", "recall_at_k", "map_at_k", "hit_rate_at_k", "rare_item_share"):
            assert 0 <= metrics[key] <= 1, (name, key)
        assert metrics["popularity_bias"] == pytest.approx(
            metrics["log_popularity"] - metrics["heldout_log_popularity"]
        )
        assert metrics["heldout_log_popularity"] == rows["model"]["heldout_log_popularity"]
        assert metrics["intra_list_diversity"] is None  # no genres given
    best = report["best"]
    assert best["rmse"] == ["model"]  # the planted truth
    for metric in ("ndcg_at_k", "precision_at_k", "recall_at_k", "map_at_k", "coverage"):
        figures = {name: m[metric] for name, m in rows.items() if m[metric] is not None}
        top = max(figures.values())
        assert sorted(best[metric]) == sorted(n for n, v in figures.items() if v == top), metric
    table = (folder / "metrics_vs_baselines.txt").read_text().splitlines()
    header = [cell.strip() for cell in table[0].split(" | ")]
    assert header[0] == "metric" and sorted(header[1:]) == sorted(rows)
    ndcg = next(line for line in table if line.startswith("ndcg_at_k"))
    assert ndcg.count("*") == len(best["ndcg_at_k"])
