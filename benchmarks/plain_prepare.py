"""A plain PySpark prepare of the synthetic ratings: what recspark's prepare is timed against.

What a competent data engineer would write for the same job in one function, with no recspark
import: read the Parquet ratings ``recspark generate`` writes, check every row (null or negative
ids, a missing, non-numeric or out-of-range rating, a missing timestamp), keep the latest rating of
a repeated (user, item) pair and quarantine the others (``duplicate_row`` when a copy of the row
before it, ``repeated_pair`` otherwise, as :mod:`recspark.data.dedup` does), number the raw ids
densely in ascending order (a window over the distinct ids), split by a hash of (user, item, seed)
as ``split.method: random`` does, set apart the validation rows whose user or item train lacks,
and write the same tables as Parquet: ``train``, ``validation``, ``cold_start``, ``user_index``,
``item_index``, ``rated`` (every user with its sorted rated items) and ``quarantine``.

It does less than recspark's prepare on purpose, and that difference is what the benchmark prices:
no input sniffing or footer checks, no stable ids across runs (no previous id map to extend), no
feed layout for petastorm (rows are not ordered by a hash, only spread over the same number of
files), no staging folder published whole, no manifest. Row counts are read back from the written
tables. It is a reference for timing, not a second product.
"""

from __future__ import annotations

import math

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

_SCALE = 1 << 30  # the hash draw's resolution, as recspark.data.splitting has it
TABLES = ("train", "validation", "cold_start", "user_index", "item_index", "rated", "quarantine")


def _reason(rating_min: float, rating_max: float) -> F.Column:
    """The first problem of a row, or null: the checks recspark makes of typed (Parquet) input."""
    user, item, rating = F.col("user_id"), F.col("item_id"), F.col("rating")
    return (
        F.when(user.isNull(), "missing_user")
        .when(item.isNull(), "missing_item")
        .when(user < 0, "user_out_of_range")
        .when(item < 0, "item_out_of_range")
        .when(rating.isNull(), "missing_rating")
        .when(F.isnan(rating), "non_numeric_rating")
        .when((rating < rating_min) | (rating > rating_max), "rating_out_of_range")
        .when(F.col("timestamp").isNull(), "missing_timestamp")
    )


def _dense_ids(good: DataFrame, id_col: str, idx_col: str) -> DataFrame:
    """``(id_col, idx_col)``: the distinct ids numbered 0.. in ascending order."""
    ordered = Window.orderBy(id_col)  # one partition, but only the distinct ids go through it
    return (
        good.select(id_col)
        .distinct()
        .withColumn(idx_col, (F.row_number().over(ordered) - 1).cast("int"))
    )


def plain_prepare(
    spark: SparkSession,
    ratings_path: str,
    out_dir: str,
    *,
    seed: int = 42,
    validation_fraction: float = 0.2,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
    rows_per_file: int = 2_000_000,
) -> dict[str, int]:
    """Prepare ``ratings_path`` into ``out_dir/<table>`` and return each table's rows.

    Parameters
    ----------
    ratings_path
        Parquet ratings (``user_id``, ``item_id``, ``rating``, ``timestamp``).
    out_dir
        Folder of the seven tables (:data:`TABLES`); each is overwritten.
    seed, validation_fraction
        ``split.seed`` and ``split.validation_fraction``.
    rating_min, rating_max
        The valid rating range, inclusive.
    rows_per_file
        About how many rows a train file holds (``prepare.rows_per_file``).

    Returns
    -------
    dict
        Rows per table, plus ``input_rows``.
    """
    raw = spark.read.parquet(ratings_path).select("user_id", "item_id", "rating", "timestamp")
    checked = raw.withColumn("reason", _reason(rating_min, rating_max))
    # Dedup: the latest rating of a pair wins; a loser equal to the row before it is a copy.
    good = F.col("reason").isNull()
    latest_first = Window.partitionBy("user_id", "item_id", good).orderBy(
        F.col("timestamp").desc(), F.col("rating").desc()
    )
    values = F.struct("timestamp", "rating")
    checked = checked.withColumn(
        "reason",
        F.when(~good, F.col("reason"))
        .when(F.row_number().over(latest_first) == 1, F.lit(None).cast("string"))
        .when(F.lag(values).over(latest_first) == values, "duplicate_row")
        .otherwise("repeated_pair"),
    ).cache()  # read by the ids, the split and the quarantine
    rows = {"input_rows": checked.count()}
    good_rows = checked.where(F.col("reason").isNull()).drop("reason")

    user_index = _dense_ids(good_rows, "user_id", "user_idx").cache()
    item_index = _dense_ids(good_rows, "item_id", "item_idx").cache()
    indexed = good_rows.join(F.broadcast(user_index), "user_id").join(
        F.broadcast(item_index), "item_id"
    )
    draw = F.pmod(F.xxhash64("user_id", "item_id", F.lit(seed)), F.lit(_SCALE)) / float(_SCALE)
    flagged = indexed.select(
        "user_idx", "item_idx", "rating", "timestamp", (draw < validation_fraction).alias("_val")
    )
    # Cold start: validation rows whose user or item has no train row.
    train = flagged.where(~F.col("_val"))
    known_users = train.select("user_idx").distinct().withColumn("_user_known", F.lit(True))
    known_items = train.select("item_idx").distinct().withColumn("_item_known", F.lit(True))
    flagged = (
        flagged.join(F.broadcast(known_users), "user_idx", "left")
        .join(F.broadcast(known_items), "item_idx", "left")
        .withColumn(
            "_cold",
            F.col("_val") & (F.col("_user_known").isNull() | F.col("_item_known").isNull()),
        )
        .select("user_idx", "item_idx", "rating", "timestamp", "_val", "_cold")
        .cache()
    )
    feed = ["user_idx", "item_idx", "rating", "timestamp"]
    files = max(4, math.ceil(rows["input_rows"] / rows_per_file))
    splits = {
        "train": (flagged.where(~F.col("_val")), files),
        "validation": (flagged.where(F.col("_val") & ~F.col("_cold")), max(2, files // 4)),
        "cold_start": (flagged.where(F.col("_cold")), 1),
    }
    for name, (table, table_files) in splits.items():
        table.select(feed).repartition(table_files).write.mode("overwrite").parquet(
            f"{out_dir}/{name}"
        )
    user_index.write.mode("overwrite").parquet(f"{out_dir}/user_index")
    item_index.write.mode("overwrite").parquet(f"{out_dir}/item_index")
    rated = flagged.groupBy("user_idx").agg(F.sort_array(F.collect_list("item_idx")).alias("items"))
    user_index.join(rated, "user_idx", "left").select(
        "user_idx", "user_id", F.coalesce("items", F.array().cast("array<int>")).alias("items")
    ).write.mode("overwrite").parquet(f"{out_dir}/rated")
    checked.where(F.col("reason").isNotNull()).coalesce(1).write.mode("overwrite").parquet(
        f"{out_dir}/quarantine"
    )
    for name in TABLES:
        rows[name] = spark.read.parquet(f"{out_dir}/{name}").count()  # from the footers
    for frame in (checked, user_index, item_index, flagged):
        frame.unpersist()
    return rows
