"""The evaluate room's report records: evaluation.json and benchmark.json keep their keys, the
report folders are written whole, and the summary figures are JSON-safe. No JVM."""

from __future__ import annotations

import json
import math

from recspark.core.storage import Layout
from recspark.evaluate.benchmark_report import (
    BenchmarkReport,
    ContenderResult,
    DatasetFacts,
    finite,
    write_benchmark,
)
from recspark.evaluate.evaluation_report import (
    BaselineResult,
    EvaluationReport,
    RatingDistribution,
    write_evaluation,
)

FIGURES = {
    "rmse": 0.9,
    "mae": 0.7,
    "validation_rows": 10,
    "ndcg_at_k": 0.2,
    "precision_at_k": 0.1,
    "ranked_users": 3,
}


def evaluation_report() -> EvaluationReport:
    return EvaluationReport(
        run_date="2026-11-02",
        model_version="v1",
        model_kind="dot_bias",
        k=10,
        relevance_threshold=4.0,
        min_item_ratings=2,
        eligible_items=7,
        rare_item_ratings=5,
        metrics=dict(FIGURES),
        baselines={
            "global_mean": BaselineResult({**FIGURES, "rmse": 1.1, "ndcg_at_k": None}, 0.5),
        },
        rating_distribution=RatingDistribution(0.5, 5.5, [1, 2, 3], [2, 2, 2]),
    )


def test_evaluation_json_keeps_its_keys():
    report = evaluation_report()
    written = report.as_json({"rmse": ["model"]}, ["metrics_vs_baselines.png"])
    assert set(written) == {
        "run_date", "split", "model_version", "model_kind", "k", "relevance_threshold",
        "min_item_ratings", "eligible_items", "metrics", "baselines", "rating_distribution",
        "definitions", "best", "plots",
    }  # fmt: skip
    assert written["baselines"]["global_mean"] == {
        "metrics": report.baselines["global_mean"].metrics,
        "train_seconds": 0.5,
        "info": {},
    }
    assert written["rating_distribution"] == {
        "low": 0.5, "high": 5.5, "prediction": [1, 2, 3], "truth": [2, 2, 2]
    }  # fmt: skip
    assert "fewer than 5 train ratings" in written["definitions"]["rare_item_share"]
    assert list(report.table()) == ["model", "global_mean"]
    # Without a test split the figures are validation figures, and the report says so.
    assert written["split"] == "validation"
    assert written["definitions"]["cold_start"].startswith("validation rows")


def test_the_evaluation_folder_is_written_whole(tmp_path, capsys):
    layout = Layout(str(tmp_path))
    files = write_evaluation(layout, evaluation_report(), history=[], objective="rating")
    folder = tmp_path / "evaluation" / "2026-11-02"
    assert files.folder.local == folder
    assert files.plots == ["metrics_vs_baselines.png", "rating_distribution.png"]
    assert files.best["rmse"] == ["model"]
    saved = json.loads((folder / "evaluation.json").read_text())
    assert saved["best"] == files.best and saved["plots"] == files.plots
    table = (folder / "metrics_vs_baselines.txt").read_text()
    assert table.strip() in capsys.readouterr().err
    assert {p.name for p in folder.iterdir()} == {
        "_SUCCESS", "evaluation.json", "metrics_vs_baselines.txt", *files.plots
    }  # fmt: skip


def test_a_ranking_model_has_no_rating_histogram(tmp_path):
    report = evaluation_report()
    ranking = EvaluationReport(
        **{
            **report.__dict__,
            "rating_distribution": RatingDistribution(0.5, 5.5, None, [2, 2, 2]),
        }
    )
    files = write_evaluation(Layout(str(tmp_path)), ranking, history=[], objective="ranking")
    assert "rating_distribution.png" not in files.plots


def test_benchmark_report_and_summary_figures(tmp_path, capsys):
    report = BenchmarkReport("2026-11-02", 10, "als")
    report.facts["tiny"] = DatasetFacts(
        users=3,
        items=4,
        counts={"train": 8, "validation": 2},
        split="given",
        relevance_threshold=4.0,
        root="/r",
        skipped={"ease": "too big"},
    )
    report.results["tiny"] = [
        ContenderResult("als", 2.0, 1.0, {"rmse": 1.0, "ndcg_at_k": 0.2}),
        ContenderResult("recspark", 1.0, 0.5, {"rmse": float("nan"), "ndcg_at_k": 0.4}),
    ]
    figures = report.summary_figures()
    assert figures["tiny"]["recspark"]["rmse"] is None  # NaN is not JSON
    assert figures["tiny"]["als"]["train_seconds"] == 2.0
    ratios = report.all_ratios()["tiny"]["recspark"]
    assert ratios["ndcg_at_k"] == 2.0 and ratios["train_seconds"] == 2.0
    files = write_benchmark(Layout(str(tmp_path)), report)
    saved = json.loads(open(files.report.local).read())
    assert saved["datasets"]["tiny"] == {
        "users": 3, "items": 4, "train": 8, "validation": 2, "split": "given",
        "relevance_threshold": 4.0, "root": "/r", "skipped": {"ease": "too big"},
    }  # fmt: skip
    assert saved["table"] == open(files.table.local).read().rstrip("\n")
    assert saved["table"] in capsys.readouterr().err
    assert finite(math.inf) is None and finite(1.5) == 1.5
