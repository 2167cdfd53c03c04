"""Baselines fitted on the same training split as the model, to say how much the model adds.

- ``global_mean``: every prediction is the mean training rating. It cannot rank.
- ``biases``: ``mu + b_u + b_i``, the user and item biases fitted by alternating shrunk means
  (``b_i = sum(r - mu - b_u) / (reg + n_i)``, then the same for users), a few rounds, in Spark.
- ``als``: Spark MLlib's explicit ALS. ``rank`` and ``regParam`` are picked from a small grid by
  RMSE on a holdout carved out of the training split (never the validation split), then the
  model is refitted on the whole training split.
- ``most_popular``: every user gets the items with the most training ratings that they have not
  rated. It ranks only (no ``predict``).
- ``als_implicit``: Spark MLlib's ALS with ``implicitPrefs`` on the training ratings (fixed
  settings, not tuned). It ranks only: its scores are preferences, not ratings.

Each baseline is returned as a :class:`Fitted`: a function that adds ``prediction`` to rating pairs,
and, when it can rank, a :class:`Scorer` that the blocked scoring kernel
(:func:`recspark.serve.scoring.recommend_all`) turns into top-N lists with the same seen-item
exclusion and tie-break as the model. The ALS, bias and popularity baselines are scored as
dot-product models built from their own factors (popularity: an item bias equal to the training
count), so no baseline ranks on an easier footing than the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from torch import nn

from recspark.core.choices import BASELINE_NAMES
from recspark.core.constants import BIAS, FACTORS, ITEM_IDX, PREDICTION, RATING, USER_IDX
from recspark.core.errors import BadInputError
from recspark.model.registry import build_model
from recspark.model.saving import model_bytes
from recspark.model.spec import make_spec

log = logging.getLogger(__name__)


@dataclass
class Scorer:
    """A model as the scoring kernel sees it: user rows and the broadcast bytes of the item side.

    ``users`` holds ``(user_idx, bias, factors)``; ``payload`` is a model's bytes (see
    :func:`recspark.serve.scoring.item_side_payload`).
    """

    users: DataFrame
    payload: bytes


@dataclass
class Fitted:
    """A fitted baseline: ``predict(pairs) -> pairs + prediction`` (None when its scores are not
    ratings), an optional :class:`Scorer`."""

    name: str
    predict: Callable[[DataFrame], DataFrame] | None
    scorer: Scorer | None
    train_seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    native: Any = None  # the library's own model object, e.g. Spark's ALSModel


def dot_payload(item_vectors: np.ndarray, item_bias: np.ndarray | None = None) -> bytes:
    """Item-side bytes of a ``dot`` (or, with biases, unscaled ``dot_bias``) model.

    Row ``i`` of ``item_vectors`` is item index ``i``; scores are ``u . q_i (+ b_u + b_i)``.
    """
    n_items, factors = item_vectors.shape
    kind = "dot" if item_bias is None else "dot_bias"
    spec = {"kind": kind, "n_users": 1, "n_items": n_items, "factors": factors, "y_range": None}
    model = build_model(
        make_spec(kind=kind, n_users=1, n_items=n_items, factors=factors, y_range=None)
    )
    with torch.no_grad():
        _weight(model, "user_factors").zero_()
        _weight(model, "item_factors").copy_(torch.as_tensor(item_vectors, dtype=torch.float32))
        if item_bias is not None:
            _weight(model, "user_bias").zero_()
            _weight(model, "item_bias").copy_(
                torch.as_tensor(item_bias, dtype=torch.float32).view(-1, 1)
            )
    return model_bytes(model, spec, {"baseline": kind})


def _weight(model: nn.Module, table: str) -> torch.Tensor:
    """The weight of one of the model's tables (torch types a module's attributes loosely)."""
    weight = getattr(model, table).weight
    assert isinstance(weight, torch.Tensor), f"{table} has no weight tensor"
    return weight


def _item_matrix(
    items: DataFrame,
    n_items: int,
    width: int,
    id_col: str,
    *,
    vector_col: str | None,
    bias_col: str | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Item vectors and biases as arrays indexed by item; items the table lacks get zeros.

    The item table has one row per item, the size of what the kernel broadcasts anyway.
    """
    vectors = np.zeros((n_items, width), dtype=np.float32)
    bias = np.zeros(n_items, dtype=np.float32) if bias_col else None
    columns = [id_col] + [c for c in (vector_col, bias_col) if c]
    for row in items.select(*columns).toLocalIterator():
        index = row[id_col]
        if vector_col:
            vectors[index] = row[vector_col]
        if bias is not None and bias_col:
            bias[index] = row[bias_col]
    return vectors, bias


def mean_rating(train: DataFrame, rating_col: str = RATING) -> float:
    """The mean training rating."""
    value = train.agg(F.mean(rating_col)).collect()[0][0]
    if value is None:
        raise BadInputError("the training split is empty: there is no mean rating")
    return float(value)


