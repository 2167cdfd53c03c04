"""The embedded synthetic ratings data set, generated in Spark with a known answer.

Each rating is ``clip(round(mu + b_u + b_i + p_u . q_i + noise), 1, 5)``: planted low-rank user and
item factors, user and item biases, Gaussian noise, then the 1..5 integer scale of MovieLens. Items
are drawn with power-law (Zipf) popularity; users' activity is log-normal, so a few users rate a
lot and most rate little. Because the planted model is known, so is the best RMSE any model can
reach: ``noise_floor_rmse``, the root mean of ``Var[rating | planted mean]``, computed exactly for
the rounding and clipping.

Users are generated in blocks of :data:`BLOCK_USERS` consecutive ids, each block from its own
random stream seeded by ``(seed, block)``. The output therefore depends on the seed and the sizes
only, not on how Spark partitions the work, and no executor holds more than one block's ratings.
Item parameters are one array of ``items x factors`` built on the driver and broadcast, as item
factors are at scoring time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from recspark.core import location
from recspark.core.constants import ITEM_ID, RATING, TIMESTAMP, USER_ID

BLOCK_USERS = 4096
GLOBAL_MEAN = 3.5
BIAS_SD = 0.4
SIGNAL_SD = 0.8
RATING_LEVELS = np.arange(1, 6, dtype=np.float64)
_TIME_START = 1_577_836_800  # 2020-01-01T00:00:00Z
_TIME_SPAN = 3 * 365 * 24 * 3600

RATINGS_SCHEMA = T.StructType(
    [
        T.StructField(USER_ID, T.LongType(), False),
        T.StructField(ITEM_ID, T.LongType(), False),
        T.StructField(RATING, T.FloatType(), False),
        T.StructField(TIMESTAMP, T.LongType(), False),
    ]
)


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and shape of the synthetic data set (``synthetic.*`` in the config)."""

    users: int
    items: int
    ratings: int
    factors: int
    noise: float
    seed: int
    popularity_exponent: float = 0.8
    activity_sigma: float = 1.0

    @property
    def blocks(self) -> int:
        return math.ceil(self.users / BLOCK_USERS)

    @property
    def factor_sd(self) -> float:
        # p.q sums `factors` products of two N(0, s^2) draws: its variance is factors * s^4.
        return (SIGNAL_SD**2 / self.factors) ** 0.25

    @property
    def max_per_user(self) -> int:
        """The most ratings one user may have: the whole catalogue."""
        return self.items

    @property
    def activity_cap(self) -> float:
        """Where the normal score behind a user's log-normal activity is truncated.

        At most 3 sd, and low enough that the most active user's expected share of the ratings
        stays within half of the catalogue: capping counts after the fact would lose ratings and
        break the exact total. Solved from the truncated log-normal's mean (a scalar, no data).
        """
        extra_per_user = (self.ratings - self.users) / self.users
        if self.activity_sigma == 0 or extra_per_user <= 0:
            return 3.0
        target = max(self.items / 2 - 1, 1.0) / extra_per_user  # max activity / mean activity
        cap = 3.0
        for _ in range(50):
            mean = _truncated_lognormal_mean(self.activity_sigma, cap)
            wanted = math.log(target * mean) / self.activity_sigma
            if wanted >= cap - 1e-9:
                break
            cap = wanted
        return cap


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _truncated_lognormal_mean(sigma: float, cap: float) -> float:
    """E[exp(sigma * min(z, cap))] for standard normal z."""
    normal_cdf = _normal_cdf
    return math.exp(sigma**2 / 2) * normal_cdf(cap - sigma) + math.exp(sigma * cap) * (
        1.0 - normal_cdf(cap)
    )


@dataclass(frozen=True)
class ItemTruth:
    factors: np.ndarray  # (items, factors) float32
    bias: np.ndarray  # (items,) float32
    popularity: np.ndarray  # (items,) float64, sums to 1


def item_truth(spec: SyntheticSpec) -> ItemTruth:
    """Planted item factors, biases and Zipf popularity (item ids shuffled against rank)."""
    rng = np.random.default_rng([spec.seed, 1])
    factors = rng.normal(0.0, spec.factor_sd, size=(spec.items, spec.factors)).astype(np.float32)
    bias = rng.normal(0.0, BIAS_SD, size=spec.items).astype(np.float32)
    rank = rng.permutation(spec.items)
    weight = (rank + 1.0) ** -spec.popularity_exponent
    return ItemTruth(factors, bias, weight / weight.sum())


