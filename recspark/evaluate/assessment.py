"""Measuring one contender (the model or a baseline) on a prepared split, by the same code for all.

The split is read once (:func:`read_split`) and shared. It is the run's test split when prepare held
one out, else its validation split (the one that also chose the model's epoch and settings). Every
contender ranks every item the user did not rate in training (nor, measured on test, in validation:
those are the user's known ratings too) (among the items with at least ``score.min_item_ratings``
training ratings when evaluate asks for that filter: the lists ``score`` publishes), and rating
metrics are computed where the contender predicts ratings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from recspark.core.choices import BASELINE_NAMES
from recspark.core.config import EvaluateConfig, ScoreConfig
from recspark.core.constants import USER_IDX
from recspark.core.location import Location
from recspark.data.prepared import (
    VALIDATION,
    cold_start_table,
    eligible_in_run,
    rated,
    seen_items,
)
from recspark.evaluate.baselines import (
    Fitted,
    Scorer,
    fit_als,
    fit_als_implicit,
    fit_biases,
    fit_global_mean,
    fit_most_popular,
)
from recspark.evaluate.metrics import assess, item_popularity, relevant_items
from recspark.serve.scoring import ScoringPlan, recommend_all

SUMMARY_BASELINE_KEYS = (
    "rmse",
    "mae",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "map_at_k",
    "hit_rate_at_k",
    "coverage",
    "rare_item_share",
    "popularity_bias",
    "intra_list_diversity",
)

HISTOGRAM_BINS = 24


@dataclass(frozen=True)
class KernelSettings:
    """How the scoring kernel runs for every contender: ``score.users_per_block``, the device
    (``train.device``) and ``score.partitions``."""

    users_per_block: int | str = "auto"
    device: str = "auto"
    partitions: int | None = None

    @classmethod
    def of(cls, score: ScoreConfig, device: str) -> KernelSettings:
        return cls(score.users_per_block, device, score.partitions)


@dataclass
class EvaluationSplit:
    """One prepared run's split, read once and shared by the model and every baseline."""

    train: DataFrame
    validation: DataFrame  # the held-out rows measured on: those of ``split``
    cold_start: DataFrame  # the held-out rows of ``split`` whose user or item is not in train
    relevant: DataFrame
    users: DataFrame  # users with relevant held-out items: the ones ranked
    seen: DataFrame  # (user_idx, seen): items rated outside ``split``, excluded from every list
    popularity: DataFrame
    train_users: int
    n_items: int
    k: int
    eligible: np.ndarray | None = None  # items any list may hold (one bool per item); None: all
    rare_item_ratings: int = 5  # beyond accuracy: a listed item with fewer train ratings is rare
    item_features: DataFrame | None = None  # (item_idx, feature, value): intra-list diversity
    split: str = VALIDATION  # which split ``validation`` holds: validation or test


def read_split(
    spark: SparkSession,
    prepared: Location,
    n_items: int,
    k: int,
    relevance_threshold: float,
    min_item_ratings: int = 0,
    *,
    rare_item_ratings: int = 5,
    item_features: DataFrame | None = None,
    split: str = VALIDATION,
) -> EvaluationSplit:
    """Read ``prepared/`` and derive what every contender is measured against.

    ``split`` names the held-out split measured on (:attr:`recspark.data.prepared.PreparedRun.
    evaluation_split`): ``validation``, or ``test``, whose lists also leave out what the user
    rated in validation.

    With ``min_item_ratings`` > 0 (``score.min_item_ratings``) the lists hold only items with at
    least that many training ratings, as the published lists do
    (:func:`recspark.data.prepared.eligible_items`); 0 ranks every item.
    ``rare_item_ratings`` and ``item_features`` (``(item_idx, feature, value)``, None: no
    diversity figure) are for the figures beyond accuracy
    (:func:`recspark.evaluate.metrics.assess`).
    """
    train = spark.read.parquet(str(prepared / "train"))
    validation = spark.read.parquet(str(prepared / split))
    cold_path = prepared / cold_start_table(split)
    cold_start = spark.read.parquet(str(cold_path)) if cold_path.exists() else validation.limit(0)
    relevant = relevant_items(validation, relevance_threshold)
    known = (
        train
        if split == VALIDATION
        else rated(spark, prepared, ("train", VALIDATION, "cold_start"))
    )
    popularity, train_users = item_popularity(train)
    return EvaluationSplit(
        train=train,
        validation=validation,
        cold_start=cold_start,
        relevant=relevant,
        users=relevant.select(USER_IDX).distinct(),
        seen=seen_items(known),
        popularity=popularity.cache(),
        train_users=train_users,
        n_items=n_items,
        k=k,
        eligible=(
            eligible_in_run(spark, prepared, n_items, min_item_ratings)
            if min_item_ratings > 0
            else None
        ),
        rare_item_ratings=rare_item_ratings,
        item_features=item_features,
        split=split,
    )


def top_k_lists(
    spark: SparkSession,
    scorer: Scorer,
    split: EvaluationSplit,
    *,
    users_per_block: int | str = "auto",
    device: str = "auto",
    partitions: int | None = None,
) -> DataFrame:
    """Top-``k`` ``(user_idx, item_idx, rank, score)`` of the ranked users, training items (and
    items outside ``split.eligible``) excluded."""
    users = scorer.users.join(split.users, USER_IDX)
    return recommend_all(
        spark,
        users,
        split.seen,
        ScoringPlan(
            scorer.payload,
            split.k,
            users_per_block=users_per_block,
            device=device,
            partitions=partitions,
            eligible=split.eligible,
        ),
    )


def assess_contender(
    spark: SparkSession,
    split: EvaluationSplit,
    predict_pairs: Callable[[DataFrame], DataFrame] | None,
    scorer: Scorer | None,
    *,
    kernel: KernelSettings,
    lists: DataFrame | None = None,
) -> dict[str, Any]:
    """Every metric of one model: ``predict_pairs(frame) -> frame + prediction``, and its scorer.

    ``predict_pairs`` is None for a model whose scores are not ratings (the ranking objective,
    implicit ALS): its RMSE and MAE are reported as None rather than as meaningless figures.
    ``lists``: the top-``k`` ``(user_idx, item_idx, rank)`` of the ranked users (``split.users``,
    training items excluded), for a model the kernel cannot score (EASE); then ``scorer`` is None.
    """
    predictions = predict_pairs(split.validation).cache() if predict_pairs else None
    cold = predict_pairs(split.cold_start) if predict_pairs else None
    if lists is not None:
        lists = lists.cache()
    elif scorer is not None:
        lists = top_k_lists(
            spark,
            scorer,
            split,
            users_per_block=kernel.users_per_block,
            device=kernel.device,
            partitions=kernel.partitions,
        ).cache()
    metrics = assess(
        predictions,
        lists,
        split.relevant,
        split.k,
        split.n_items,
        popularity=split.popularity,
        n_users=split.train_users,
        cold_start_predictions=cold,
        validation=split.validation,
        rare_item_ratings=split.rare_item_ratings,
        item_features=split.item_features,
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
            max_iter=settings.als_max_iter,
            seed=settings.als_seed,
            holdout_fraction=settings.als_tune_fraction,
            mean=mean,
        )
    if name == "most_popular":
        return fit_most_popular(split.train, split.n_items)
    if name == "als_implicit":
        return fit_als_implicit(
            split.train,
            split.n_items,
            settings.als_implicit_rank,
            settings.als_implicit_reg_param,
            settings.als_implicit_alpha,
            max_iter=settings.als_max_iter,
            seed=settings.als_seed,
        )
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)}")
