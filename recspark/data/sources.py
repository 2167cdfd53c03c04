"""Reading ratings and interaction tables, and checking every row of them.

:func:`read_raw` turns any supported input (MovieLens ``u.data`` and ``ratings.dat``, CSV or TSV
with or without a header, Parquet, the synthetic table) into one DataFrame whose columns carry the
standard names (``user_id``, ``item_id``, ``rating``, ``timestamp``, ``weight``; only those the
input has) with the values as read, plus ``raw_line`` and ``reason``. :func:`check_rows` checks
each row and casts the good ones to the standard types; ``reason`` stays null for a good row and
otherwise says why the row is unusable. :func:`mark_duplicates` (explicit ratings) and
:func:`mark_repeated_events` (implicit interactions) then deal with rows that repeat a (user, item)
pair, and :func:`split_valid` separates good rows from the quarantine.

Text formats are read as lines and split here rather than by Spark's CSV reader, so that a short or
malformed line is kept and quarantined with its reason instead of being dropped or nulled silently.
Every cast is a ``try_cast``: Spark 4 runs with ANSI SQL on, where a plain cast of ``"abc"`` to a
number fails the whole job instead of flagging one row.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from recspark.core.constants import ITEM_ID, RATING, REASON, TIMESTAMP, USER_ID, WEIGHT
from recspark.core.errors import BadInputError, MissingInputError
from recspark.core.storage import local_path

FORMATS = ("movielens-100k", "movielens-1m", "csv", "tsv", "parquet", "synthetic")
DELIMITERS = {"movielens-100k": "\t", "tsv": "\t", "movielens-1m": "::", "csv": ","}
# MovieLens files have no header and exactly these fields: user, item, rating, timestamp.
FIXED_FIELD_COUNT = {"movielens-100k": 4, "movielens-1m": 4}
HEADER_FORMATS = ("csv", "tsv")
RAW_LINE = "raw_line"
STANDARD_COLUMNS = (USER_ID, ITEM_ID, RATING, TIMESTAMP, WEIGHT)
# When a column is configured under its default name and the header lacks it, these names are
# tried in turn: MovieLens's own ratings.csv says userId/movieId.
COLUMN_ALIASES = {
    USER_ID: ("userId", "user", "userID"),
    ITEM_ID: ("movieId", "itemId", "item", "movie_id", "itemID"),
}
_INTEGER = r"^[+-]?[0-9]{1,18}$"
_BOM = "\ufeff"

# Reasons a row is quarantined, in the order they are checked; a row gets the first that applies.
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_USER = "missing_user"
MISSING_ITEM = "missing_item"
NON_NUMERIC_USER = "non_numeric_user"
NON_NUMERIC_ITEM = "non_numeric_item"
MISSING_RATING = "missing_rating"
NON_NUMERIC_RATING = "non_numeric_rating"
RATING_OUT_OF_RANGE = "rating_out_of_range"
MISSING_TIMESTAMP = "missing_timestamp"
INVALID_TIMESTAMP = "invalid_timestamp"
MISSING_WEIGHT = "missing_weight"
NON_NUMERIC_WEIGHT = "non_numeric_weight"
WEIGHT_OUT_OF_RANGE = "weight_out_of_range"
DUPLICATE_ROW = "duplicate_row"
REPEATED_PAIR = "repeated_pair"
REASONS = (
    WRONG_FIELD_COUNT,
    MISSING_USER,
    MISSING_ITEM,
    NON_NUMERIC_USER,
    NON_NUMERIC_ITEM,
    MISSING_RATING,
    NON_NUMERIC_RATING,
    RATING_OUT_OF_RANGE,
    MISSING_TIMESTAMP,
    INVALID_TIMESTAMP,
    MISSING_WEIGHT,
    NON_NUMERIC_WEIGHT,
    WEIGHT_OUT_OF_RANGE,
    DUPLICATE_ROW,
    REPEATED_PAIR,
)


def data_files(path: Path) -> list[Path]:
    """The non-empty data files of a file or folder, skipping Spark's ``_*`` and ``.*`` files."""
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
        and p.stat().st_size
    )


def _existing(path: str) -> Path:
    target = local_path(path)
    if not target.exists():
        raise MissingInputError(
            f"input {path} does not exist: set input.path to a ratings file or folder"
        )
    return target