def _user_params(
    spec: SyntheticSpec, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    """A block's user ids, activity weights, biases and factors, plus its stream for the rest."""
    rng = np.random.default_rng([spec.seed, 0, block])
    first = block * BLOCK_USERS
    ids = np.arange(first, min(first + BLOCK_USERS, spec.users), dtype=np.int64)
    z = rng.normal(size=len(ids))
    activity = np.exp(spec.activity_sigma * np.minimum(z, spec.activity_cap))
    bias = rng.normal(0.0, BIAS_SD, size=len(ids)).astype(np.float32)
    factors = rng.normal(0.0, spec.factor_sd, size=(len(ids), spec.factors)).astype(np.float32)
    return ids, activity, bias, factors, rng


def block_activity_sums(spec: SyntheticSpec, blocks: pd.Series) -> pd.Series:
    return blocks.map(lambda block: float(_user_params(spec, int(block))[1].sum()))


def ratings_per_user(
    activity: np.ndarray, offset: float, total_activity: float, extra: int, last: bool = False
) -> np.ndarray:
    """Split ``extra`` ratings over users in proportion to activity, exactly, on top of one each.

    The split uses the running sum of activity over all users (``offset`` is the sum over earlier
    blocks), so rounding never loses or adds a rating across blocks. The block holding the last
    user (``last``) closes the sum at ``extra``: block sums and running sums are added in different
    orders, and floating point may leave the final cumulative share a hair below one.
    """
    cumulative = offset + np.cumsum(activity)
    upper = np.minimum(np.floor(extra * cumulative / total_activity), extra)
    if last:
        upper[-1] = extra
    lower = np.concatenate([[math.floor(extra * offset / total_activity)], upper[:-1]])
    return (1 + upper - lower).astype(np.int64)


def _sample_items(
    rng: np.random.Generator, counts: np.ndarray, cdf: np.ndarray, items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[u]`` distinct items for each local user by popularity; return (user, item)."""
    owner = np.repeat(np.arange(len(counts)), counts)
    chosen = np.empty(0, dtype=np.int64)
    needed = owner
    for _ in range(64):
        draws = np.minimum(np.searchsorted(cdf, rng.random(len(needed))), items - 1)
        chosen = np.unique(np.concatenate([chosen, needed * items + draws]))
        have = np.bincount(chosen // items, minlength=len(counts))
        deficit = counts - have
        if not deficit.any():
            break
        needed = np.repeat(np.arange(len(counts)), deficit)
    else:
        # Rare heavy users whose popular items are exhausted: fill uniformly from the unseen.
        for user in np.flatnonzero(counts - np.bincount(chosen // items, minlength=len(counts))):
            seen = chosen[chosen // items == user] % items
            unseen = np.setdiff1d(np.arange(items), seen)
            missing = counts[user] - len(seen)
            extra = rng.choice(unseen, size=missing, replace=False)
            chosen = np.concatenate([chosen, user * items + extra])
        chosen = np.sort(chosen)
    return chosen // items, chosen % items


def rating_moments(mean: np.ndarray, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """E and Var of ``clip(round(mean + N(0, noise^2)), 1, 5)``, exactly, per element."""
    if noise == 0:
        value = np.clip(np.round(mean), 1, 5)
        return value, np.zeros_like(value)
    edges = np.array([1.5, 2.5, 3.5, 4.5])
    z = (edges[None, :] - mean[:, None]) / (noise * math.sqrt(2.0))
    cdf = 0.5 * (1.0 + _erf(z))
    cdf = np.concatenate([np.zeros((len(mean), 1)), cdf, np.ones((len(mean), 1))], axis=1)
    prob = np.diff(cdf, axis=1)
    expected = prob @ RATING_LEVELS
    second = prob @ RATING_LEVELS**2
    return expected, np.maximum(second - expected**2, 0.0)


def _erf(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))).numpy()


def block_ratings(
    spec: SyntheticSpec,
    block: int,
    offset: float,
    total_activity: float,
    truth: ItemTruth,
) -> tuple[pd.DataFrame, float]:
    """All ratings of one block of users, and the block's sum of ``Var[rating | mean]``."""
    ids, activity, user_bias, user_factors, rng = _user_params(spec, block)
    counts = ratings_per_user(
        activity, offset, total_activity, spec.ratings - spec.users, last=block == spec.blocks - 1
    )
    if counts.max() > spec.max_per_user:
        # Only reachable far outside the validated sizes; never trim silently (it breaks the total).
        raise ValueError(
            f"synthetic user would need {counts.max()} ratings but there are {spec.items} items: "
            "lower synthetic.activity_sigma or synthetic.ratings, or raise synthetic.items"
        )
    local_user, item = _sample_items(rng, counts, np.cumsum(truth.popularity), spec.items)
    mean = (
        GLOBAL_MEAN
        + user_bias[local_user]
        + truth.bias[item]
        + np.einsum("ij,ij->i", user_factors[local_user], truth.factors[item])
    ).astype(np.float64)
    noisy = mean + rng.normal(0.0, spec.noise, size=len(mean))
    rating = np.clip(np.round(noisy), 1, 5).astype(np.float32)
    timestamp = _TIME_START + rng.integers(0, _TIME_SPAN, size=len(mean))
    _, variance = rating_moments(mean, spec.noise)
    frame = pd.DataFrame(
        {
            USER_ID: ids[local_user] + 1,  # raw ids start at 1, as in MovieLens
            ITEM_ID: item.astype(np.int64) + 1,
            RATING: rating,
            TIMESTAMP: timestamp.astype(np.int64),
        }
    )
    return frame, float(variance.sum())


def activity_totals(spark: SparkSession, spec: SyntheticSpec) -> np.ndarray:
    """Each block's sum of user activity weights (one float per block of 4096 users)."""

    def sums(batches):
        for batch in batches:
            yield pd.DataFrame(
                {"block": batch["id"], "activity": block_activity_sums(spec, batch["id"])}
            )

    blocks = spark.range(spec.blocks, numPartitions=max(1, min(spec.blocks, 64)))
    rows = blocks.mapInPandas(sums, "block long, activity double").orderBy("block").collect()
    return np.array([row["activity"] for row in rows], dtype=np.float64)


def generate_ratings(
    spark: SparkSession, spec: SyntheticSpec, noise_dir: str, partitions: int | None = None
) -> DataFrame:
    """A lazy DataFrame of all ratings (``user_id``, ``item_id``, ``rating``, ``timestamp``).

    As each block is generated its executor also writes ``noise_dir/block-NNNNNN.json`` with the
    block's sum of ``Var[rating | planted mean]`` and its rating count, for :func:`noise_floor`.
    A retried task rewrites the same file with the same figures. ``noise_dir`` is under
    ``paths.root``; the executors get the driver's storage settings to reach it.
    """
    storage = location.settings()
    totals = activity_totals(spark, spec)
    offsets = np.concatenate([[0.0], np.cumsum(totals)[:-1]])
    total_activity = float(totals.sum())
    truth = spark.sparkContext.broadcast(item_truth(spec))

    def generate(batches):
        location.configure(storage)
        for batch in batches:
            for block in batch["id"]:
                block = int(block)
                frame, var_sum = block_ratings(
                    spec, block, float(offsets[block]), total_activity, truth.value
                )
                _write_noise(noise_dir, block, var_sum, len(frame))
                yield frame

    partitions = min(partitions or max(2, min(spec.blocks, 256)), spec.blocks)
    return spark.range(spec.blocks, numPartitions=partitions).mapInPandas(generate, RATINGS_SCHEMA)


def _write_noise(noise_dir: str, block: int, var_sum: float, count: int) -> None:
    target = location.Location(noise_dir) / f"block-{block:06d}.json"
    target.write_text(json.dumps({"var_sum": var_sum, "count": count}))


def noise_floor(noise_dir: str, blocks: int) -> float:
    """RMSE of the best possible predictor: sqrt(mean Var[rating | planted mean])."""
    files = location.Location(noise_dir).glob("block-*.json")
    if len(files) != blocks:
        raise RuntimeError(f"expected {blocks} noise files in {noise_dir}, found {len(files)}")
    parts = [json.loads(path.read_text()) for path in files]
    return math.sqrt(sum(p["var_sum"] for p in parts) / sum(p["count"] for p in parts))


def user_truth_frame(spark: SparkSession, spec: SyntheticSpec) -> DataFrame:
    """The planted user biases and factors as a DataFrame (``user_id``, ``bias``, ``factors``)."""

    def users(batches):
        for batch in batches:
            for block in batch["id"]:
                ids, _, bias, factors, _ = _user_params(spec, int(block))
                yield pd.DataFrame({USER_ID: ids + 1, "bias": bias, "factors": list(factors)})

    schema = T.StructType(
        [
            T.StructField(USER_ID, T.LongType(), False),
            T.StructField("bias", T.FloatType(), False),
            T.StructField("factors", T.ArrayType(T.FloatType(), False), False),
        ]
    )
    return spark.range(spec.blocks, numPartitions=max(1, min(spec.blocks, 64))).mapInPandas(
        users, schema
    )


def item_truth_frame(spec: SyntheticSpec) -> pd.DataFrame:
    """The planted item biases, factors and popularity (one row per item; items are few)."""
    truth = item_truth(spec)
    return pd.DataFrame(
        {
            ITEM_ID: np.arange(1, spec.items + 1, dtype=np.int64),
            "bias": truth.bias,
            "popularity": truth.popularity,
            "factors": list(truth.factors),
        }
    )
