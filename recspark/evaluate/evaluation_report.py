"""The evaluation report as a typed record, and its folder ``evaluation/RUN_DATE/`` on disk.

:class:`EvaluationReport` is what ``evaluate`` found: the model's figures, each baseline's
(:class:`BaselineResult`), the rating histograms (:class:`RatingDistribution`) and the settings
they were measured under. :func:`write_evaluation` publishes it whole as ``evaluation.json`` (the
same keys as before the record existed), ``metrics_vs_baselines.txt`` (also printed on stderr)
and the plots, and returns where they lie (:class:`EvaluationFiles`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from recspark.core.location import Location
from recspark.core.storage import Layout, staged, write_json
from recspark.evaluate import report

#: A contender's figures by metric name (:func:`recspark.evaluate.metrics.assess`).
Figures = dict[str, Any]


@dataclass(frozen=True)
class BaselineResult:
    """One baseline of ``evaluate.baselines``: its figures, fit time and what it was fitted with."""

    metrics: Figures
    train_seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "train_seconds": self.train_seconds, "info": self.info}


@dataclass(frozen=True)
class RatingDistribution:
    """Histogram counts of the predicted (None: the model predicts no ratings) and the true
    held-out ratings over the same bins of ``[low, high]``."""

    low: float
    high: float
    prediction: list[int] | None
    truth: list[int]

    def as_json(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "prediction": self.prediction,
            "truth": self.truth,
        }


def definitions(rare_item_ratings: int, split: str = "validation") -> dict[str, str]:
    """What each figure of the report means, as ``evaluation.json`` spells it out."""
    rated_before = "in train" if split == "validation" else "in train or validation"
    return {
        "split": (
            "the held-out split every figure is measured on: test (held out from every choice "
            "of training) or validation (when the run has no test split: the split that also "
            "chose the model's epoch and settings)"
        ),
        "ranking": (
            f"users with a relevant {split} item; every item not rated {rated_before} with at "
            "least min_item_ratings train ratings is ranked"
        ),
        "novelty": "mean -log2((train raters of item + 1) / (train users + 1)) over listed items",
        "coverage": "share of the catalogue that appears in any list",
        "rare_item_share": (
            f"share of list entries whose item has fewer than {rare_item_ratings} train ratings"
        ),
        "heldout_rare_item_share": (
            f"the same share over the ranked users' {split} items (their own choices)"
        ),
        "popularity_bias": (
            "log_popularity (mean log(1 + train ratings) of listed items) minus "
            f"heldout_log_popularity (the same over the ranked users' {split} items)"
        ),
        "intra_list_diversity": (
            "mean over lists of the mean pairwise 1 - cosine of the items' genre flags; "
            "null without genres (model.side_info or recommend.titles_path)"
        ),
        "best": (
            "per metric, the best contender(s) but the oracle: lowest RMSE/MAE, highest otherwise"
        ),
        "oracle": (
            "synthetic data only: the generator's planted truth, E[rating | planted mean] and "
            "lists by P(held out) x P(relevant); the upper reference, never best"
        ),
        "cold_start": f"{split} rows whose user or item is absent from train, reported apart",
    }


@dataclass(frozen=True)
class EvaluationReport:
    """Everything ``evaluate`` measured for one run date."""

    run_date: str
    model_version: str
    model_kind: str
    k: int
    relevance_threshold: float
    min_item_ratings: int
    eligible_items: int
    rare_item_ratings: int
    metrics: Figures
    baselines: dict[str, BaselineResult]
    rating_distribution: RatingDistribution
    split: str = "validation"  # the held-out split measured on: test or validation
    #: The synthetic generator's own best (:mod:`recspark.evaluate.oracle`); None on other data.
    oracle: BaselineResult | None = None

    def table(self) -> dict[str, Figures]:
        """Contender name -> figures: the model first, then the baselines in config order, then
        the oracle when there is one."""
        rows = {"model": self.metrics, **{name: b.metrics for name, b in self.baselines.items()}}
        return rows | ({"oracle": self.oracle.metrics} if self.oracle else {})

    def as_json(self, best: dict[str, list[str]], plots: list[str]) -> dict[str, Any]:
        """``evaluation.json``'s content, with the best contenders and the plots written."""
        return {
            "run_date": self.run_date,
            "split": self.split,
            "model_version": self.model_version,
            "model_kind": self.model_kind,
            "k": self.k,
            "relevance_threshold": self.relevance_threshold,
            "min_item_ratings": self.min_item_ratings,
            "eligible_items": self.eligible_items,
            "metrics": self.metrics,
            "baselines": {name: b.as_json() for name, b in self.baselines.items()},
            "rating_distribution": self.rating_distribution.as_json(),
            "definitions": definitions(self.rare_item_ratings, self.split),
            "best": best,
            "plots": plots,
        } | ({"oracle": self.oracle.as_json()} if self.oracle else {})


@dataclass(frozen=True)
class EvaluationFiles:
    """Where the report folder was published, and what it holds."""

    folder: Location
    plots: list[str]
    best: dict[str, list[str]]

    @property
    def report(self) -> Location:
        return self.folder / "evaluation.json"

    @property
    def table(self) -> Location:
        return self.folder / "metrics_vs_baselines.txt"


def write_evaluation(
    layout: Layout,
    evaluation: EvaluationReport,
    history: list[dict[str, Any]],
    objective: str,
) -> EvaluationFiles:
    """Publish the report folder ``evaluation/RUN_DATE/`` whole: ``training_curves.png`` (from
    the model's ``history``, when it has one), ``metrics_vs_baselines.png`` and ``.txt`` (the
    table is also printed on stderr), ``rating_distribution.png`` (rating models) and
    ``evaluation.json``."""
    final = layout.evaluation(evaluation.run_date)
    table = evaluation.table()
    best = report.best_per_metric({name: row for name, row in table.items() if name != "oracle"})
    distribution = evaluation.rating_distribution
    with staged(layout, final, f"evaluation-{evaluation.run_date}") as staging:
        plots = []
        if report.training_curves(history, staging / "training_curves.png", objective):
            plots.append("training_curves.png")
        report.metric_table(table, evaluation.k, staging / "metrics_vs_baselines.png", best)
        plots.append("metrics_vs_baselines.png")
        text = report.format_metric_table(table, best)
        (staging / "metrics_vs_baselines.txt").write_text(text + "\n")
        print(text, file=sys.stderr, flush=True)
        if distribution.prediction is not None:
            report.rating_distribution(
                distribution.prediction,
                distribution.truth,
                distribution.low,
                distribution.high,
                staging / "rating_distribution.png",
            )
            plots.append("rating_distribution.png")
        write_json(staging / "evaluation.json", evaluation.as_json(best, plots))
    return EvaluationFiles(final, plots, best)
