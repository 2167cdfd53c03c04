"""Dense integer indices for raw user and item ids, stable from one run to the next.

An id map is a table ``(raw id, index)``. :func:`extend_index` keeps every index of the previous
map and gives ids it has not seen the next indices after its largest, in the order of the raw ids,
so the same input always yields the same map and a nightly run can warm-start the embeddings of
known users and items. Everything happens in Spark: no id list passes through the driver.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.errors import BadInputError


def extend_index(
    ids: DataFrame,
    id_col: str,
    idx_col: str,
    previous: DataFrame | None = None,
) -> DataFrame:
    """Return the id map of ``ids`` extended from ``previous``.

    Parameters
    ----------
    ids
        Any DataFrame with the raw id column ``id_col`` (duplicates allowed).
    id_col, idx_col
        Names of the raw id and the dense index columns.
    previous
        The last run's map (``id_col``, ``idx_col``) or None on a first run.

    Returns
    -------
    DataFrame
        ``(id_col, idx_col:int)`` covering the previous map's ids and every id in ``ids``; the
        indices are ``0..n-1`` without gaps when ``previous`` had none.
    """
    distinct = ids.select(id_col).where(F.col(id_col).isNotNull()).distinct()
    if previous is None:
        start = 0
        unseen = distinct
    else:
        previous = previous.select(id_col, F.col(idx_col).cast(T.IntegerType()).alias(idx_col))
        if previous.schema[id_col].dataType != distinct.schema[id_col].dataType:
            raise BadInputError(
                f"{id_col} is {distinct.schema[id_col].dataType.simpleString()} in this input but "
                f"{previous.schema[id_col].dataType.simpleString()} in the previous run's id map: "
                "keep raw id types stable between runs, or start a new paths.root"
            )
        top = previous.agg(F.max(idx_col)).first()[0]
        start = 0 if top is None else int(top) + 1
        unseen = distinct.join(previous.select(id_col), on=id_col, how="left_anti")
    numbered = (
        unseen.orderBy(id_col)
        .rdd.zipWithIndex()
        .map(lambda pair: (pair[0][0], start + pair[1]))
        .toDF(T.StructType([distinct.schema[id_col], T.StructField(idx_col, T.LongType(), False)]))
        .select(id_col, F.col(idx_col).cast(T.IntegerType()).alias(idx_col))
    )
    return numbered if previous is None else previous.unionByName(numbered)


def apply_index(
    frame: DataFrame, index: DataFrame, id_col: str, idx_col: str
) -> DataFrame:
    """Add ``idx_col`` to ``frame`` from an id map; rows whose id is not in the map are dropped.

    Callers build the map from the same rows first, so nothing is lost here; it is a plain join.
    """
    return frame.join(index.select(id_col, idx_col), on=id_col, how="inner")
