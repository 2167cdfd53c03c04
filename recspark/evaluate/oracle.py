"""The oracle: the best lists and ratings the synthetic generator's own truth can give, as the
upper reference of an evaluation on the embedded data.

``generate`` keeps what it planted (``data/truth``: user and item biases and factors, item
popularity, ``truth.json``'s spec with the noise level). When the evaluated run was prepared from
those very ratings (:func:`matching_truth`), ``evaluate`` also measures the ``oracle`` row by the
same code as the model and the baselines:

- its rating prediction is ``E[rating | planted mean]`` (the rounding and clipping included), so
  its RMSE is the noise floor up to sampling;
- its lists rank, for each user, the items not rated in training by the generator's own
  expectation that the item is a relevant held-out item: ``P(held out | not in train) x
  P(rating >= evaluate.relevance_threshold | planted mean)``. Ranking by the planted rating alone
  is not the best list: which items a user rates is drawn by popularity, so a held-out item is far
  more often a popular one. The generator draws a user's ``c`` distinct items by popularity
  ``p_i`` (with replacement until ``c`` are distinct), which includes item ``i`` with probability
  ``pi_i = 1 - exp(-lambda_c p_i)``, ``lambda_c`` solved from ``sum_i pi_i = c``; a random split
  holds out a share ``v`` of them (the user's own held-out count over ``c``), so an item outside
  the user's training items is held out with probability ``pi_i v / (1 - pi_i (1 - v))``. The
  rating is relevant when the planted mean plus the Gaussian noise rounds to at least the
  threshold: ``Phi((mean - (ceil(threshold) - 0.5)) / noise)``.

Ranking by the expected number of relevant items per slot maximises the expected precision at
``k`` (and, nearly, recall and NDCG): no model trained on the data can do better on average, so the
row shows how far the lists are from the best possible. The lists are made by a Spark job over
blocks of users with the item side broadcast (items are few), as the scoring kernel is; the
per-count ``lambda`` table has at most one entry per catalogue item.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.constants import (
    BIAS,
    FACTORS,
    ITEM_ID,
    ITEM_IDX,
    ITEMS,
    PREDICTION,
    RANK,
    SCORE,
    USER_ID,
    USER_IDX,
)
from recspark.core.location import Location
from recspark.core.storage import Layout, read_json, read_parquet
from recspark.data.listing import fingerprint
from recspark.data.prepared import RATED, PreparedRun
from recspark.data.synthetic import GLOBAL_MEAN, SyntheticSpec, rating_moments
from recspark.evaluate.assessment import EvaluationSplit, KernelSettings, assess_contender
from recspark.evaluate.evaluation_report import BaselineResult

log = logging.getLogger(__name__)

ORACLE = "oracle"
#: Most score cells (users x items) one block of the list job holds at once.
BLOCK_CELLS = 1 << 22
HELD, SEEN, LAMBDA = "held_share", "seen", "inclusion_rate"


@dataclass(frozen=True)
class ItemSide:
    """The planted item side by item index (items the id map lacks get zeros): what every task
    of the oracle's jobs gets broadcast."""

    factors: np.ndarray  # (n_items, factors) float64
    bias: np.ndarray  # (n_items,)
    popularity: np.ndarray  # (n_items,) the generator's draw probability
    eligible: np.ndarray  # (n_items,) bool: items the lists may hold


def matching_truth(layout: Layout, manifest: PreparedRun) -> SyntheticSpec | None:
    """The spec of ``data/truth`` when it describes the prepared run's ratings; None otherwise.

    It does when the run was prepared from ``generate``'s ratings (``input.format: synthetic``),
    those files are unchanged since (their fingerprint is the manifest's) and ``truth.json``,
    written by the same ``generate``, counts as many ratings as prepare read.
    """
    if manifest.input.format != "synthetic" or not manifest.input.path:
        return None
    path = layout.truth / "truth.json"
    if not path.exists():
        return None
    truth = read_json(path)
    read = fingerprint([manifest.input.path, manifest.input.validation_path])
    if read != manifest.input.fingerprint:
        log.info("oracle: the synthetic ratings changed since prepare; no oracle row")
        return None
    if manifest.counts.get("input_rows") not in (None, truth.get("ratings")):
        log.info("oracle: data/truth does not describe the prepared ratings; no oracle row")
        return None
    return SyntheticSpec(**truth["spec"])


