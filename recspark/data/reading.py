"""Spark readers: an input of any supported format as rows of standard columns, values as read.

:func:`read_raw` reads the lines of a text input (MovieLens, CSV, TSV) or the rows of a Parquet
one into ``raw_line``, the standard columns the input has (``user_id``, ``item_id``, ``rating``,
``timestamp``, ``weight``) and ``reason``, ready for :mod:`recspark.data.checks`.

Text formats are read as lines and split here rather than by Spark's CSV reader, so that a short
or malformed line is kept and quarantined with its reason (``wrong_field_count``) instead of being
dropped or nulled silently. Every check that needs no row is made first
(:func:`recspark.data.sniffing.inspect_input`).
"""

from __future__ import annotations

import functools
import re

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.constants import ITEM_ID, RATING, REASON, TIMESTAMP, USER_ID
from recspark.core.location import Location
from recspark.data.columns import resolve_columns, wanted_columns
from recspark.data.listing import BOM
from recspark.data.reasons import RAW_LINE, WRONG_FIELD_COUNT, strip_whitespace
from recspark.data.sniffing import (
    PARQUET_FORMATS,
    TextLayout,
    header_groups,
    inspect_input,
    text_layout,
)


def _clean_field(value: Column) -> Column:
    """Trim a text field and undo CSV quoting: a doubled quote inside quotes is one quote."""
    value = strip_whitespace(value)
    quoted = value.startswith('"') & value.endswith('"') & (F.length(value) >= 2)
    inner = F.regexp_replace(F.regexp_extract(value, '^"(.*)"$', 1), '""', '"')
    return F.when(quoted, strip_whitespace(inner)).otherwise(value)


def _split_line(line: Column, delimiter: str) -> Column:
    plain = F.split(line, re.escape(delimiter))
    if delimiter != ",":
        return plain
    # A comma inside double quotes is not a delimiter; the lookahead is costly, so use it only on
    # lines that hold a quote at all.
    quoted = F.split(line, ',(?=(?:[^"]*"[^"]*")*[^"]*$)')
    return F.when(line.contains('"'), quoted).otherwise(plain)


def _read_text(
    spark: SparkSession, path: str, fmt: str, wanted: dict[str, str], header: bool | None = None
) -> DataFrame:
    """Lines split on the format's delimiter; a line with the wrong number of fields says so.

    With a header, each file is read by its own header (:func:`header_groups`).
    """
    layout = text_layout(path, fmt, wanted, header)
    if layout.header is None:
        return _split_lines(spark.read.text(str(Location(path))), layout)
    frames = [
        _split_lines(spark.read.text(files), group_layout)
        for group_layout, files in header_groups(path, layout, wanted)
    ]
    return functools.reduce(DataFrame.unionByName, frames)


def _split_lines(text: DataFrame, layout: TextLayout) -> DataFrame:
    """:func:`_read_text` for files that share one layout: Spark's ``value`` lines, split."""
    field_count = layout.field_count
    lines = text.select(F.regexp_replace("value", "^" + BOM, "").alias(RAW_LINE))
    # Blank lines (a trailing newline, a gap between files) hold no row.
    lines = lines.where(F.trim(F.col(RAW_LINE)) != "")
    if layout.header is not None:
        # The files of this group start with this header line.
        lines = lines.where(F.col(RAW_LINE) != layout.header)
    parts = _split_line(F.col(RAW_LINE), layout.delimiter)
    size = F.size(parts)
    # Empty trailing fields (``1,2,3.5,1112486027,,``) are allowed: real ratings.csv has them.
    extra_empty = F.forall(F.slice(parts, field_count + 1, 1 << 20), lambda x: F.trim(x) == "")
    count_ok = (size == field_count) | ((size > field_count) & extra_empty)
    selected = [
        F.when(count_ok, _clean_field(F.try_element_at(parts, F.lit(position + 1)))).alias(name)
        for name, position in layout.positions.items()
    ]
    reason = F.when(~count_ok, F.lit(WRONG_FIELD_COUNT)).otherwise(F.lit(None).cast("string"))
    return lines.select(F.col(RAW_LINE), *selected, reason.alias(REASON))


def _read_parquet(spark: SparkSession, path: str, wanted: dict[str, str]) -> DataFrame:
    frame = spark.read.parquet(str(Location(path)))
    columns = resolve_columns(frame.columns, wanted, str(path))
    return frame.select(
        F.lit(None).cast("string").alias(RAW_LINE),
        *[F.col(name).alias(standard) for standard, name in columns.items()],
        F.lit(None).cast("string").alias(REASON),
    )


def read_raw(
    spark: SparkSession,
    path: str,
    input_format: str = "auto",
    *,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    rating_col: str | None = RATING,
    timestamp_col: str | None = TIMESTAMP,
    weight_col: str | None = None,
    header: bool | None = None,
) -> DataFrame:
    """Read an input into standard column names, values as read, plus ``raw_line`` and ``reason``.

    Parameters
    ----------
    path
        A file or a folder of files of one format.
    input_format
        One of :data:`recspark.data.sniffing.FORMATS` or ``auto``
        (:func:`recspark.data.sniffing.detect_format`).
    user_col, item_col, rating_col, timestamp_col, weight_col
        Input column names (``input.columns.*``); None leaves the column out (``rating_col`` is
        None for implicit feedback). CSV and TSV files may have a header naming the columns; a
        file without one is read by position: user, item, rating (or weight), timestamp. A
        headerless file with three fields has no timestamp.
    header
        ``input.header`` for CSV and TSV: True, False, or None to decide from the first line
        (see :func:`recspark.data.sniffing.text_layout`).

    Returns
    -------
    DataFrame
        ``raw_line`` (the text line; null for Parquet), one column per standard name the input
        has (strings for text formats, the input's types for Parquet), and ``reason``
        (``wrong_field_count`` or null).
    """
    wanted = wanted_columns(user_col, item_col, rating_col, timestamp_col, weight_col)
    fmt, _ = inspect_input(path, input_format, wanted, header)
    if fmt in PARQUET_FORMATS:
        return _read_parquet(spark, path, wanted)
    return _read_text(spark, path, fmt, wanted, header)
