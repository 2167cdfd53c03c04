"""The shape of a row on its way through the checks, and the reasons a row is quarantined.

Every reader hands the checks the same columns: ``raw_line`` (the text line, null for Parquet),
the standard columns the input has, and ``reason`` (null for a good row). :data:`REASONS` lists
every reason in the order they are checked: a row gets the first that applies, whichever step
(:mod:`recspark.data.reading`, :mod:`recspark.data.checks`, :mod:`recspark.data.dedup`) finds it.
:func:`first_reason` folds a list of checks into that one reason.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from recspark.core.constants import ITEM_ID, RATING, TIMESTAMP, USER_ID, WEIGHT

RAW_LINE = "raw_line"
STANDARD_COLUMNS = (USER_ID, ITEM_ID, RATING, TIMESTAMP, WEIGHT)
MAX_ID_LENGTH = 256  # input.max_id_length
# Spark's trim strips spaces only: a tab or a no-break space around an id would survive it.
_WHITESPACE = r"(?U)^\s+|\s+$"

# Reasons a row is quarantined, in the order they are checked; a row gets the first that applies.
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_USER = "missing_user"  # null, or empty after trimming any whitespace
MISSING_ITEM = "missing_item"
NON_UTF8_USER = "non_utf8_user"  # the id's bytes are not valid UTF-8
NON_UTF8_ITEM = "non_utf8_item"
USER_TOO_LONG = "user_too_long"  # longer than max_id_length characters
ITEM_TOO_LONG = "item_too_long"
# A quoted id holding the delimiter ("106,106") in a column of integer ids: fields run together.
QUOTED_DELIMITER_USER = "quoted_delimiter_user"
QUOTED_DELIMITER_ITEM = "quoted_delimiter_item"
NON_NUMERIC_USER = "non_numeric_user"  # not an integer in a column of integer ids
NON_NUMERIC_ITEM = "non_numeric_item"
USER_OUT_OF_RANGE = "user_out_of_range"  # an integer id below 0 or above a long's largest
ITEM_OUT_OF_RANGE = "item_out_of_range"
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
    NON_UTF8_USER,
    NON_UTF8_ITEM,
    USER_TOO_LONG,
    ITEM_TOO_LONG,
    QUOTED_DELIMITER_USER,
    QUOTED_DELIMITER_ITEM,
    NON_NUMERIC_USER,
    NON_NUMERIC_ITEM,
    USER_OUT_OF_RANGE,
    ITEM_OUT_OF_RANGE,
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

# A condition that quarantines a row, and the reason it gives.
Check = tuple[Column, str]


def first_reason(checks: list[Check]) -> Column:
    """The reason of the first check (in :data:`REASONS` order) whose condition holds, else null."""
    ordered = sorted(checks, key=lambda check: REASONS.index(check[1]))
    reason = F.lit(None).cast("string")
    for condition, name in reversed(ordered):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
    return reason


def strip_whitespace(value: Column) -> Column:
    """``value`` without leading and trailing whitespace of any kind (tabs, no-break spaces)."""
    return F.regexp_replace(value, _WHITESPACE, "")


def kept_values(present: list[str], reason: Column) -> Column:
    """``raw_line`` for a row: its text line, or its values as JSON when it is quarantined.

    Parquet rows have no text line; a quarantined one keeps the values of ``present`` as read.
    """
    return F.coalesce(F.col(RAW_LINE), F.when(reason.isNotNull(), F.to_json(F.struct(*present))))
