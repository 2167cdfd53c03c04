"""EASE, Steck's "Embarrassingly Shallow Autoencoders for Sparse Data" (WWW 2019): an item x item
model with a closed form, as a benchmark contender.

``X`` is the binary user x item matrix of the training ratings. The item x item Gram matrix
``G = X^T X`` is counted in Spark (a self-join of the ratings by user, one count per item pair),
so the ratings never leave the executors; ``G`` itself holds ``items^2`` figures however many
users and ratings there are, and comes to the driver for the solve::

    P = (G + lambda I)^-1        B = I - P diag(1 / diag(P))

that is ``B_ij = -P_ij / P_jj`` off the diagonal and 0 on it. A user's scores are ``x_u B``, the
sum of the rows of ``B`` of the items they rated: Spark tasks compute them for blocks of users
(``mapInArrow`` over one row per user, ``B`` broadcast), mask the rated items and keep the best
``k`` with the scoring kernel's :func:`recspark.serve.kernel.top_k` (ties to the lower item index),
so EASE's lists exclude the same items and break ties the same way as every other contender's.

The solve holds a few ``items x items`` float64 arrays on the driver and broadcasts ``B`` as
float32, so callers cap the catalogue (``benchmark.ease_max_items``).
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

from recspark.core.constants import ITEM_IDX, ITEMS, RANK, SCORE, USER_IDX
from recspark.model.ease import ease_weights
from recspark.serve.kernel import _rated_csr, top_k, users_per_block
from recspark.serve.scoring import _threads_per_task, task_device

#: A worker's copy of the broadcast weights as a tensor, by (the driver's token, device).
_WEIGHTS: dict[tuple[str, str], torch.Tensor] = {}


@dataclass
class Ease:
    """A fitted EASE model: ``weights`` is ``B`` (items x items, float32, zero diagonal)."""

    weights: np.ndarray
    train_seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def item_gram(
    train: DataFrame, n_items: int, user_col: str = USER_IDX, item_col: str = ITEM_IDX
) -> np.ndarray:
    """``X^T X`` of the binary user x item matrix of ``train``, as an ``n_items x n_items`` array.

    Counted in Spark: the distinct ``(user, item)`` pairs joined with themselves on the user,
    kept for ``i <= j`` and counted per pair; the counts come back as one row per item (an
    item-sized result) and the lower triangle is mirrored here.

    Raises
    ------
    ValueError
        When a column is missing or an item index lies outside ``[0, n_items)``.
    """
    for column in (user_col, item_col):
        if column not in train.columns:
            raise ValueError(f"train lacks column {column!r}; it has {train.columns}")
    pairs = train.select(
        F.col(user_col).cast("int").alias("user"), F.col(item_col).cast("int").alias("i")
    ).distinct()
    counts = (
        pairs.join(pairs.withColumnRenamed("i", "j"), "user")
        .where(F.col("i") <= F.col("j"))
        .groupBy("i", "j")
        .agg(F.count(F.lit(1)).cast("double").alias("count"))
    )
    by_item = counts.groupBy("i").agg(
        F.collect_list("j").alias("columns"), F.collect_list("count").alias("counts")
    )
    gram = np.zeros((n_items, n_items), dtype=np.float64)
    # One row per item (pyspark's stubs type toPandas loosely).
    for row in cast(pd.DataFrame, by_item.toPandas()).itertuples(index=False):
        columns = np.asarray(row.columns, dtype=np.int64)
        if row.i < 0 or row.i >= n_items or (len(columns) and columns.max() >= n_items):
            raise ValueError(f"item index {row.i} or its pairs lie outside [0, {n_items})")
        gram[row.i, columns] = np.asarray(row.counts, dtype=np.float64)
    upper = np.triu(gram, 1)
    return gram + upper.T


def fit_ease(train: DataFrame, n_items: int, regularization: float) -> Ease:
    """Count the Gram matrix in Spark and solve for ``B`` on the driver; timed together."""
    started = time.perf_counter()
    gram = item_gram(train, n_items)
    counted = time.perf_counter()
    weights = ease_weights(gram, regularization)
    done = time.perf_counter()
    info = {
        "lambda": regularization,
        "items": n_items,
        "gram_seconds": counted - started,
        "solve_seconds": done - counted,
    }
    return Ease(weights, done - started, info)


def _weights_on(shared, token: str, device: torch.device) -> torch.Tensor:
    key = (token, str(device))
    if key not in _WEIGHTS:
        _WEIGHTS.clear()
        _WEIGHTS[key] = torch.tensor(shared.value, device=device)
    return _WEIGHTS[key]


def ease_batches(
    batches: Iterator[pa.RecordBatch],
    weights: torch.Tensor,
    top_n: int,
    block: int,
    ineligible: torch.Tensor | None = None,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: ``(user_idx, items)`` rows in, each user's top-N ``(user_idx, item_idx,
    rank, score)`` out; the rated ``items`` make the user's row of ``X`` and are excluded, as
    are the ``ineligible`` item indices for every user."""
    n_items = weights.shape[0]
    device = weights.device
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        user_idx = batch.column(USER_IDX).to_numpy(zero_copy_only=False).astype(np.int32)
        starts, rated = _rated_csr(batch.column(ITEMS), n)
        for start in range(0, n, block):
            stop = min(start + block, n)
            low, high = starts[start], starts[stop]
            columns = torch.as_tensor(rated[low:high], device=device)
            rows = torch.as_tensor(starts[start : stop + 1] - low, device=device)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
                users = torch.sparse_csr_tensor(
                    rows,
                    columns,
                    torch.ones(high - low, device=device),
                    (stop - start, n_items),
                    check_invariants=False,
                )
            scores = users @ weights
            seen_rows = np.repeat(np.arange(stop - start), np.diff(starts[start : stop + 1]))
            scores[torch.as_tensor(seen_rows, device=device), columns] = -torch.inf
            if ineligible is not None and len(ineligible):
                scores[:, ineligible] = -torch.inf
            found = top_k(scores, top_n)
            index, value, valid = (part.cpu().numpy() for part in found)
            width = index.shape[1]
            keep = valid.reshape(-1)
            owner = np.repeat(np.arange(start, stop), width)[keep]
            yield pa.RecordBatch.from_pydict(
                {
                    USER_IDX: pa.array(user_idx[owner]),
                    ITEM_IDX: pa.array(index.reshape(-1)[keep].astype(np.int32)),
                    RANK: pa.array(
                        np.tile(np.arange(1, width + 1, dtype=np.int32), stop - start)[keep]
                    ),
                    SCORE: pa.array(value.reshape(-1)[keep].astype(np.float32)),
                }
            )


