"""Rows that repeat a (user, item) pair: which one is kept, which are quarantined, and how
implicit events of one pair become one row.

Explicit ratings keep the latest rating of a pair (:func:`mark_duplicates`); implicit events keep
every event except re-deliveries (:func:`mark_repeated_events`) and are then counted per pair
(:func:`aggregate_events`). Both run on :func:`recspark.data.checks.cast_ids`' output, before
:func:`recspark.data.checks.split_valid`.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from recspark.core.constants import ITEM_ID, RATING, REASON, TIMESTAMP, USER_ID, WEIGHT
from recspark.data.reasons import DUPLICATE_ROW, RAW_LINE, REPEATED_PAIR


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
        Good event rows (:func:`recspark.data.checks.split_valid`).
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