def fit_global_mean(train: DataFrame, mean: float | None = None) -> Fitted:
    """Predict the mean training rating for every pair."""
    started = time.perf_counter()
    mu = mean_rating(train) if mean is None else mean
    seconds = time.perf_counter() - started

    def predict(pairs: DataFrame) -> DataFrame:
        return pairs.withColumn(PREDICTION, F.lit(mu).cast("float"))

    return Fitted("global_mean", predict, None, seconds, {"mean": mu})


def fit_most_popular(train: DataFrame, n_items: int) -> Fitted:
    """Rank the items a user has not rated by their number of training ratings.

    Scored as a ``dot_bias`` model with one zero factor and the training count as item bias, so
    the kernel's tie-break (the lower item index) orders items of equal count. Every training
    user gets a list; it has no ``predict`` (counts are not ratings).
    """
    started = time.perf_counter()
    counts = train.groupBy(ITEM_IDX).agg(F.count(F.lit(1)).cast("float").alias("ratings"))
    _, item_count = _item_matrix(counts, n_items, 1, ITEM_IDX, vector_col=None, bias_col="ratings")
    assert item_count is not None  # asked for by its bias column
    seconds = time.perf_counter() - started
    scorer = Scorer(
        train.select(USER_IDX)
        .distinct()
        .select(
            USER_IDX,
            F.lit(0.0).cast("float").alias(BIAS),
            F.array(F.lit(0.0)).cast("array<float>").alias(FACTORS),
        ),
        dot_payload(np.zeros((n_items, 1), dtype=np.float32), item_count),
    )
    info = {"rated_items": int((item_count > 0).sum())}
    return Fitted("most_popular", None, scorer, seconds, info)


def bias_tables(
    train: DataFrame, mean: float, reg: float, iterations: int
) -> tuple[DataFrame, DataFrame]:
    """``(user_idx, b_user)`` and ``(item_idx, b_item)`` by alternating shrunk means."""
    residual = train.select(USER_IDX, ITEM_IDX, (F.col(RATING) - mean).alias("residual")).cache()
    users = residual.select(USER_IDX).distinct().withColumn("b_user", F.lit(0.0))
    items = None
    for _ in range(iterations):
        items = (
            residual.join(users, USER_IDX)
            .groupBy(ITEM_IDX)
            .agg(
                (F.sum(F.col("residual") - F.col("b_user")) / (F.count(F.lit(1)) + reg)).alias(
                    "b_item"
                )
            )
            .localCheckpoint()
        )
        users = (
            residual.join(items, ITEM_IDX)
            .groupBy(USER_IDX)
            .agg(
                (F.sum(F.col("residual") - F.col("b_item")) / (F.count(F.lit(1)) + reg)).alias(
                    "b_user"
                )
            )
            .localCheckpoint()
        )
    residual.unpersist()
    if items is None:
        raise ValueError(f"bias_tables needs at least one iteration, got {iterations}")
    return users, items


def fit_biases(
    train: DataFrame,
    n_items: int,
    reg: float = 10.0,
    iterations: int = 3,
    mean: float | None = None,
) -> Fitted:
    """The user+item bias model, ``mu + b_u + b_i`` (an unknown user or item adds 0)."""
    started = time.perf_counter()
    mu = mean_rating(train) if mean is None else mean
    users, items = bias_tables(train, mu, reg, iterations)
    seconds = time.perf_counter() - started

    def predict(pairs: DataFrame) -> DataFrame:
        joined = pairs.join(users, USER_IDX, "left").join(F.broadcast(items), ITEM_IDX, "left")
        value = F.lit(mu) + F.coalesce("b_user", F.lit(0.0)) + F.coalesce("b_item", F.lit(0.0))
        return joined.withColumn(PREDICTION, value.cast("float")).drop("b_user", "b_item")

    # As a dot_bias model with one zero factor: b_u' = mu + b_u and b_i.
    _, item_bias = _item_matrix(items, n_items, 1, ITEM_IDX, vector_col=None, bias_col="b_item")
    scorer = Scorer(
        users.select(
            USER_IDX,
            (F.lit(mu) + F.col("b_user")).cast("float").alias(BIAS),
            F.array(F.lit(0.0)).cast("array<float>").alias(FACTORS),
        ),
        dot_payload(np.zeros((n_items, 1), dtype=np.float32), item_bias),
    )
    return Fitted(
        "biases", predict, scorer, seconds, {"mean": mu, "reg": reg, "iterations": iterations}
    )


def _als(
    rank: int, reg: float, max_iter: int, seed: int, *, implicit: bool = False, alpha: float = 1.0
) -> ALS:
    return ALS(
        userCol=USER_IDX,
        itemCol=ITEM_IDX,
        ratingCol=RATING,
        rank=rank,
        regParam=reg,
        maxIter=max_iter,
        seed=seed,
        coldStartStrategy="nan",
        implicitPrefs=implicit,
        alpha=alpha,
    )