def ease_top_k(
    spark: SparkSession,
    users: DataFrame,
    weights: np.ndarray,
    top_n: int,
    *,
    block_setting: int | str = "auto",
    device: str = "auto",
    partitions: int | None = None,
    eligible: np.ndarray | None = None,
) -> DataFrame:
    """Top-N ``(user_idx, item_idx, rank, score)`` of every row of ``users`` under EASE.

    Parameters
    ----------
    users
        ``(user_idx, items)``, one row per user: the items the user rated in training (the row
        of ``X``, repeats counted once, and what is excluded), e.g.
        :func:`recspark.data.prepared.rated_lists` of the training pairs.
    weights
        ``B`` from :func:`ease_weights`; broadcast once.
    top_n, block_setting, device, partitions
        List length; users per block (``auto``: the kernel's choice for the task's device); the
        ``train.device`` setting; scoring tasks (default: the session's default parallelism).
    eligible
        One bool per item: the items a list may hold (``EvaluationSplit.eligible``); None: all.
    """
    for column in (USER_IDX, ITEMS):
        if column not in users.columns:
            raise ValueError(f"users lacks column {column!r}; it has {users.columns}")
    count = partitions or spark.sparkContext.defaultParallelism
    # Distinct: X is binary, so an item rated twice counts once.
    rows = users.select(
        F.col(USER_IDX).cast("int").alias(USER_IDX),
        F.array_distinct(F.col(ITEMS).cast("array<int>")).alias(ITEMS),
    ).repartition(count, USER_IDX)
    shared = spark.sparkContext.broadcast(np.ascontiguousarray(weights, dtype=np.float32))
    excluded = None if eligible is None else np.flatnonzero(~np.asarray(eligible, dtype=bool))
    token = uuid.uuid4().hex  # Python workers outlive a job: a new B must not find the old one
    schema = StructType(
        [
            StructField(USER_IDX, IntegerType(), False),
            StructField(ITEM_IDX, IntegerType(), False),
            StructField(RANK, IntegerType(), False),
            StructField(SCORE, FloatType(), False),
        ]
    )

    def score(batches):
        here = task_device(device)
        if here.type == "cpu":
            _threads_per_task()
        matrix = _weights_on(shared, token, here)
        block = users_per_block(block_setting, here, matrix.shape[0])
        ineligible = None if excluded is None else torch.as_tensor(excluded, device=here)
        yield from ease_batches(batches, matrix, top_n, block, ineligible)

    return rows.mapInArrow(score, schema)
