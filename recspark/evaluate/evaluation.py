"""Measuring a published model next to its baselines on its own prepared split: the
:class:`~recspark.evaluate.evaluation_report.EvaluationReport` that ``evaluate`` writes.

The model is measured as it publishes its lists (:func:`published_contender`: its whole bytes
predict ratings in Spark tasks, and the kernel ranks through the lists' model, a ranking head's or
its own); every baseline of ``evaluate.baselines`` is fitted on the same training split in the same
run (:func:`compare_baselines`), on the split :func:`~recspark.evaluate.assessment.read_split` read
(the run's test split when it has one); both go through
:func:`~recspark.evaluate.assessment.assess_contender`, so the same users, excluded items, ``k``
and relevance threshold hold for all. :func:`rating_distribution` counts the histograms of the
predicted and true held-out ratings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from recspark.core.config import EvaluateConfig
from recspark.core.constants import PREDICTION, RATING
from recspark.evaluate import report
from recspark.evaluate.assessment import (
    HISTOGRAM_BINS,
    EvaluationSplit,
    KernelSettings,
    assess_contender,
    fit_baseline,
)
from recspark.evaluate.baselines import Scorer, mean_rating
from recspark.evaluate.evaluation_report import (
    BaselineResult,
    EvaluationReport,
    Figures,
    RatingDistribution,
)
from recspark.model.published_context import PublishedContext
from recspark.model.saving import model_bytes
from recspark.serve.scoring import item_side_payload, predict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedContender:
    """A published model as the assessment sees it: ``predict`` (None: its scores are not
    ratings) and the :class:`Scorer` of the model its lists rank by."""

    predict: Callable[[DataFrame], DataFrame] | None
    scorer: Scorer


def published_contender(
    spark: SparkSession, context: PublishedContext, device: str
) -> PublishedContender:
    """The published model's predictions (its whole bytes, broadcast to Spark tasks) and the
    scorer of its lists (the lists' user factors and item side)."""
    published = context.published
    whole = model_bytes(context.model, published.spec.as_dict(), published.meta.as_dict())

    def predict_pairs(pairs: DataFrame) -> DataFrame:
        return predict(spark, pairs, whole, device)

    lists = context.lists
    scorer = Scorer(
        spark.read.parquet(str(lists.factors / "user_factors")),
        item_side_payload(lists.model, lists.spec, lists.meta),
    )
    return PublishedContender(predict_pairs if published.predicts_ratings else None, scorer)


def compare_baselines(
    spark: SparkSession, split: EvaluationSplit, settings: EvaluateConfig, kernel: KernelSettings
) -> dict[str, BaselineResult]:
    """Fit every baseline of ``settings.baselines`` on ``split``'s training rows and measure it
    as the model is measured."""
    mean = mean_rating(split.train)
    baselines: dict[str, BaselineResult] = {}
    for name in settings.baselines:
        fitted = fit_baseline(name, split, settings, mean)
        figures = assess_contender(spark, split, fitted.predict, fitted.scorer, kernel=kernel)
        baselines[name] = BaselineResult(figures, fitted.train_seconds, fitted.info)
        log.info("%s: RMSE %s, NDCG@%d %s", name, figures["rmse"], settings.k, figures["ndcg_at_k"])
    return baselines


def rating_distribution(
    split: EvaluationSplit,
    predict_pairs: Callable[[DataFrame], DataFrame] | None,
    rating_range: tuple[float, float],
) -> RatingDistribution:
    """Histograms of the predicted (when the model predicts ratings) and the true held-out
    ratings (of ``split.split``), over bins from half a star below ``input.rating_min`` to half
    above the max."""
    low, high = rating_range[0] - 0.5, rating_range[1] + 0.5
    predicted = None
    if predict_pairs is not None:
        predictions = predict_pairs(split.validation)
        predicted = report.histogram(predictions, PREDICTION, low, high, HISTOGRAM_BINS)
    truth = report.histogram(split.validation, RATING, low, high, HISTOGRAM_BINS)
    return RatingDistribution(low, high, predicted, truth)


@dataclass(frozen=True)
class EvaluationSettings:
    """What an evaluation reads of the config beyond ``evaluate``: the run date, the kernel
    settings, ``score.min_item_ratings`` and ``input.rating_min``/``rating_max``."""

    run_date: str
    kernel: KernelSettings
    min_item_ratings: int
    rating_range: tuple[float, float]


def evaluate_published(
    spark: SparkSession,
    context: PublishedContext,
    split: EvaluationSplit,
    settings: EvaluateConfig,
    run: EvaluationSettings,
) -> EvaluationReport:
    """Measure the published model and every baseline on ``split`` (read with
    :func:`~recspark.evaluate.assessment.read_split` from the model's prepared run)."""
    contender = published_contender(spark, context, run.kernel.device)
    metrics: Figures = assess_contender(
        spark, split, contender.predict, contender.scorer, kernel=run.kernel
    )
    # The row count is named after the split it counts.
    metrics[f"{split.split}_rows"] = metrics.pop("validation_rows")
    log.info("model: RMSE %s, NDCG@%d %s", metrics["rmse"], settings.k, metrics["ndcg_at_k"])
    baselines = compare_baselines(spark, split, settings, run.kernel)
    published = context.published
    return EvaluationReport(
        run_date=run.run_date,
        split=split.split,
        model_version=published.model_version,
        model_kind=published.spec.kind,
        k=settings.k,
        relevance_threshold=settings.relevance_threshold,
        min_item_ratings=run.min_item_ratings,
        eligible_items=(int(split.eligible.sum()) if split.eligible is not None else split.n_items),
        rare_item_ratings=settings.rare_item_ratings,
        metrics=metrics,
        baselines=baselines,
        rating_distribution=rating_distribution(split, contender.predict, run.rating_range),
    )
