"""evaluate: how good the trained model is, next to baselines fitted on the same split.

Rating metrics (RMSE, MAE) on the validation split, with the cold-start rows (users or items that
training never saw) reported apart. Ranking metrics at ``evaluate.k`` for every user with a
validation item rated at or above ``evaluate.relevance_threshold`` (0: every validation item is
relevant): each model ranks every item the user did not rate in training. Baselines
(``evaluate.baselines``: global mean, user+item biases, Spark ALS) are fitted on the same training
split in the same run and measured by the same code (:func:`recspark.evaluate.metrics.assess`).

Writes the report folder ``evaluation/RUN_DATE/``: ``evaluation.json``, ``training_curves.png``
(from the model's ``metrics.json`` history), ``metrics_vs_baselines.png`` and
``rating_distribution.png`` (rating models only: a ranking model's scores are not ratings, so its
RMSE and MAE are None), published whole like every output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from recspark.core.config import Config, EvaluateConfig
from recspark.core.constants import PREDICTION, RATING, USER_IDX
from recspark.core.storage import Layout, read_json, staged, write_json
from recspark.data.prepared import seen_items
from recspark.evaluate import report
from recspark.evaluate.baselines import (
    Fitted,
    Scorer,
    fit_als,
    fit_biases,
    fit_global_mean,
    mean_rating,
)
from recspark.evaluate.metrics import assess, item_popularity, relevant_items
from recspark.model.saving import load_published_model, model_bytes
from recspark.serve.scoring import item_side_payload, predict, recommend_all

log = logging.getLogger(__name__)

SUMMARY_BASELINE_KEYS = ("rmse", "mae", "ndcg_at_k", "precision_at_k")
HISTOGRAM_BINS = 24


@dataclass
class EvaluationSplit:
    """One prepared run's split, read once and shared by the model and every baseline."""

    train: DataFrame
    validation: DataFrame
    cold_start: DataFrame
    relevant: DataFrame
    users: DataFrame  # users with relevant validation items: the ones ranked
    seen: DataFrame  # (user_idx, seen): training items, excluded from every list
    popularity: DataFrame
    train_users: int
    n_items: int
    k: int


def read_split(
    spark: SparkSession, prepared: Path, n_items: int, k: int, relevance_threshold: float
) -> EvaluationSplit:
    """Read ``prepared/`` and derive what every contender is measured against."""
    train = spark.read.parquet(str(prepared / "train"))
    validation = spark.read.parquet(str(prepared / "validation"))
    cold_path = prepared / "cold_start"
    cold_start = (
        spark.read.parquet(str(cold_path)) if cold_path.exists() else validation.limit(0)
    )
    relevant = relevant_items(validation, relevance_threshold)
    popularity, train_users = item_popularity(train)
    return EvaluationSplit(
        train=train,
        validation=validation,
        cold_start=cold_start,
        relevant=relevant,
        users=relevant.select(USER_IDX).distinct(),
        seen=seen_items(train),
        popularity=popularity.cache(),
        train_users=train_users,
        n_items=n_items,
        k=k,
    )


def top_k_lists(
    spark: SparkSession,
    scorer: Scorer,
    split: EvaluationSplit,
    users_per_block: int = 256,
    device: str = "auto",
    partitions: int | None = None,
) -> DataFrame:
    """Top-``k`` ``(user_idx, item_idx, rank, score)`` of the ranked users, training items excluded."""
    users = scorer.users.join(split.users, USER_IDX)
    return recommend_all(
        spark, users, split.seen, scorer.payload, split.k, users_per_block, device, partitions
    )


def assess_contender(
    spark: SparkSession,
    split: EvaluationSplit,
    predict_pairs,
    scorer: Scorer | None,
    users_per_block: int = 256,
    device: str = "auto",
    partitions: int | None = None,
) -> dict[str, Any]:
    """Every metric of one model: ``predict_pairs(frame) -> frame + prediction``, and its scorer.

    ``predict_pairs`` is None for a model whose scores are not ratings (the ranking objective,
    implicit ALS): its RMSE and MAE are reported as None rather than as meaningless figures.
    """
    predictions = predict_pairs(split.validation).cache() if predict_pairs else None
    cold = predict_pairs(split.cold_start) if predict_pairs else None
    lists = (
        top_k_lists(spark, scorer, split, users_per_block, device, partitions).cache()
        if scorer is not None
        else None
    )
    metrics = assess(
        predictions, lists, split.relevant, split.k, split.n_items, split.popularity,
        split.train_users, cold,
    )
    if predictions is not None:
        predictions.unpersist()
    if lists is not None:
        lists.unpersist()
    return metrics


