"""Similar items: nearest neighbours of item embeddings by cosine similarity.

Two uses. :func:`most_similar` answers one item on the driver (``recommend.similar_to``).
:func:`similar_items_table` computes the top-K neighbours of every item as a Spark job, the "more
like this" table: item ids are the rows, the unit-length item factor matrix and the mask of
eligible neighbours go to the executors once as a broadcast, and each task scores its items in
blocks (one matrix product per block) and keeps the best K. Item x item pairs never become rows.

Cosine ignores the length of the vectors, so an item seen a handful of times, whose row training
barely moved from its random start, would point in an arbitrary direction and turn up as a
neighbour of anything. ``eligible`` (items with enough training ratings) keeps such items out of
the neighbour lists; every item still gets its own list. An item is never its own neighbour, and
ties go to the lower item index, so re-running gives identical tables.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.constants import ITEM_ID, ITEM_IDX, MODEL_VERSION
from recspark.core.errors import BadInputError
from recspark.core.storage import Layout, read_parquet, staged
from recspark.serve.topk import top_k

log = logging.getLogger(__name__)

SIMILAR_ITEM_IDX = "similar_item_idx"
SIMILARITY = "similarity"
RANK = "rank"
SIMILAR_SCHEMA = f"{ITEM_IDX} int, {SIMILAR_ITEM_IDX} int, {RANK} int, {SIMILARITY} float"


@dataclass(frozen=True)
class ItemFactors:
    """The item side of a model: factor rows and biases, row ``i`` for item index ``i``."""

    factors: np.ndarray  # (items, factors) float32
    bias: np.ndarray  # (items,) float32


def read_item_factors(path: str) -> ItemFactors:
    """Read a model's ``item_factors`` Parquet table (``item_idx``, ``bias``, ``factors``).

    The table has one row per item, which is few next to the ratings, so it is read on the
    driver. Rows are placed by ``item_idx``; a gap in the indices is an error.
    """
    table = read_parquet(path, columns=[ITEM_IDX, "bias", "factors"])
    index = table.column(ITEM_IDX).to_numpy()
    if len(index) == 0:
        raise BadInputError(f"item factor table {path} is empty")
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(len(index))):
        raise BadInputError(
            f"item factor table {path} does not hold item_idx 0..{len(index) - 1} once each"
        )
    factors = np.stack(table.column("factors").to_pylist()).astype(np.float32)[order]
    bias = table.column("bias").to_numpy().astype(np.float32)[order]
    return ItemFactors(factors, bias)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length one; an all-zero row stays zero (similar to nothing)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _neighbours(
    unit: np.ndarray, rows: np.ndarray, eligible: np.ndarray | None, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``count`` (index, cosine, valid) of each item in ``rows`` among the eligible others."""
    unit_t = torch.as_tensor(unit)
    query = unit_t[torch.as_tensor(rows, dtype=torch.long)]
    scores = query @ unit_t.T
    if eligible is not None:
        scores[:, torch.as_tensor(~eligible)] = -torch.inf
    scores[torch.arange(len(rows)), torch.as_tensor(rows, dtype=torch.long)] = -torch.inf
    index, value, valid = top_k(scores, count)
    return index.numpy(), value.numpy(), valid.numpy()


