"""Row checks: every value of every row checked and cast to its standard type, or quarantined.

:func:`check_rows` checks the rows :func:`recspark.data.reading.read_raw` reads and casts the good
values (``rating`` float, ``timestamp`` long Unix seconds, ``weight`` float); ``reason`` stays null
for a good row and otherwise names the first of :data:`recspark.data.reasons.REASONS` that applies.
:func:`split_valid` then separates good rows from the quarantine.

Ids are checked before their type is decided: an id that is not valid UTF-8, longer than
``max_id_length`` or blank (any whitespace) is quarantined with its own reason and has no say in
whether the column holds integers. The type is then decided from the good rows by
:func:`infer_id_types` (integers when most ids are), so one odd id cannot turn a table of integer
ids into text; :func:`cast_ids` quarantines the ids that do not fit the decided type.

Every cast is a ``try_cast``: Spark 4 runs with ANSI SQL on, where a plain cast of ``"abc"`` to a
number fails the whole job instead of flagging one row.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.constants import ITEM_ID, RATING, REASON, TIMESTAMP, USER_ID, WEIGHT
from recspark.data.reasons import (
    INVALID_TIMESTAMP,
    ITEM_OUT_OF_RANGE,
    ITEM_TOO_LONG,
    MAX_ID_LENGTH,
    MISSING_ITEM,
    MISSING_RATING,
    MISSING_TIMESTAMP,
    MISSING_USER,
    MISSING_WEIGHT,
    NON_NUMERIC_ITEM,
    NON_NUMERIC_RATING,
    NON_NUMERIC_USER,
    NON_NUMERIC_WEIGHT,
    NON_UTF8_ITEM,
    NON_UTF8_USER,
    QUOTED_DELIMITER_ITEM,
    QUOTED_DELIMITER_USER,
    RATING_OUT_OF_RANGE,
    RAW_LINE,
    REASONS,
    STANDARD_COLUMNS,
    USER_OUT_OF_RANGE,
    USER_TOO_LONG,
    WEIGHT_OUT_OF_RANGE,
    Check,
    first_reason,
    kept_values,
    strip_whitespace,
)

# The form of an integer id, whatever its size. A zero fraction is allowed: a spreadsheet or
# pandas writes 12 as ``12.0`` (a column of integers with a missing value is a float column), and
# ``12.0`` on one day and ``12`` on the next must be the same user, not two.
_INTEGER = r"^[+-]?[0-9]+(\.0*)?$"
_ZERO_FRACTION = r"\.0*$"
# What a text line's invalid UTF-8 bytes read as once Spark decodes the line.
_REPLACEMENT = "\ufffd"


def _blank(column: Column, data_type: T.DataType) -> Column:
    if isinstance(data_type, T.StringType):
        return column.isNull() | (strip_whitespace(column) == "")
    return column.isNull()


def _id_checks(
    column: Column, data_type: T.DataType, max_id_length: int, reasons: tuple[str, str, str]
) -> list[Check]:
    """The checks of an id that do not depend on its type: blank, not UTF-8, too long."""
    missing, non_utf8, too_long = reasons
    checks = [(_blank(column, data_type), missing)]
    if isinstance(data_type, T.StringType):
        # Spark decodes a text line's invalid bytes to U+FFFD; a Parquet string keeps its bytes.
        checks += [
            (~F.is_valid_utf8(column) | column.contains(_REPLACEMENT), non_utf8),
            (F.length(column) > max_id_length, too_long),
        ]
    return checks


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


def _rating_checks(
    data_type: T.DataType | None, rating_min: float, rating_max: float
) -> tuple[Column, list[Check]]:
    """The rating as a float (1.0 when the input has none) and the checks of it."""
    if data_type is None:
        return F.lit(1.0).cast(T.FloatType()), []
    value = _number(F.col(RATING), data_type)
    checks = [
        (_blank(F.col(RATING), data_type), MISSING_RATING),
        (value.isNull() | F.isnan(value), NON_NUMERIC_RATING),
        ((value < rating_min) | (value > rating_max), RATING_OUT_OF_RANGE),
    ]
    return value.cast(T.FloatType()), checks


def _timestamp_checks(data_type: T.DataType | None) -> tuple[Column, list[Check]]:
    """The timestamp as long Unix seconds (0 when the input has none) and the checks of it."""
    if data_type is None:
        return F.lit(0).cast(T.LongType()), []
    seconds = _epoch_seconds(F.col(TIMESTAMP), data_type)
    checks = [
        (_blank(F.col(TIMESTAMP), data_type), MISSING_TIMESTAMP),
        (seconds.isNull(), INVALID_TIMESTAMP),
    ]
    return seconds, checks


def _weight_checks(data_type: T.DataType | None) -> tuple[list[Column], list[Check]]:
    """The weight as a float (none when the input has none) and the checks of it."""
    if data_type is None:
        return [], []
    weight = _number(F.col(WEIGHT), data_type)
    checks = [
        (_blank(F.col(WEIGHT), data_type), MISSING_WEIGHT),
        (weight.isNull() | F.isnan(weight), NON_NUMERIC_WEIGHT),
        ((weight <= 0) | (weight == float("inf")), WEIGHT_OUT_OF_RANGE),
    ]
    return [weight.cast(T.FloatType())], checks


def check_rows(
    raw: DataFrame,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
    max_id_length: int = MAX_ID_LENGTH,
) -> DataFrame:
    """Check each row of :func:`recspark.data.reading.read_raw`'s output and cast good values.

    Parameters
    ----------
    raw
        :func:`recspark.data.reading.read_raw`'s output.
    rating_min, rating_max
        The valid rating range, inclusive (``input.rating_min``/``rating_max``).
    max_id_length
        Longer text ids are quarantined (``input.max_id_length``).

    Returns
    -------
    DataFrame
        ``raw_line``, ``user_id``, ``item_id`` (trimmed, type unchanged: see :func:`cast_ids`),
        ``rating`` (float; 1.0 when the input has no rating column), ``timestamp`` (long Unix
        seconds; 0 when the input has none), ``weight`` (float, only when the input has one),
        ``reason``: the first of :data:`recspark.data.reasons.REASONS` that applies, or null for
        a good row; then any other column of ``raw`` unchanged.
    """
    schema = {field.name: field.dataType for field in raw.schema.fields}
    user, item = F.col(USER_ID), F.col(ITEM_ID)
    if isinstance(schema[USER_ID], T.StringType):
        user = strip_whitespace(user)
    if isinstance(schema[ITEM_ID], T.StringType):
        item = strip_whitespace(item)
    checks = _id_checks(
        user, schema[USER_ID], max_id_length, (MISSING_USER, NON_UTF8_USER, USER_TOO_LONG)
    ) + _id_checks(
        item, schema[ITEM_ID], max_id_length, (MISSING_ITEM, NON_UTF8_ITEM, ITEM_TOO_LONG)
    )
    rating, rating_checks = _rating_checks(schema.get(RATING), rating_min, rating_max)
    timestamp, timestamp_checks = _timestamp_checks(schema.get(TIMESTAMP))
    weights, weight_checks = _weight_checks(schema.get(WEIGHT))
    checks += rating_checks + timestamp_checks + weight_checks
    # A column of its own before it is used below, so that the checks run once per row.
    raw = raw.withColumn(REASON, F.coalesce(F.col(REASON), first_reason(checks)))
    reason = F.col(REASON)
    # Parquet rows have no text line: keep their values as JSON when they are quarantined.
    raw_line = kept_values([c for c in STANDARD_COLUMNS if c in schema], reason)
    good = reason.isNull()
    # Other columns (e.g. which input a row came from) pass through unchanged.
    passed = [c for c in raw.columns if c not in (*STANDARD_COLUMNS, RAW_LINE, REASON)]
    return raw.select(
        raw_line.alias(RAW_LINE),
        user.alias(USER_ID),
        item.alias(ITEM_ID),
        F.when(good, rating).alias(RATING),
        F.when(good, timestamp).alias(TIMESTAMP),
        *[F.when(good, column).alias(WEIGHT) for column in weights],
        reason.alias(REASON),
        *passed,
    )


def infer_id_types(
    frame: DataFrame, columns: tuple[str, ...] = (USER_ID, ITEM_ID)
) -> dict[str, T.DataType]:
    """The type each id column should have: ``long`` for a text column whose ids are mostly
    integers, else the column's own type.

    One small aggregate over the good rows of :func:`check_rows` (an id that is blank, not UTF-8
    or too long has no say). Most, not all: one stray id (``106,106``, ``x7``) in a column of
    integers does not turn it into text; :func:`cast_ids` quarantines it instead. A column of
    text ids with a few that look like numbers (``42`` among names) stays text.
    """
    types = {column: frame.schema[column].dataType for column in columns}
    strings = [c for c in columns if isinstance(types[c], T.StringType)]
    if strings:
        good = frame.where(F.col(REASON).isNull())
        counts = good.agg(
            F.count(F.lit(1)).alias("_rows"),
            *[F.sum(F.col(c).rlike(_INTEGER).cast("long")).alias(c) for c in strings],
        ).first()
        assert counts is not None  # a global aggregate has one row
        for column in strings:
            if counts["_rows"] and 2 * (counts[column] or 0) > counts["_rows"]:
                types[column] = T.LongType()
    return types


_ID_REASON = "_id_reason"
# Per id column: the reasons of an id that does not fit an integer type, in REASONS order.
_CAST_REASONS = {
    USER_ID: (QUOTED_DELIMITER_USER, NON_NUMERIC_USER, USER_OUT_OF_RANGE),
    ITEM_ID: (QUOTED_DELIMITER_ITEM, NON_NUMERIC_ITEM, ITEM_OUT_OF_RANGE),
}


def _integer_id(
    value: Column,
    source: T.DataType,
    target: T.DataType,
    delimiters: tuple[str, ...],
    reasons: tuple[str, str, str],
) -> tuple[Column, list[Check]]:
    """``value`` cast to the integral ``target``, and the checks that quarantine what does not fit.

    Integer ids run from 0 to a long's largest: a negative id or one too large for a long is
    out of range (never wrapped or merged with another).
    """
    quoted_delimiter, non_numeric, out_of_range = reasons
    cast = value.try_cast(target) if source != target else value
    checks: list[Check] = []
    if isinstance(source, T.StringType):
        integer = value.rlike(_INTEGER)
        cast = F.regexp_replace(value, _ZERO_FRACTION, "").try_cast(target)
        if delimiters:
            # A field can hold its delimiter only inside quotes: fields that ran together.
            holds = F.lit(False)
            for delimiter in delimiters:
                holds = holds | value.contains(delimiter)
            checks.append((~integer & holds, quoted_delimiter))
        checks.append((~integer, non_numeric))
        checks.append((integer & cast.isNull(), out_of_range))
    elif isinstance(source, T.FractionalType):
        finite = ~F.isnan(value) & (F.abs(value) != float("inf"))
        whole = finite & (value % 1 == 0)
        checks.append((~whole, non_numeric))
        checks.append((whole & cast.isNull(), out_of_range))
    elif not isinstance(source, T.IntegralType):
        checks.append((value.isNotNull() & cast.isNull(), non_numeric))
    checks.append((cast < 0, out_of_range))
    return cast, checks


def cast_ids(
    frame: DataFrame, types: dict[str, T.DataType], delimiters: tuple[str, ...] = ()
) -> DataFrame:
    """Cast id columns to ``types``, quarantining the ids that do not fit an integer type.

    An id of an integer column is ``quoted_delimiter_*`` when it is text holding one of
    ``delimiters`` (only quotes let a field hold its delimiter), else ``non_numeric_*`` when it
    is not an integer, and ``*_out_of_range`` when it is below 0 or too large for a long. A row
    already quarantined for a reason that comes earlier in :data:`REASONS` keeps it; one
    quarantined for a later reason (a bad rating, say) gets the id's.

    Parameters
    ----------
    types
        ``{"user_id": LongType(), ...}`` from :func:`infer_id_types`, from ``input.id_type``, or
        from the previous run's id maps (so that ids keep their type from run to run).
    delimiters
        The delimiters of the text formats read (``,`` for CSV); none for Parquet.
    """
    checks: list[Check] = []
    casts, integers = {}, {}
    for column, target in types.items():
        source = frame.schema[column].dataType
        value = F.col(column)
        if isinstance(target, T.IntegralType):
            cast, column_checks = _integer_id(
                value, source, target, delimiters, _CAST_REASONS[column]
            )
            checks += column_checks
            if source != target:
                integers[column] = cast
        elif isinstance(target, T.FractionalType) and isinstance(source, T.NumericType):
            # Float ids kept from an earlier run's map: NaN and infinities name nobody.
            non_numeric = _CAST_REASONS[column][1]
            checks.append((F.isnan(value) | (F.abs(value) == float("inf")), non_numeric))
            if source != target:
                casts[column] = value.cast(target)
        elif source != target:
            casts[column] = value.try_cast(target)
    if checks:
        # A column of its own, so that the checks are computed once per row, not once per use.
        frame = frame.withColumn(_ID_REASON, first_reason(checks))
        found = F.col(_ID_REASON)
        for column, cast in integers.items():
            # An id that does not fit is null, not truncated (2.5 is not user 2).
            casts[column] = F.when(found.isNull() | ~found.isin(*_CAST_REASONS[column]), cast)
        current = F.col(REASON)
        order = F.array(*[F.lit(reason) for reason in REASONS])
        earlier = F.array_position(order, found) < F.array_position(order, current)
        reason = F.when(found.isNotNull() & (current.isNull() | earlier), found).otherwise(current)
        # A Parquet row quarantined here keeps its values as read, before the cast.
        raw_line = kept_values([c for c in STANDARD_COLUMNS if c in frame.columns], reason)
        frame = frame.withColumns({RAW_LINE: raw_line, REASON: reason})
        # Values of rows quarantined here are null, as those of check_rows' bad rows are.
        values = [c for c in (RATING, TIMESTAMP, WEIGHT) if c in frame.columns]
        casts.update({c: F.when(F.col(REASON).isNull(), F.col(c)) for c in values})
    return frame.withColumns(casts).drop(_ID_REASON) if casts else frame.drop(_ID_REASON)


def split_valid(frame: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(good rows without ``reason``/``raw_line``, quarantined rows with both)."""
    good = frame.where(F.col(REASON).isNull()).drop(REASON, RAW_LINE)
    bad = frame.where(F.col(REASON).isNotNull())
    present = [c for c in STANDARD_COLUMNS if c in frame.columns]
    bad = bad.withColumn(RAW_LINE, F.coalesce(F.col(RAW_LINE), F.to_json(F.struct(*present))))
    return good, bad