def _als_scorer(model, n_items: int, rank: int) -> Scorer:
    """A fitted ALS model as the scoring kernel sees it: a ``dot`` model of its own factors."""
    vectors, _ = _item_matrix(
        model.itemFactors, n_items, rank, "id", vector_col="features", bias_col=None
    )
    return Scorer(
        model.userFactors.select(
            F.col("id").alias(USER_IDX),
            F.lit(0.0).cast("float").alias(BIAS),
            F.col("features").cast("array<float>").alias(FACTORS),
        ),
        dot_payload(vectors),
    )


def tune_als(
    train: DataFrame,
    ranks: list[int],
    reg_params: list[float],
    *,
    max_iter: int,
    seed: int,
    holdout_fraction: float,
) -> tuple[int, float, list[dict[str, float]]]:
    """Pick ``(rank, regParam)`` by RMSE on a random holdout of ``train``; also every trial."""
    fit_part, holdout = train.randomSplit([1 - holdout_fraction, holdout_fraction], seed=seed)
    fit_part, holdout = fit_part.cache(), holdout.cache()
    trials = []
    for rank in ranks:
        for reg in reg_params:
            model = _als(rank, reg, max_iter, seed).fit(fit_part)
            scored = model.transform(holdout).where(~F.isnan(PREDICTION))
            error = F.col(PREDICTION) - F.col(RATING)
            rmse = scored.agg(F.sqrt(F.mean(error**2))).collect()[0][0]
            trials.append({"rank": rank, "reg_param": reg, "holdout_rmse": rmse})
            log.info("ALS rank %d regParam %g: holdout RMSE %.4f", rank, reg, rmse)
    fit_part.unpersist()
    holdout.unpersist()
    best = min(trials, key=lambda trial: trial["holdout_rmse"])
    return best["rank"], best["reg_param"], trials


def fit_als(
    train: DataFrame,
    n_items: int,
    ranks: list[int],
    reg_params: list[float],
    *,
    max_iter: int = 10,
    seed: int = 42,
    holdout_fraction: float = 0.1,
    mean: float | None = None,
) -> Fitted:
    """Spark ALS (explicit), tuned over ``ranks x reg_params`` when the grid has more than one
    point.

    Pairs ALS cannot score (a user or item absent from training) get the mean training rating.
    ``train_seconds`` is the final fit on the whole training split; tuning is in ``info``.
    """
    info: dict[str, Any] = {"max_iter": max_iter}
    if len(ranks) * len(reg_params) > 1:
        started = time.perf_counter()
        rank, reg, trials = tune_als(
            train,
            ranks,
            reg_params,
            max_iter=max_iter,
            seed=seed,
            holdout_fraction=holdout_fraction,
        )
        info.update(trials=trials, tune_seconds=time.perf_counter() - started)
    else:
        rank, reg = ranks[0], reg_params[0]
    info.update(rank=rank, reg_param=reg)
    started = time.perf_counter()
    model = _als(rank, reg, max_iter, seed).fit(train)
    # Fitting is lazy in parts: touch the factors so the timing covers the work.
    model.userFactors.count()
    seconds = time.perf_counter() - started
    mu = mean_rating(train) if mean is None else mean

    def predict(pairs: DataFrame) -> DataFrame:
        scored = model.transform(pairs)
        return scored.withColumn(
            PREDICTION,
            F.when(F.isnan(PREDICTION), F.lit(mu)).otherwise(F.col(PREDICTION)).cast("float"),
        )

    return Fitted("als", predict, _als_scorer(model, n_items, rank), seconds, info, native=model)


def fit_als_implicit(
    train: DataFrame,
    n_items: int,
    rank: int,
    reg: float,
    alpha: float,
    *,
    max_iter: int = 10,
    seed: int = 42,
) -> Fitted:
    """Spark ALS with ``implicitPrefs``: each training rating is an interaction of confidence
    ``1 + alpha * rating`` (Hu, Koren and Volinsky's weighting, as MLlib implements it).

    It predicts preferences, not ratings, so it has no ``predict`` (no RMSE); it ranks through
    the same kernel as every other model. Not tuned: the ranking benchmark fixes its settings.
    """
    started = time.perf_counter()
    model = _als(rank, reg, max_iter, seed, implicit=True, alpha=alpha).fit(train)
    model.userFactors.count()
    seconds = time.perf_counter() - started
    info = {"rank": rank, "reg_param": reg, "alpha": alpha, "max_iter": max_iter}
    return Fitted(
        "als_implicit", None, _als_scorer(model, n_items, rank), seconds, info, native=model
    )


BASELINES = BASELINE_NAMES
