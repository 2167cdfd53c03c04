"""Reading a ratings or interaction table and checking every row of it, in one call.

:func:`read_ratings` runs the steps in order: :func:`~recspark.data.reading.read_raw` (any
supported input, MovieLens ``u.data`` and ``ratings.dat``, CSV or TSV with or without a header,
Parquet, the synthetic table, into standard column names), :func:`~recspark.data.checks.check_rows`
and :func:`~recspark.data.checks.cast_ids` with the id types
:func:`~recspark.data.checks.infer_id_types` decides. The steps live in modules of one job each:
:mod:`recspark.data.listing` (finding the files), :mod:`recspark.data.sniffing` (formats and
layouts), :mod:`recspark.data.columns` (column names), :mod:`recspark.data.reading` (Spark
readers), :mod:`recspark.data.reasons` (quarantine reasons), :mod:`recspark.data.checks` (row
checks) and :mod:`recspark.data.dedup` (repeated pairs).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from recspark.core.constants import ITEM_ID, RATING, TIMESTAMP, USER_ID
from recspark.data.checks import cast_ids, check_rows, infer_id_types
from recspark.data.reading import read_raw
from recspark.data.sniffing import DELIMITERS, detect_format

__all__ = ["read_ratings"]


def read_ratings(
    spark: SparkSession,
    path: str,
    input_format: str = "auto",
    *,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    rating_col: str | None = RATING,
    timestamp_col: str | None = TIMESTAMP,
    weight_col: str | None = None,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
) -> DataFrame:
    """:func:`read_raw` then :func:`check_rows` and :func:`cast_ids` with inferred id types.

    Every row of the input is in the result, good ones with a null ``reason``; duplicates are not
    marked yet (see :func:`mark_duplicates`).
    """
    raw = read_raw(
        spark,
        path,
        input_format,
        user_col=user_col,
        item_col=item_col,
        rating_col=rating_col,
        timestamp_col=timestamp_col,
        weight_col=weight_col,
    )
    checked = check_rows(raw, rating_min, rating_max)
    fmt = detect_format(path) if input_format == "auto" else input_format
    delimiters = (DELIMITERS[fmt],) if fmt in DELIMITERS else ()
    return cast_ids(checked, infer_id_types(checked), delimiters)
