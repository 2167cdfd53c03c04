"""Measuring one contender (the model or a baseline) on a prepared split, by the same code for all.

The split is read once (:func:`read_split`) and shared: every contender ranks every item the user
did not rate in training, and rating metrics are computed where the contender predicts ratings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from recspark.core.config import EvaluateConfig
from recspark.core.constants import USER_IDX
from recspark.data.prepared import seen_items
from recspark.evaluate.baselines import (
    Fitted,
    Scorer,
    fit_als,
    fit_biases,
    fit_global_mean,
)
from recspark.evaluate.metrics import assess, item_popularity, relevant_items
from recspark.serve.scoring import recommend_all

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
    cold_start = spark.read.parquet(str(cold_path)) if cold_path.exists() else validation.limit(0)
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
    users_per_block: int | str = "auto",
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
    users_per_block: int | str = "auto",
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
        predictions,
        lists,
        split.relevant,
        split.k,
        split.n_items,
        split.popularity,
        split.train_users,
        cold,
    )
    if predictions is not None:
        predictions.unpersist()
    if lists is not None:
        lists.unpersist()
    return metrics


def fit_baseline(
    name: str, split: EvaluationSplit, settings: EvaluateConfig, mean: float
) -> Fitted:
    """Fit one of ``evaluate.baselines`` on the training split."""
    if name == "global_mean":
        return fit_global_mean(split.train, mean)
    if name == "biases":
        return fit_biases(
            split.train, split.n_items, settings.bias_reg, settings.bias_iterations, mean
        )
    if name == "als":
        return fit_als(
            split.train,
            split.n_items,
            settings.als_ranks,
            settings.als_reg_params,
            settings.als_max_iter,
            settings.als_seed,
            settings.als_tune_fraction,
            mean,
        )
    raise ValueError(f"unknown baseline {name!r}; choose from global_mean, biases, als")