def inclusion_rates(popularity: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``lambda_c`` for each count ``c``: ``sum_i 1 - exp(-lambda_c p_i) = c`` (inf from ``c`` =
    the catalogue up), by bisection on ``log lambda`` in chunks of counts."""
    counts = np.asarray(counts, dtype=np.float64)
    rates = np.full(len(counts), np.inf)
    inside = np.flatnonzero(counts < len(popularity))
    chunk = max(1, BLOCK_CELLS // max(len(popularity), 1))
    for start in range(0, len(inside), chunk):
        where = inside[start : start + chunk]
        target = counts[where]
        low, high = np.log(np.maximum(target, 1e-9)), np.log(np.maximum(target, 1e-9)) + 60.0
        for _ in range(80):
            middle = (low + high) / 2
            drawn = -np.expm1(-np.exp(middle)[:, None] * popularity[None, :]).sum(axis=1)
            below = drawn < target
            low, high = np.where(below, middle, low), np.where(below, high, middle)
        rates[where] = np.exp(high)
    return rates


def relevance_probability(mean: torch.Tensor, noise: float, threshold: float) -> torch.Tensor:
    """P(clip(round(mean + N(0, noise^2)), 1, 5) >= threshold), per element."""
    if threshold <= 1:
        return torch.ones_like(mean)
    if threshold > 5:
        return torch.zeros_like(mean)
    edge = math.ceil(threshold) - 0.5
    if noise == 0:
        return (mean >= edge).to(mean.dtype)
    return torch.special.ndtr((mean - edge) / noise)


def oracle_scores(users: pd.DataFrame, items: ItemSide, noise: float, threshold: float):
    """``(len(users), n_items)`` expected relevant held-out items: see the module docstring.

    ``users`` holds ``bias``, ``factors``, ``inclusion_rate`` and ``held_share``; the training
    items and the ineligible ones are not masked here.
    """
    factors = torch.from_numpy(np.stack(users[FACTORS].to_numpy()).astype(np.float64))
    mean = (
        GLOBAL_MEAN
        + torch.from_numpy(users[BIAS].to_numpy(np.float64))[:, None]
        + torch.from_numpy(items.bias)[None, :]
        + factors @ torch.from_numpy(items.factors).T
    )
    rate = torch.from_numpy(users[LAMBDA].to_numpy(np.float64))[:, None]
    drawn = -torch.expm1(-rate * torch.from_numpy(items.popularity)[None, :])
    held = torch.from_numpy(users[HELD].to_numpy(np.float64))[:, None]
    held_out = drawn * held / (1 - drawn * (1 - held))
    return held_out * relevance_probability(mean, noise, threshold)


def _top_k(scores: torch.Tensor, users: pd.DataFrame, items: ItemSide, k: int) -> pd.DataFrame:
    """The block's top-``k`` rows, training and ineligible items out, ties to the lower item."""
    scores = scores.clone()
    scores[:, torch.from_numpy(~items.eligible)] = -math.inf
    for row, seen in enumerate(users[SEEN]):
        scores[row, torch.as_tensor(np.asarray(seen, dtype=np.int64))] = -math.inf
    # Stable sort of the negated scores: equal scores keep the lower item index first.
    order = torch.sort(-scores, dim=1, stable=True).indices[:, :k]
    top = torch.gather(scores, 1, order)
    keep = torch.isfinite(top).numpy()
    rows, ranks = np.nonzero(keep)
    return pd.DataFrame(
        {
            USER_IDX: users[USER_IDX].to_numpy(np.int32)[rows],
            ITEM_IDX: order.numpy()[rows, ranks].astype(np.int32),
            RANK: (ranks + 1).astype(np.int32),
            SCORE: top.numpy()[rows, ranks].astype(np.float32),
        }
    )


LISTS_SCHEMA = T.StructType(
    [
        T.StructField(USER_IDX, T.IntegerType(), False),
        T.StructField(ITEM_IDX, T.IntegerType(), False),
        T.StructField(RANK, T.IntegerType(), False),
        T.StructField(SCORE, T.FloatType(), False),
    ]
)


def item_side(layout: Layout, prepared: Location, n_items: int, eligible: np.ndarray | None):
    """The planted items by the run's item index, and the whole catalogue's popularity (the
    generator draws from every item, rated or not): ``(ItemSide, popularity)``. Item-sized."""
    truth = read_parquet(layout.truth / "items").to_pandas()
    index = read_parquet(prepared / "item_index", [ITEM_ID, ITEM_IDX]).to_pandas()
    rows = index.merge(truth, on=ITEM_ID, how="inner")
    position = rows[ITEM_IDX].to_numpy(np.int64)
    factors = np.zeros((n_items, len(truth[FACTORS].iloc[0])), dtype=np.float64)
    bias, popularity = np.zeros(n_items), np.zeros(n_items)
    if len(rows):
        factors[position] = np.stack(rows[FACTORS].to_numpy())
        bias[position] = rows[BIAS].to_numpy(np.float64)
        popularity[position] = rows["popularity"].to_numpy(np.float64)
    allowed = np.ones(n_items, dtype=bool) if eligible is None else np.asarray(eligible, bool)
    side = ItemSide(factors, bias, popularity, allowed)
    return side, truth["popularity"].to_numpy(np.float64)


def planted_users(spark: SparkSession, layout: Layout, prepared: Location) -> DataFrame:
    """``(user_idx, bias, factors, items)``: each indexed user's planted bias and factors and
    every item it rated (prepare's ``rated/``)."""
    truth = spark.read.parquet(str(layout.truth / "users"))
    rated = spark.read.parquet(str(prepared / RATED))
    return rated.join(truth, USER_ID).select(USER_IDX, BIAS, FACTORS, ITEMS)


def oracle_lists(
    spark: SparkSession,
    users: DataFrame,
    split: EvaluationSplit,
    items: ItemSide,
    catalogue: np.ndarray,
    spec: SyntheticSpec,
    threshold: float,
) -> DataFrame:
    """The oracle's top-``split.k`` ``(user_idx, item_idx, rank, score)`` of the ranked users."""
    train = split.train.groupBy(F.col(USER_IDX).cast("int").alias(USER_IDX)).agg(
        F.collect_list(F.col(ITEM_IDX).cast("int")).alias(SEEN)
    )
    ranked = (
        users.join(split.users.select(F.col(USER_IDX).cast("int").alias(USER_IDX)), USER_IDX)
        .join(train, USER_IDX)
        .withColumn("rated", F.size(ITEMS))
        .withColumn(HELD, 1.0 - F.size(SEEN) / F.col("rated"))
        .drop(ITEMS)
    )
    counts = [row[0] for row in ranked.select("rated").distinct().collect()]  # <= catalogue
    table = np.zeros(max(counts, default=0) + 1)
    if counts:
        table[counts] = inclusion_rates(catalogue, np.array(counts))
    noise, k = spec.noise, split.k
    block = max(1, BLOCK_CELLS // max(len(items.bias), 1))

    def lists(batches):
        for batch in batches:
            batch = batch.assign(**{LAMBDA: table[batch["rated"].to_numpy()]})
            for start in range(0, len(batch), block):
                part = batch.iloc[start : start + block]
                yield _top_k(oracle_scores(part, items, noise, threshold), part, items, k)

    return ranked.mapInPandas(lists, LISTS_SCHEMA)


def oracle_predict(users: DataFrame, items: ItemSide, noise: float):
    """``predict(pairs) -> pairs + prediction``: ``E[rating | planted mean]``; a user the truth
    lacks gets its bias and factors as zeros."""
    planted = users.select(F.col(USER_IDX).cast("int").alias("_user"), BIAS, FACTORS)

    def predict(pairs: DataFrame) -> DataFrame:
        columns = pairs.columns
        schema = T.StructType(
            [*pairs.schema.fields, T.StructField(PREDICTION, T.DoubleType(), False)]
        )
        joined = pairs.join(planted, F.col(USER_IDX).cast("int") == F.col("_user"), "left")

        def expected(batches):
            for batch in batches:
                item = batch[ITEM_IDX].to_numpy(np.int64)
                known = batch[BIAS].notna().to_numpy()
                bias = np.where(known, batch[BIAS].fillna(0.0).to_numpy(np.float64), 0.0)
                dot = np.zeros(len(batch))
                if known.any():
                    vectors = np.stack(batch[FACTORS][known].to_numpy()).astype(np.float64)
                    dot[known] = np.einsum("ij,ij->i", vectors, items.factors[item[known]])
                mean = GLOBAL_MEAN + bias + items.bias[item] + dot
                value, _ = rating_moments(mean, noise)
                yield batch[columns].assign(**{PREDICTION: value})

        return joined.mapInPandas(expected, schema)

    return predict


def assess_oracle(
    spark: SparkSession,
    layout: Layout,
    manifest: PreparedRun,
    prepared: Location,
    split: EvaluationSplit,
    threshold: float,
    kernel: KernelSettings,
) -> BaselineResult | None:
    """The oracle's figures on ``split``, measured as the model's are; None when ``data/truth``
    does not describe the prepared ratings (:func:`matching_truth`)."""
    spec = matching_truth(layout, manifest)
    if spec is None:
        return None
    started = time.perf_counter()
    items, catalogue = item_side(layout, prepared, split.n_items, split.eligible)
    users = planted_users(spark, layout, prepared).cache()
    lists = oracle_lists(spark, users, split, items, catalogue, spec, threshold)
    figures = assess_contender(
        spark, split, oracle_predict(users, items, spec.noise), None, kernel=kernel, lists=lists
    )
    users.unpersist()
    seconds = time.perf_counter() - started
    log.info("oracle: RMSE %s, NDCG@%d %s", figures["rmse"], split.k, figures["ndcg_at_k"])
    return BaselineResult(figures, seconds, {"noise": spec.noise, "seed": spec.seed})