def _is_parquet(file: Path) -> bool:
    with open(file, "rb") as handle:
        return handle.read(4) == b"PAR1"


def first_line(path: str) -> str | None:
    """The first non-blank line of the first data file, without a byte-order mark."""
    files = data_files(_existing(path))
    if not files:
        return None
    with open(files[0], encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.lstrip(_BOM).rstrip("\r\n")
            if line.strip():
                return line
    return None


def detect_format(path: str) -> str:
    """Guess the format of ``path`` from its files (``input.format: auto``).

    Parquet is recognised by its magic bytes; otherwise the first line decides: ``::`` is
    MovieLens 1M, a tab is MovieLens 100K for ``u*.data|base|test`` files and TSV for others, a
    comma is CSV.

    Raises
    ------
    MissingInputError
        When ``path`` does not exist.
    BadInputError
        When it holds no data or no known delimiter.
    """
    target = _existing(path)
    files = data_files(target)
    if not files:
        raise BadInputError(f"input {path} holds no data files")
    if any(f.suffix == ".parquet" for f in files) or _is_parquet(files[0]):
        return "parquet"
    line = first_line(path) or ""
    if "::" in line:
        return "movielens-1m"
    if "\t" in line:
        first = files[0]
        movielens = first.name.startswith("u") and first.suffix in {".data", ".base", ".test"}
        return "movielens-100k" if movielens else "tsv"
    if "," in line:
        return "csv"
    raise BadInputError(
        f"cannot tell the format of {files[0]}: set input.format to one of movielens-100k, "
        "movielens-1m, csv, tsv or parquet"
    )


def fingerprint(paths: Iterable[str | None]) -> str:
    """A short digest of the inputs' file names, sizes and modification times.

    Cheap at any size (no file is read), and it changes whenever a file is replaced or edited.
    """
    digest = hashlib.sha256()
    for path in paths:
        if not path:
            continue
        target = local_path(path)
        for file in data_files(target) if target.exists() else []:
            stat = file.stat()
            name = file.relative_to(target.parent)
            digest.update(f"{name}|{stat.st_size}|{int(stat.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]


def input_size_bytes(path: str) -> int:
    """Total size of the data files under ``path`` (0 when it does not exist)."""
    target = local_path(path)
    return sum(os.path.getsize(f) for f in data_files(target)) if target.exists() else 0


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    return text


def split_header(line: str, delimiter: str) -> list[str]:
    """Field names of a header line, unquoted, with empty trailing names dropped.

    Real copies of MovieLens's ``ratings.csv`` end their lines with empty columns (``,,``).
    """
    names = [_unquote(name) for name in line.lstrip(_BOM).split(delimiter)]
    while names and names[-1] == "":
        names.pop()
    return names


def resolve_columns(available: list[str], wanted: dict[str, str], where: str) -> dict[str, str]:
    """Map each standard name in ``wanted`` to the input column that holds it.

    Parameters
    ----------
    available
        The input's column names (a header or a Parquet schema).
    wanted
        Standard name -> configured input name (``input.columns.*``).
    where
        The input, for the error message.

    Returns
    -------
    dict
        Standard name -> input column; a ``timestamp`` left at its default name and absent from
        the input is left out (the input has no timestamps).

    Raises
    ------
    BadInputError
        Naming every configured column the input lacks, and the columns it has.
    """
    found, missing = {}, []
    for standard, name in wanted.items():
        candidates = [name]
        if name == standard:
            candidates += list(COLUMN_ALIASES.get(standard, ()))
        match = next((c for c in candidates if c in available), None)
        if match is None and standard == TIMESTAMP and name == TIMESTAMP:
            continue  # the default timestamp column is optional; a configured one is not
        if match is None:
            missing.append(name)
        else:
            found[standard] = match
    if missing:
        raise BadInputError(
            f"{where} lacks column(s) {missing} (it has {available}): map them with "
            "input.columns.user/item/rating/timestamp/weight"
        )
    return found


def _looks_like_header(fields: list[str], wanted: dict[str, str]) -> bool:
    names = set()
    for standard, name in wanted.items():
        names.add(name)
        if name == standard:
            names.update(COLUMN_ALIASES.get(standard, ()))
    return any(field in names for field in fields)


def _positional(wanted: dict[str, str], field_count: int, where: str) -> dict[str, int]:
    """Field positions of a file without a header: user, item, rating (or weight), timestamp."""
    third = RATING if RATING in wanted else WEIGHT if WEIGHT in wanted else None
    slots = [USER_ID, ITEM_ID, third, TIMESTAMP if TIMESTAMP in wanted else None]
    positions = {name: i for i, name in enumerate(slots) if name is not None and i < field_count}
    needed = [name for name in (USER_ID, ITEM_ID, RATING) if name in wanted]
    if WEIGHT in wanted and RATING not in wanted:
        needed.append(WEIGHT)
    if any(name not in positions for name in needed):
        raise BadInputError(
            f"{where} has no header and {field_count} field(s) per line; without a header the "
            f"fields are read as user, item, rating (or weight), timestamp and {needed} are needed"
        )
    return positions


def _clean_field(value: Column) -> Column:
    """Trim a text field and undo CSV quoting: a doubled quote inside quotes is one quote."""
    value = F.trim(value)
    quoted = value.startswith('"') & value.endswith('"') & (F.length(value) >= 2)
    inner = F.regexp_replace(F.regexp_extract(value, '^"(.*)"$', 1), '""', '"')
    return F.when(quoted, F.trim(inner)).otherwise(value)


def _split_line(line: Column, delimiter: str) -> Column:
    plain = F.split(line, re.escape(delimiter))
    if delimiter != ",":
        return plain
    # A comma inside double quotes is not a delimiter; the lookahead is costly, so use it only on
    # lines that hold a quote at all.
    quoted = F.split(line, ',(?=(?:[^"]*"[^"]*")*[^"]*$)')
    return F.when(line.contains('"'), quoted).otherwise(plain)


def _read_text(
    spark: SparkSession, path: str, fmt: str, wanted: dict[str, str]
) -> DataFrame:
    """Lines split on the format's delimiter; a line with the wrong number of fields says so."""
    delimiter = DELIMITERS[fmt]
    first = first_line(path)
    if first is None:
        raise BadInputError(f"input {path} is empty")
    fields = split_header(first, delimiter)
    header = fmt in HEADER_FORMATS and _looks_like_header(fields, wanted)
    if header:
        columns = resolve_columns(fields, wanted, f"the header of {path}")
        positions = {standard: fields.index(name) for standard, name in columns.items()}
        field_count = len(fields)
    else:
        field_count = FIXED_FIELD_COUNT.get(fmt, len(fields))
        positions = _positional(wanted, field_count, str(path))
    text = spark.read.text(str(local_path(path)))
    lines = text.select(F.regexp_replace("value", "^" + _BOM, "").alias(RAW_LINE))
    # Blank lines (a trailing newline, a gap between files) hold no row.
    lines = lines.where(F.trim(F.col(RAW_LINE)) != "")
    if header:
        # Every file of a folder starts with the same header line.
        lines = lines.where(F.col(RAW_LINE) != first)
    parts = _split_line(F.col(RAW_LINE), delimiter)
    size = F.size(parts)
    # Empty trailing fields (``1,2,3.5,1112486027,,``) are allowed: real ratings.csv has them.
    extra_empty = F.forall(F.slice(parts, field_count + 1, 1 << 20), lambda x: F.trim(x) == "")
    count_ok = (size == field_count) | ((size > field_count) & extra_empty)
    selected = [
        F.when(count_ok, _clean_field(F.try_element_at(parts, F.lit(position + 1)))).alias(name)
        for name, position in positions.items()
    ]
    reason = F.when(~count_ok, F.lit(WRONG_FIELD_COUNT)).otherwise(F.lit(None).cast("string"))
    return lines.select(F.col(RAW_LINE), *selected, reason.alias(REASON))


def _read_parquet(spark: SparkSession, path: str, wanted: dict[str, str]) -> DataFrame:
    frame = spark.read.parquet(str(local_path(path)))
    columns = resolve_columns(frame.columns, wanted, str(path))
    return frame.select(
        F.lit(None).cast("string").alias(RAW_LINE),
        *[F.col(name).alias(standard) for standard, name in columns.items()],
        F.lit(None).cast("string").alias(REASON),
    )


def wanted_columns(
    user_col: str,
    item_col: str,
    rating_col: str | None,
    timestamp_col: str | None,
    weight_col: str | None,
) -> dict[str, str]:
    """Standard name -> configured input name, for the columns that are configured."""
    wanted = {
        USER_ID: user_col,
        ITEM_ID: item_col,
        RATING: rating_col,
        TIMESTAMP: timestamp_col,
        WEIGHT: weight_col,
    }
    return {standard: name for standard, name in wanted.items() if name}


def read_raw(
    spark: SparkSession,
    path: str,
    input_format: str = "auto",
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    rating_col: str | None = RATING,
    timestamp_col: str | None = TIMESTAMP,
    weight_col: str | None = None,
) -> DataFrame:
    """Read an input into standard column names, values as read, plus ``raw_line`` and ``reason``.

    Parameters
    ----------
    path
        A file or a folder of files of one format.
    input_format
        One of :data:`FORMATS` or ``auto`` (:func:`detect_format`).
    user_col, item_col, rating_col, timestamp_col, weight_col
        Input column names (``input.columns.*``); None leaves the column out (``rating_col`` is
        None for implicit feedback). CSV and TSV files may have a header naming the columns; a
        file without one is read by position: user, item, rating (or weight), timestamp. A
        headerless file with three fields has no timestamp.

    Returns
    -------
    DataFrame
        ``raw_line`` (the text line; null for Parquet), one column per standard name the input
        has (strings for text formats, the input's types for Parquet), and ``reason``
        (``wrong_field_count`` or null).
    """
    _existing(path)
    fmt = detect_format(path) if input_format == "auto" else input_format
    if fmt not in FORMATS:
        raise BadInputError(f"unknown input format {fmt!r}: use auto or one of {list(FORMATS)}")
    wanted = wanted_columns(user_col, item_col, rating_col, timestamp_col, weight_col)
    if fmt in {"parquet", "synthetic"}:
        files = data_files(local_path(path))
        if not files or not _is_parquet(files[0]):
            raise BadInputError(
                f"input {path} is not Parquet but input.format is {fmt}: set input.format to "
                "auto or to the file's format"
            )
        return _read_parquet(spark, path, wanted)
    return _read_text(spark, path, fmt, wanted)


def _blank(column: Column, data_type: T.DataType) -> Column:
    if isinstance(data_type, T.StringType):
        return column.isNull() | (F.trim(column) == "")
    return column.isNull()


def _number(column: Column, data_type: T.DataType) -> Column:
    """The value as a double, null when it is not a number."""
    if isinstance(data_type, T.NumericType):
        return column.cast(T.DoubleType())
    return column.try_cast(T.DoubleType())


def _epoch_seconds(column: Column, data_type: T.DataType) -> Column:
    """Unix seconds from a number, a timestamp/date, or a date-time text; null when none of them."""
    if isinstance(data_type, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return F.unix_timestamp(column.cast(T.TimestampType()))
    if isinstance(data_type, T.NumericType):
        return column.try_cast(T.LongType())
    as_number = column.try_cast(T.DoubleType()).try_cast(T.LongType())
    as_date = F.unix_timestamp(F.try_to_timestamp(column))
    return F.coalesce(as_number, as_date)


def check_rows(raw: DataFrame, rating_min: float = 1.0, rating_max: float = 5.0) -> DataFrame:
    """Check each row of :func:`read_raw`'s output and cast good values to standard types.

    Parameters
    ----------
    raw
        :func:`read_raw`'s output.
    rating_min, rating_max
        The valid rating range, inclusive (``input.rating_min``/``rating_max``).

    Returns
    -------
    DataFrame
        ``raw_line``, ``user_id``, ``item_id`` (trimmed, type unchanged: see :func:`cast_ids`),
        ``rating`` (float; 1.0 when the input has no rating column), ``timestamp`` (long Unix
        seconds; 0 when the input has none), ``weight`` (float, only when the input has one),
        ``reason``: the first of :data:`REASONS` that applies, or null for a good row; then any
        other column of ``raw`` unchanged.
    """
    schema = {field.name: field.dataType for field in raw.schema.fields}
    checks: list[tuple[Column, str]] = []
    user, item = F.col(USER_ID), F.col(ITEM_ID)
    checks += [
        (_blank(user, schema[USER_ID]), MISSING_USER),
        (_blank(item, schema[ITEM_ID]), MISSING_ITEM),
    ]
    rating = F.lit(1.0).cast(T.FloatType())
    if RATING in schema:
        value = _number(F.col(RATING), schema[RATING])
        checks += [
            (_blank(F.col(RATING), schema[RATING]), MISSING_RATING),
            (value.isNull() | F.isnan(value), NON_NUMERIC_RATING),
            ((value < rating_min) | (value > rating_max), RATING_OUT_OF_RANGE),
        ]
        rating = value.cast(T.FloatType())
    timestamp = F.lit(0).cast(T.LongType())
    if TIMESTAMP in schema:
        seconds = _epoch_seconds(F.col(TIMESTAMP), schema[TIMESTAMP])
        checks += [
            (_blank(F.col(TIMESTAMP), schema[TIMESTAMP]), MISSING_TIMESTAMP),
            (seconds.isNull(), INVALID_TIMESTAMP),
        ]
        timestamp = seconds
    extra = []
    if WEIGHT in schema:
        weight = _number(F.col(WEIGHT), schema[WEIGHT])
        checks += [
            (_blank(F.col(WEIGHT), schema[WEIGHT]), MISSING_WEIGHT),
            (weight.isNull() | F.isnan(weight), NON_NUMERIC_WEIGHT),
            ((weight <= 0) | (weight == float("inf")), WEIGHT_OUT_OF_RANGE),
        ]
        extra.append(weight.cast(T.FloatType()).alias(WEIGHT))
    reason = F.lit(None).cast("string")
    for condition, name in reversed(checks):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
    reason = F.coalesce(F.col(REASON), reason)
    if isinstance(schema[USER_ID], T.StringType):
        user = F.trim(user)
    if isinstance(schema[ITEM_ID], T.StringType):
        item = F.trim(item)
    # Parquet rows have no text line: keep their values as JSON when they are quarantined.
    present = [c for c in STANDARD_COLUMNS if c in schema]
    raw_line = F.coalesce(
        F.col(RAW_LINE), F.when(reason.isNotNull(), F.to_json(F.struct(*present)))
    )
    good = reason.isNull()
    # Other columns (e.g. which input a row came from) pass through unchanged.
    passed = [c for c in raw.columns if c not in (*STANDARD_COLUMNS, RAW_LINE, REASON)]
    return raw.select(
        raw_line.alias(RAW_LINE),
        user.alias(USER_ID),
        item.alias(ITEM_ID),
        F.when(good, rating).alias(RATING),
        F.when(good, timestamp).alias(TIMESTAMP),
        *[F.when(good, column).alias(WEIGHT) for column in extra],
        reason.alias(REASON),
        *passed,
    )


def infer_id_types(
    frame: DataFrame, columns: tuple[str, ...] = (USER_ID, ITEM_ID)
) -> dict[str, T.DataType]:
    """The type each id column should have: ``long`` for a text column of integers only.

    One small aggregate over the good rows; a text column with any non-integer id stays a string,
    so string ids are never mistaken for bad rows.
    """
    types = {column: frame.schema[column].dataType for column in columns}
    strings = [c for c in columns if isinstance(types[c], T.StringType)]
    if strings:
        good = frame.where(F.col(REASON).isNull())
        counts = good.agg(
            F.count(F.lit(1)).alias("_rows"),
            *[F.sum((~F.col(c).rlike(_INTEGER)).cast("long")).alias(c) for c in strings],
        ).first()
        for column in strings:
            if counts["_rows"] and not counts[column]:
                types[column] = T.LongType()
    return types


def cast_ids(frame: DataFrame, types: dict[str, T.DataType]) -> DataFrame:
    """Cast id columns to ``types``; a text id that is not an integer where one is required is
    quarantined as ``non_numeric_user``/``non_numeric_item``.

    Parameters
    ----------
    types
        ``{"user_id": LongType(), ...}`` from :func:`infer_id_types`, from ``input.id_type``, or
        from the previous run's id maps (so that ids keep their type from run to run).
    """
    reasons = {USER_ID: NON_NUMERIC_USER, ITEM_ID: NON_NUMERIC_ITEM}
    reason = F.col(REASON)
    casts = {}
    for column, target in types.items():
        source = frame.schema[column].dataType
        if source == target:
            continue
        value = F.col(column)
        if isinstance(source, T.StringType) and isinstance(target, T.IntegralType):
            ok = value.rlike(_INTEGER)
            reason = F.when(reason.isNull() & ~ok, F.lit(reasons[column])).otherwise(reason)
            casts[column] = value.try_cast(target)
        elif isinstance(source, T.FractionalType) and isinstance(target, T.IntegralType):
            ok = value == F.floor(value)
            reason = F.when(reason.isNull() & ~ok, F.lit(reasons[column])).otherwise(reason)
            casts[column] = value.try_cast(target)
        else:
            casts[column] = value.try_cast(target)
    if not casts:
        return frame
    # The reason is computed from the columns before they are cast.
    frame = frame.withColumn(REASON, reason)
    return frame.withColumns(casts)


def mark_duplicates(frame: DataFrame) -> DataFrame:
    """Quarantine exact duplicates and repeated (user, item) pairs, keeping the latest rating.

    Among the good rows of one user and item, the row with the latest timestamp is kept (ties
    broken by the higher rating, weight and raw line, so the choice is deterministic). Each other
    row is ``duplicate_row`` when its values equal those of the row before it in that order (a
    copy of a row that is kept or quarantined), and ``repeated_pair`` otherwise.
    """
    good = F.col(REASON).isNull()
    values = [TIMESTAMP, RATING] + ([WEIGHT] if WEIGHT in frame.columns else [])
    latest_first = Window.partitionBy(USER_ID, ITEM_ID, good).orderBy(
        *[F.col(c).desc() for c in values], F.col(RAW_LINE).desc_nulls_last()
    )
    current = F.struct(*values)
    reason = (
        F.when(~good, F.col(REASON))
        .when(F.row_number().over(latest_first) == 1, F.lit(None).cast("string"))
        .when(F.lag(current).over(latest_first) == current, F.lit(DUPLICATE_ROW))
        .otherwise(F.lit(REPEATED_PAIR))
    )
    return frame.withColumn(REASON, reason)


def mark_repeated_events(frame: DataFrame, has_timestamp: bool) -> DataFrame:
    """Quarantine re-delivered events of implicit feedback; other repeats are kept to aggregate.

    With a timestamp, two events of the same user, item, time and weight are one event delivered
    twice: all but one are ``duplicate_row``. Without a timestamp every row is an event (a play,
    a click), identical rows included, and nothing is quarantined here.
    """
    if not has_timestamp:
        return frame
    good = F.col(REASON).isNull()
    keys = [USER_ID, ITEM_ID, TIMESTAMP] + ([WEIGHT] if WEIGHT in frame.columns else [])
    same_event = Window.partitionBy(*keys, good).orderBy(F.col(RAW_LINE).asc_nulls_last())
    reason = F.when(good & (F.row_number().over(same_event) > 1), F.lit(DUPLICATE_ROW)).otherwise(
        F.col(REASON)
    )
    return frame.withColumn(REASON, reason)


def aggregate_events(good: DataFrame, by: tuple[str, ...] = ()) -> DataFrame:
    """One row per (user, item) from implicit events.

    Parameters
    ----------
    good
        Good event rows (:func:`split_valid`).
    by
        Further columns to keep apart, e.g. which input a row came from.

    Returns
    -------
    DataFrame
        ``user_id``, ``item_id``, ``rating`` (float: the number of events of the pair),
        ``timestamp`` (the latest event's) and, when the input has a weight, ``weight`` (float:
        the sum of the events' weights, e.g. the play count of a counts table).
    """
    aggregates = [
        F.count(F.lit(1)).cast(T.FloatType()).alias(RATING),
        F.max(TIMESTAMP).alias(TIMESTAMP),
    ]
    if WEIGHT in good.columns:
        aggregates.append(F.sum(WEIGHT).cast(T.FloatType()).alias(WEIGHT))
    return good.groupBy(USER_ID, ITEM_ID, *by).agg(*aggregates)


def split_valid(frame: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(good rows without ``reason``/``raw_line``, quarantined rows with both)."""
    good = frame.where(F.col(REASON).isNull()).drop(REASON, RAW_LINE)
    bad = frame.where(F.col(REASON).isNotNull())
    present = [c for c in STANDARD_COLUMNS if c in frame.columns]
    bad = bad.withColumn(
        RAW_LINE, F.coalesce(F.col(RAW_LINE), F.to_json(F.struct(*present)))
    )
    return good, bad


def read_ratings(
    spark: SparkSession,
    path: str,
    input_format: str = "auto",
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
    raw = read_raw(spark, path, input_format, user_col, item_col, rating_col, timestamp_col,
                   weight_col)
    checked = check_rows(raw, rating_min, rating_max)
    return cast_ids(checked, infer_id_types(checked))
