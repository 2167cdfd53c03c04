"""Dense integer indices for raw user and item ids, stable from one run to the next.

An id map is a table ``(raw id, index)``. :func:`extend_index` keeps every index of the previous
map and gives the ids it has not seen the next indices after its largest, in the order of the raw
ids, so the same input always yields the same map and a nightly run can warm-start the embeddings
of known users and items. Everything happens in Spark: no id list passes through the driver, which
only sees a few numbers (the previous map's largest index, one row count per partition), and no
Python worker is involved.
"""

from __future__ import annotations

import re

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.errors import BadInputError

# monotonically_increasing_id() is (partition index << 33) + the row's position in the partition.
_POSITION_BITS = 33
# Bytes of one id map row as Spark holds it, besides the id: the row header and the int index.
_ROW_BYTES = 16
_TEXT_ID_BYTES = 64  # a typical text id (a UUID is 36 characters), with its length and offset


def check_index(index: DataFrame, id_col: str, idx_col: str, where: str = "the id map") -> int:
    """Check that an id map gives each id one index and each index one id; return its size.

    Parameters
    ----------
    index
        An id map ``(id_col, idx_col)``, e.g. a previous run's ``user_index``.
    where
        Names the map in the error message.

    Raises
    ------
    BadInputError
        When a column is missing, an id or index is null or repeated, or an index is negative.
    """
    missing = [c for c in (id_col, idx_col) if c not in index.columns]
    if missing:
        raise BadInputError(f"{where} lacks column(s) {missing} (it has {index.columns})")
    stats = index.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct(id_col).alias("ids"),
        F.count_distinct(idx_col).alias("indices"),
        F.count(id_col).alias("non_null_ids"),
        F.count(idx_col).alias("non_null_indices"),
        F.min(idx_col).alias("smallest"),
    ).first()
    assert stats is not None  # a global aggregate has one row
    rows = stats["rows"]
    if not rows == stats["ids"] == stats["indices"] == stats["non_null_ids"] == stats[
        "non_null_indices"
    ] or (rows and stats["smallest"] < 0):
        raise BadInputError(
            f"{where} is corrupt ({rows} rows, {stats['ids']} distinct ids, {stats['indices']} "
            f"distinct indices, smallest index {stats['smallest']}): restore it from a backup or "
            "start a new paths.root (indices will change)"
        )
    return rows


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
        Any DataFrame with the raw id column ``id_col`` (duplicates and nulls allowed; nulls are
        ignored).
    id_col, idx_col
        Names of the raw id and the dense index columns.
    previous
        The last run's map (``id_col``, ``idx_col``) or None on a first run.

    Returns
    -------
    DataFrame
        ``(id_col, idx_col:int)``: every id of ``previous`` with its index unchanged, then every
        id of ``ids`` that ``previous`` lacks, numbered from the previous largest index + 1 in
        ascending order of the raw id. Indices are ``0..n-1`` without gaps when ``previous`` had
        none.

    Raises
    ------
    BadInputError
        When the raw id type differs from the previous map's (e.g. string now, long before).
    """
    distinct = ids.select(id_col).where(F.col(id_col).isNotNull()).distinct()
    id_type = distinct.schema[id_col].dataType
    if previous is None:
        start = 0
        unseen = distinct
    else:
        previous = previous.select(id_col, F.col(idx_col).cast(T.IntegerType()).alias(idx_col))
        if previous.schema[id_col].dataType != id_type:
            raise BadInputError(
                f"{id_col} is {id_type.simpleString()} in this input but "
                f"{previous.schema[id_col].dataType.simpleString()} in the previous run's id map: "
                "keep raw id types stable between runs (input.id_type), or start a new paths.root"
            )
        maximum = previous.agg(F.max(idx_col)).first()
        top = None if maximum is None else maximum[0]
        start = 0 if top is None else int(top) + 1
        unseen = distinct.join(previous.select(id_col), on=id_col, how="left_anti")
    numbered = _number_in_order(unseen, id_col, idx_col, start)
    return numbered if previous is None else previous.unionByName(numbered)


def _number_in_order(ids: DataFrame, id_col: str, idx_col: str, start: int) -> DataFrame:
    """Number distinct ids ``start, start+1, ...`` in ascending order, without a single partition.

    The ids are range-partitioned and sorted; ``monotonically_increasing_id`` then holds (partition
    << 33 | position in partition). The frame is checkpointed so that these positions are fixed
    once, the driver adds up the sizes of the partitions (one number per partition), and a
    broadcast join turns positions into ranks.
    """
    spark = ids.sparkSession
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions") or 200)
    positioned = (
        ids.repartitionByRange(partitions, id_col)
        .sortWithinPartitions(id_col)
        .select(id_col, F.monotonically_increasing_id().alias("_position"))
        .withColumn("_part", F.shiftright("_position", _POSITION_BITS))
        .localCheckpoint(eager=True)
    )
    sizes = positioned.groupBy("_part").count().collect()
    offsets, total = [], start
    for row in sorted(sizes, key=lambda row: row["_part"]):
        offsets.append((row["_part"], total))
        total += row["count"]
    if total > 2**31:
        raise BadInputError(f"{total} distinct {id_col}s: more than an int index can hold")
    offset_frame = spark.createDataFrame(offsets, "_part long, _offset long")
    position = F.col("_position").bitwiseAND(F.lit((1 << _POSITION_BITS) - 1))
    return positioned.join(F.broadcast(offset_frame), "_part").select(
        id_col, (F.col("_offset") + position).cast(T.IntegerType()).alias(idx_col)
    )


def fits_broadcast(spark: SparkSession, rows: int, id_type: T.DataType) -> bool:
    """Whether ``rows`` ids of ``id_type`` (with an int beside each) fit Spark's broadcast limit.

    For tables whose size Spark misjudges: an id map, the ids of a split (see :func:`apply_index`).
    """
    id_bytes = 8 if isinstance(id_type, T.NumericType) else _TEXT_ID_BYTES
    return 0 <= rows * (id_bytes + _ROW_BYTES) <= _broadcast_limit(spark)


def _broadcast_limit(spark: SparkSession) -> int:
    """Spark's ``spark.sql.autoBroadcastJoinThreshold`` in bytes; -1 when broadcasting is off."""
    setting = (spark.conf.get("spark.sql.autoBroadcastJoinThreshold") or "10MB").strip().lower()
    match = re.fullmatch(r"(-?[0-9]+)\s*([kmgt]?)b?", setting)
    if match is None:
        return -1  # a form this does not read: leave the choice to Spark
    number, unit = match.groups()
    return int(number) * 1024 ** "_kmgt".find(unit or "_") if int(number) >= 0 else -1


def apply_index(frame: DataFrame, index: DataFrame, id_col: str, idx_col: str) -> DataFrame:
    """Add ``idx_col`` to ``frame`` from an id map.

    Every id of ``frame`` must be in the map (build the map from the same rows first); a row whose
    id is missing would be dropped by this inner join.

    The map is counted first (one job; a persisted map is then in memory for its own write) and
    broadcast when it fits Spark's ``spark.sql.autoBroadcastJoinThreshold``. Spark cannot tell
    by itself: a map built by :func:`extend_index` comes from a checkpoint whose size Spark
    estimates from the ratings it was drawn from, so it would shuffle every rating by id to join
    a map of a few thousand rows (and a plan fixed by ``persist`` before the map is computed keeps
    that choice).
    """
    mapping = index.select(id_col, idx_col)
    if fits_broadcast(index.sparkSession, mapping.count(), mapping.schema[id_col].dataType):
        mapping = F.broadcast(mapping)
    return frame.join(mapping, on=id_col, how="inner")