def most_similar(
    factors: np.ndarray, item_idx: int, top_n: int, eligible: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_n`` items nearest to ``item_idx`` by cosine, best first, as (indices, cosines).

    Parameters
    ----------
    factors
        ``items x factors`` item embedding rows.
    item_idx
        The query item's index.
    top_n
        How many neighbours; fewer come back when fewer items are eligible.
    eligible
        Boolean mask of items allowed as neighbours, or None for all.
    """
    if not 0 <= item_idx < len(factors):
        raise IndexError(f"item_idx {item_idx} outside [0, {len(factors)})")
    index, value, valid = _neighbours(unit_rows(factors), np.array([item_idx]), eligible, top_n)
    keep = valid[0]
    return index[0][keep], value[0][keep]


def similar_partition(
    batches: Iterator[pd.DataFrame],
    unit: np.ndarray,
    eligible: np.ndarray | None,
    top_n: int,
    items_per_block: int,
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: rows ``(item_idx)`` in, ``(item_idx, similar_item_idx, rank,
    similarity)`` out."""
    for batch in batches:
        for start in range(0, len(batch), items_per_block):
            rows = batch[ITEM_IDX].to_numpy()[start : start + items_per_block].astype(np.int64)
            index, value, valid = _neighbours(unit, rows, eligible, top_n)
            keep = valid.reshape(-1)
            yield pd.DataFrame(
                {
                    ITEM_IDX: np.repeat(rows, index.shape[1])[keep].astype(np.int32),
                    SIMILAR_ITEM_IDX: index.reshape(-1)[keep].astype(np.int32),
                    RANK: np.tile(np.arange(1, index.shape[1] + 1, dtype=np.int32), len(rows))[
                        keep
                    ],
                    SIMILARITY: value.reshape(-1)[keep].astype(np.float32),
                }
            )


def similar_items_table(
    spark,
    items,
    factors: np.ndarray,
    top_n: int,
    eligible: np.ndarray | None = None,
    items_per_block: int = 1024,
    partitions: int | None = None,
):
    """The top ``top_n`` neighbours of every row of ``items``, as a lazy DataFrame.

    Parameters
    ----------
    spark
        The session; the unit-length factor matrix is broadcast through its context.
    items
        DataFrame with an ``item_idx`` column: the items to answer (usually every item).
    factors
        ``items x factors`` embedding rows of the whole catalogue (the candidates).
    top_n
        Neighbours per item.
    eligible
        Boolean mask of items allowed as neighbours, or None for all.
    items_per_block
        Items scored per matrix product inside a task (memory: block x catalogue floats).
    partitions
        Tasks to spread the items over; None keeps the input's partitioning.

    Returns
    -------
    DataFrame
        ``(item_idx, similar_item_idx, rank, similarity)``, ranks 1..top_n per item.
    """
    if ITEM_IDX not in items.columns:
        raise ValueError(f"items needs a {ITEM_IDX} column; it has {items.columns}")
    shared = spark.sparkContext.broadcast(
        (unit_rows(factors), None if eligible is None else np.asarray(eligible, dtype=bool))
    )
    rows = items.select(ITEM_IDX)
    if partitions is not None:
        rows = rows.repartition(partitions, ITEM_IDX)

    def neighbours(batches):
        unit, mask = shared.value
        return similar_partition(batches, unit, mask, top_n, items_per_block)

    return rows.mapInPandas(neighbours, SIMILAR_SCHEMA)


SIMILAR_ITEM_ID = "similar_item_id"


def write_similar_table(
    spark: SparkSession,
    layout: Layout,
    run_date: dt.date | str,
    *,
    item_factors_path: str,
    factors: np.ndarray,
    eligible: np.ndarray,
    item_index: DataFrame,
    top_n: int,
    model_version: str,
) -> tuple[str, int]:
    """Publish ``similar_items/run_date=D`` whole; return (partition path, rows written)."""
    items = spark.read.parquet(item_factors_path).select(ITEM_IDX)
    neighbours = similar_items_table(spark, items, factors, top_n, eligible)
    ids = F.broadcast(item_index.select(ITEM_IDX, ITEM_ID))
    similar_ids = F.broadcast(
        item_index.select(
            F.col(ITEM_IDX).alias(SIMILAR_ITEM_IDX), F.col(ITEM_ID).alias(SIMILAR_ITEM_ID)
        )
    )
    table = (
        neighbours.join(ids, ITEM_IDX)
        .join(similar_ids, SIMILAR_ITEM_IDX)
        .select(
            ITEM_ID,
            SIMILAR_ITEM_ID,
            F.col(RANK).cast("int").alias(RANK),
            F.col(SIMILARITY).cast("float").alias(SIMILARITY),
            F.lit(model_version).alias(MODEL_VERSION),
        )
    )
    final = layout.root / "similar_items" / f"run_date={run_date}"
    with staged(layout, final, f"similar-items-{run_date}") as staging:
        table.write.mode("overwrite").parquet(str(staging))
        rows = spark.read.parquet(str(staging)).count()
    log.info("published %d similar-item rows to %s", rows, final)
    return str(final), rows
