"""Reading ratings tables, and checking every row of them.

:func:`read_ratings` turns any supported input (MovieLens ``u.data`` and ``ratings.dat``, CSV with a
header, TSV, Parquet, the synthetic table) into one DataFrame with the standard columns
``user_id``, ``item_id``, ``rating``, ``timestamp`` and a ``reason`` column: null for a good row,
otherwise why the row is unusable. :func:`split_valid` separates the two. Text formats are read as
lines and split here rather than by Spark's CSV reader, so that a short or malformed line is kept
and quarantined with its reason instead of being dropped or nulled silently.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from recspark.artifacts import local_path
from recspark.constants import ITEM_ID, RATING, REASON, TIMESTAMP, USER_ID
from recspark.errors import BadInputError, MissingInputError

DELIMITERS = {"movielens-100k": "\t", "tsv": "\t", "movielens-1m": "::", "csv": ","}
RAW_LINE = "raw_line"

# Reasons a row is quarantined; the summary counts rows per reason.
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_USER = "missing_user"
MISSING_ITEM = "missing_item"
MISSING_RATING = "missing_rating"
NON_NUMERIC_RATING = "non_numeric_rating"
NON_NUMERIC_TIMESTAMP = "non_numeric_timestamp"
RATING_OUT_OF_RANGE = "rating_out_of_range"
DUPLICATE_ROW = "duplicate_row"
REPEATED_PAIR = "repeated_pair"


def detect_format(path: str) -> str:
    """Guess the format of ``path`` from its name and first line (``input.format: auto``)."""
    target = local_path(path)
    if not target.exists():
        raise MissingInputError(f"input {path} does not exist: set input.path to a ratings file or folder")
    files = data_files(target)
    if not files:
        raise BadInputError(f"input folder {path} holds no data files")
    first = files[0]
    if first.suffix == ".parquet" or (target.is_dir() and any(f.suffix == ".parquet" for f in files)):
        return "parquet"
    with open(first, encoding="utf-8", errors="replace") as handle:
        line = handle.readline()
    if "::" in line:
        return "movielens-1m"
    if "\t" in line:
        return "movielens-100k" if first.name.startswith("u") and first.suffix in {".data", ".base", ".test"} else "tsv"
    if "," in line:
        return "csv"
    raise BadInputError(
        f"cannot tell the format of {first}: set input.format to one of movielens-100k, "
        "movielens-1m, csv, tsv or parquet"
    )


def data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(
        p for p in path.rglob("*") if p.is_file() and not p.name.startswith(("_", ".")) and p.stat().st_size
    )


def fingerprint(path: str) -> str:
    """A short digest of the input's file names, sizes and modification times."""
    digest = hashlib.sha256()
    target = local_path(path)
    for file in data_files(target) if target.exists() else []:
        stat = file.stat()
        digest.update(f"{file.relative_to(target.parent)}|{stat.st_size}|{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:16]


def _is_number(column: Column) -> Column:
    return column.cast(T.DoubleType()).isNotNull()


def _check(
    user: Column, item: Column, rating: Column | None, timestamp: Column | None, rating_min: float, rating_max: float
) -> Column:
    """The first reason a row is bad, or null; checked in order of how fundamental it is."""
    checks = [
        (user.isNull() | (F.trim(user.cast("string")) == ""), MISSING_USER),
        (item.isNull() | (F.trim(item.cast("string")) == ""), MISSING_ITEM),
    ]
    if rating is not None:
        value = rating.cast(T.DoubleType())
        checks += [
            (rating.isNull() | (F.trim(rating.cast("string")) == ""), MISSING_RATING),
            (value.isNull() | F.isnan(value), NON_NUMERIC_RATING),
            ((value < rating_min) | (value > rating_max), RATING_OUT_OF_RANGE),
        ]
    if timestamp is not None:
        checks.append((timestamp.isNotNull() & ~_is_number(timestamp), NON_NUMERIC_TIMESTAMP))
    reason = F.lit(None).cast("string")
    for condition, name in reversed(checks):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
    return reason


def _read_delimited(spark: SparkSession, path: str, delimiter: str, header: bool, columns: list[str]) -> DataFrame:
    """Lines split on ``delimiter``; a line with the wrong number of fields gets that reason."""
    lines = spark.read.text(str(local_path(path))).withColumnRenamed("value", RAW_LINE)
    lines = lines.where(F.trim(F.col(RAW_LINE)) != "")
    parts = F.split(F.col(RAW_LINE), _regex_escape(delimiter))
    if header:
        names = None
        first = lines.first()
        if first is None:
            raise BadInputError(f"{path} is empty")
        names = [name.strip().strip('"') for name in first[RAW_LINE].split(delimiter)]
        # Real ratings.csv copies carry empty trailing columns: ignore empty header names.
        while names and names[-1] == "":
            names.pop()
        missing = [c for c in columns if c not in names]
        if missing:
            raise BadInputError(
                f"{path}: header {names} lacks column(s) {missing}: map them with input.columns.*"
            )
        lines = lines.where(F.col(RAW_LINE) != first[RAW_LINE])
        positions = {name: names.index(name) for name in columns}
        field_count = len(names)
    else:
        positions = {name: i for i, name in enumerate(columns)}
        field_count = len(columns)
    size = F.size(parts)
    # Real ratings.csv copies carry empty trailing fields: allow those, but only after a header.
    trailing_empty = F.forall(F.slice(parts, field_count + 1, 1 << 20), lambda x: F.trim(x) == "")
    ok_count = (size == field_count) | ((size > field_count) & trailing_empty) if header else size == field_count
    selected = [
        F.when(ok_count, F.trim(parts.getItem(pos))).alias(name) for name, pos in positions.items()
    ]
    frame = lines.select(F.col(RAW_LINE), *selected, F.when(~ok_count, F.lit(WRONG_FIELD_COUNT)).alias(REASON))
    return frame


def _regex_escape(delimiter: str) -> str:
    return re.escape(delimiter)


def read_ratings(
    spark: SparkSession,
    path: str,
    input_format: str = "auto",
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    rating_col: str | None = RATING,
    timestamp_col: str | None = TIMESTAMP,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
) -> DataFrame:
    """Read a ratings table into standard columns plus ``reason`` (null for good rows).

    Raw ids keep the input's type where it has one (Parquet), and become ``long`` for text formats
    when every id is an integer, else ``string``. Ratings are ``float``; timestamps ``long``.
    """
    if not local_path(path).exists():
        raise MissingInputError(f"input {path} does not exist: set input.path to a ratings file or folder")
    fmt = detect_format(path) if input_format == "auto" else input_format
    if fmt in {"parquet", "synthetic"}:
        frame = spark.read.parquet(str(local_path(path)))
        wanted = [c for c in (user_col, item_col, rating_col, timestamp_col) if c]
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise BadInputError(
                f"{path} lacks column(s) {missing} (it has {frame.columns}): map them with input.columns.*"
            )
        frame = frame.select(
            F.to_json(F.struct(*wanted)).alias(RAW_LINE),
            *[F.col(c) for c in wanted],
            F.lit(None).cast("string").alias(REASON),
        )
    else:
        header = fmt == "csv"
        if header:
            names = [c for c in (user_col, item_col, rating_col, timestamp_col) if c]
        else:
            # MovieLens files have fixed positions: user, item, rating, timestamp.
            names = [user_col, item_col, rating_col or "_rating", timestamp_col or "_timestamp"]
        frame = _read_delimited(spark, path, DELIMITERS[fmt], header, names)
    return standardize(frame, user_col, item_col, rating_col, timestamp_col, rating_min, rating_max)


def standardize(
    frame: DataFrame,
    user_col: str,
    item_col: str,
    rating_col: str | None,
    timestamp_col: str | None,
    rating_min: float,
    rating_max: float,
) -> DataFrame:
    """Check each row and cast the good ones to the standard names and types."""
    rating = F.col(rating_col) if rating_col and rating_col in frame.columns else None
    timestamp = F.col(timestamp_col) if timestamp_col and timestamp_col in frame.columns else None
    reason = F.coalesce(
        F.col(REASON), _check(F.col(user_col), F.col(item_col), rating, timestamp, rating_min, rating_max)
    )
    user, item = F.col(user_col), F.col(item_col)
    if isinstance(frame.schema[user_col].dataType, T.StringType):
        user, item = F.trim(user), F.trim(item)
    return frame.select(
        F.col(RAW_LINE),
        user.alias(USER_ID),
        item.alias(ITEM_ID),
        (rating.cast(T.FloatType()) if rating is not None else F.lit(1.0).cast(T.FloatType())).alias(RATING),
        (timestamp.cast(T.DoubleType()).cast(T.LongType()) if timestamp is not None else F.lit(0).cast("long")).alias(
            TIMESTAMP
        ),
        reason.alias(REASON),
    )


def numeric_ids(frame: DataFrame, columns: tuple[str, ...] = (USER_ID, ITEM_ID)) -> DataFrame:
    """Cast string id columns to ``long`` when every good row's id is an integer."""
    string_columns = [c for c in columns if isinstance(frame.schema[c].dataType, T.StringType)]
    if not string_columns:
        return frame
    good = frame.where(F.col(REASON).isNull())
    flags = good.agg(
        *[F.min(F.col(c).rlike(r"^-?\d{1,18}$").cast("int")).alias(c) for c in string_columns]
    ).first()
    for column in string_columns:
        if flags[column] == 1:
            frame = frame.withColumn(column, F.col(column).cast(T.LongType()))
    return frame


def mark_duplicates(frame: DataFrame) -> DataFrame:
    """Flag exact duplicate rows and repeated (user, item) pairs, keeping the latest rating.

    Among rows with the same user and item the one with the latest timestamp is kept (ties broken
    by rating, then by the raw line, so the choice is deterministic); the others are marked
    ``duplicate_row`` when identical to the kept one and ``repeated_pair`` otherwise.
    """
    good = F.col(REASON).isNull()
    latest_first = Window.partitionBy(USER_ID, ITEM_ID, good).orderBy(
        F.col(TIMESTAMP).desc(), F.col(RATING).desc(), F.col(RAW_LINE).desc()
    )
    same_as_kept = (F.col(RATING) == F.first(RATING).over(latest_first)) & (
        F.col(TIMESTAMP) == F.first(TIMESTAMP).over(latest_first)
    )
    reason = (
        F.when(~good, F.col(REASON))
        .when(F.row_number().over(latest_first) == 1, F.lit(None).cast("string"))
        .when(same_as_kept, F.lit(DUPLICATE_ROW))
        .otherwise(F.lit(REPEATED_PAIR))
    )
    return frame.withColumn(REASON, reason)


def split_valid(frame: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(good rows without ``reason``/``raw_line``, quarantined rows with both)."""
    good = frame.where(F.col(REASON).isNull()).drop(REASON, RAW_LINE)
    bad = frame.where(F.col(REASON).isNotNull())
    return good, bad


def input_size_bytes(path: str) -> int:
    target = local_path(path)
    return sum(os.path.getsize(f) for f in data_files(target)) if target.exists() else 0