def predicts_ratings(meta: dict[str, Any]) -> bool:
    """Whether a published model's scores are ratings (``model.objective: rating``).

    A ranking model's scores are unbounded preferences: only its lists are measured.
    """
    return meta.get("objective", "rating") == "rating"


def fit_baseline(name: str, split: EvaluationSplit, settings: EvaluateConfig, mean: float) -> Fitted:
    """Fit one of ``evaluate.baselines`` on the training split."""
    if name == "global_mean":
        return fit_global_mean(split.train, mean)
    if name == "biases":
        return fit_biases(split.train, split.n_items, settings.bias_reg, settings.bias_iterations, mean)
    if name == "als":
        return fit_als(
            split.train, split.n_items, settings.als_ranks, settings.als_reg_params,
            settings.als_max_iter, settings.als_seed, settings.als_tune_fraction, mean,
        )
    raise ValueError(f"unknown baseline {name!r}; choose from global_mean, biases, als")


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    folder, model, spec, meta, model_version = load_published_model(layout, config.run_date)
    prepared = layout.prepared(meta["index_date"])
    settings = config.evaluate
    split = read_split(spark, prepared, spec["n_items"], settings.k, settings.relevance_threshold)
    device, block = config.train.device, config.score.users_per_block
    whole_model = model_bytes(model, spec, meta)

    def predict_model(pairs: DataFrame) -> DataFrame:
        return predict(spark, pairs, whole_model, device)

    rates = predicts_ratings(meta)
    scorer = Scorer(spark.read.parquet(str(folder / "user_factors")), item_side_payload(model, spec, meta))
    metrics = assess_contender(
        spark, split, predict_model if rates else None, scorer, block, device,
        config.score.partitions,
    )
    log.info("model: RMSE %s, NDCG@%d %s", metrics["rmse"], settings.k, metrics["ndcg_at_k"])

    mean = mean_rating(split.train)
    baselines: dict[str, dict[str, Any]] = {}
    for name in settings.baselines:
        fitted = fit_baseline(name, split, settings, mean)
        baseline_metrics = assess_contender(
            spark, split, fitted.predict, fitted.scorer, block, device, config.score.partitions
        )
        baselines[name] = {
            "metrics": baseline_metrics, "train_seconds": fitted.train_seconds, "info": fitted.info,
        }
        log.info("%s: RMSE %s, NDCG@%d %s", name, baseline_metrics["rmse"], settings.k,
                 baseline_metrics["ndcg_at_k"])

    low, high = config.input.rating_min - 0.5, config.input.rating_max + 0.5
    predictions = predict_model(split.validation) if rates else None
    distribution = {
        "low": low, "high": high,
        "prediction": (
            report.histogram(predictions, PREDICTION, low, high, HISTOGRAM_BINS) if rates else None
        ),
        "truth": report.histogram(split.validation, RATING, low, high, HISTOGRAM_BINS),
    }
    history = read_json(folder / "metrics.json").get("history", [])
    evaluation = {
        "run_date": str(config.run_date),
        "model_version": model_version,
        "model_kind": spec["kind"],
        "k": settings.k,
        "relevance_threshold": settings.relevance_threshold,
        "metrics": metrics,
        "baselines": baselines,
        "rating_distribution": distribution,
        "definitions": {
            "ranking": "users with a relevant validation item; every item not rated in train is ranked",
            "novelty": "mean -log2((train raters of item + 1) / (train users + 1)) over listed items",
            "cold_start": "validation rows whose user or item is absent from train, reported apart",
        },
    }
    final = layout.evaluation(config.run_date)
    with staged(layout, final, f"evaluation-{config.run_date}") as staging:
        plots = []
        objective = meta.get("objective", "rating")
        if report.training_curves(history, staging / "training_curves.png", objective):
            plots.append("training_curves.png")
        table = {"model": metrics, **{name: b["metrics"] for name, b in baselines.items()}}
        report.metric_table(table, settings.k, staging / "metrics_vs_baselines.png")
        plots.append("metrics_vs_baselines.png")
        if rates:
            report.rating_distribution(
                distribution["prediction"], distribution["truth"], low, high,
                staging / "rating_distribution.png",
            )
            plots.append("rating_distribution.png")
        evaluation["plots"] = plots
        write_json(staging / "evaluation.json", evaluation)
    split.popularity.unpersist()
    counts = {
        "validation": metrics.pop("validation_rows"),
        "cold_start": metrics.pop("cold_start_rows", None),
        "ranked_users": metrics.pop("ranked_users"),
    }
    return {
        "outputs": {"report": str(final / "evaluation.json"), "folder": str(final),
                    "plots": [str(final / name) for name in plots]},
        "counts": counts,
        "metrics": metrics,
        "baselines": {
            name: {key: b["metrics"][key] for key in SUMMARY_BASELINE_KEYS}
            for name, b in baselines.items()
        },
    }
