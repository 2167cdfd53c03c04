"""Train/validation splits that depend only on the data and a seed.

Spark's ``rand(seed)`` depends on how rows are partitioned, so a re-run on another cluster could
move rows between splits. Here each row's draw is a hash of (user, item, seed) instead: the same
input and seed give the same split anywhere.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.constants import ITEM_IDX, TIMESTAMP, USER_IDX

_SCALE = 1_000_000


def row_draw(seed: int, user_col: str = USER_IDX, item_col: str = ITEM_IDX) -> Column:
    """A uniform draw in [0, 1) fixed by the row's (user, item) and ``seed``."""
    return (F.abs(F.xxhash64(F.col(user_col), F.col(item_col), F.lit(seed))) % _SCALE) / _SCALE


def split_ratings(
    ratings: DataFrame,
    method: str,
    validation_fraction: float,
    seed: int,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    timestamp_col: str = TIMESTAMP,
) -> tuple[DataFrame, DataFrame]:
    """Split ratings into (train, validation).

    Parameters
    ----------
    method
        ``random``: each rating independently; ``user_stratified``: the fraction of each user's
        ratings, rounded, chosen by hash; ``chronological``: each user's latest fraction by
        timestamp. A user with a single rating keeps it in train under the per-user methods.
    """
    draw = row_draw(seed, user_col, item_col)
    if method == "random":
        flagged = ratings.withColumn("_validation", draw < validation_fraction)
    elif method in {"user_stratified", "chronological"}:
        if method == "user_stratified":
            order = [draw, F.col(item_col)]
        else:
            order = [F.col(timestamp_col).desc(), draw, F.col(item_col)]
        per_user = Window.partitionBy(user_col)
        flagged = (
            ratings.withColumn("_position", F.row_number().over(per_user.orderBy(*order)))
            .withColumn("_count", F.count(F.lit(1)).over(per_user))
            .withColumn(
                "_validation",
                (F.col("_count") > 1)
                & (F.col("_position") <= F.round(F.col("_count") * validation_fraction)),
            )
            .drop("_position", "_count")
        )
    else:
        raise ValueError(f"unknown split method {method!r}; 'given' reads input.validation_path")
    return (
        flagged.where(~F.col("_validation")).drop("_validation"),
        flagged.where(F.col("_validation")).drop("_validation"),
    )


def set_apart_cold_start(
    train: DataFrame, validation: DataFrame, user_col: str = USER_IDX, item_col: str = ITEM_IDX
) -> tuple[DataFrame, DataFrame]:
    """(validation rows whose user and item both appear in train, the rest: the cold-start slice)."""
    users = train.select(user_col).distinct().withColumn("_known_user", F.lit(True))
    items = train.select(item_col).distinct().withColumn("_known_item", F.lit(True))
    marked = validation.join(users, user_col, "left").join(items, item_col, "left")
    warm = F.col("_known_user").isNotNull() & F.col("_known_item").isNotNull()
    columns = validation.columns
    return marked.where(warm).select(columns), marked.where(~warm).select(columns)
