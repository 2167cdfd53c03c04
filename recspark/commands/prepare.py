"""prepare: check every row, index ids stably, split, and publish Parquet for training.

Reads ``input.*``, writes ``prepared/RUN_DATE/`` (see :mod:`recspark.artifacts`). Nothing is
published when the bad-row fraction exceeds ``input.max_bad_fraction``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark import sources
from recspark.artifacts import Layout, latest_date, staged, write_json
from recspark.config import Config
from recspark.constants import ITEM_ID, ITEM_IDX, RATING, REASON, TIMESTAMP, USER_ID, USER_IDX
from recspark.errors import BadInputError
from recspark.indexing import apply_index, extend_index
from recspark.splitting import set_apart_cold_start, split_ratings

log = logging.getLogger(__name__)

FEED_COLUMNS = [USER_IDX, ITEM_IDX, RATING, TIMESTAMP]


def input_path(config: Config) -> str:
    if config.input.path:
        return config.input.path
    if config.input.format == "synthetic":
        return str(Layout(config.paths.root).ratings)
    raise BadInputError("input.path is not set: point it at a ratings file or folder")


def read_checked(spark: SparkSession, config: Config, path: str) -> DataFrame:
    columns = config.input.columns
    frame = sources.read_ratings(
        spark,
        path,
        config.input.format,
        user_col=columns.user,
        item_col=columns.item,
        rating_col=None if config.input.implicit else columns.rating,
        timestamp_col=columns.timestamp,
        rating_min=config.input.rating_min,
        rating_max=config.input.rating_max,
    )
    return sources.mark_duplicates(sources.numeric_ids(frame))


def write_feed(frame: DataFrame, path: str, files: int, row_group_mb: int) -> None:
    """Parquet that petastorm's make_batch_reader reads: flat numeric columns, sized row groups."""
    (
        frame.select(*FEED_COLUMNS)
        .repartition(files)
        .write.option("parquet.block.size", row_group_mb << 20)
        .parquet(path)
    )


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    path = input_path(config)
    checked = read_checked(spark, config, path)
    if config.split.method == "given":
        if not config.input.validation_path:
            raise BadInputError("split.method is 'given' but input.validation_path is not set")
        given = read_checked(spark, config, config.input.validation_path)
        checked = checked.withColumn("_given", F.lit(False)).unionByName(
            given.withColumn("_given", F.lit(True))
        )
    # Persisted because counting, indexing and writing each read it; else the input is parsed 4x.
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    reasons = {row[REASON]: row["count"] for row in checked.groupBy(REASON).count().collect()}
    good_rows = reasons.pop(None, 0)
    bad_rows = sum(reasons.values())
    total = good_rows + bad_rows
    if total == 0:
        raise BadInputError(f"input {path} has no rows")
    if bad_rows / total > config.input.max_bad_fraction:
        raise BadInputError(
            f"{bad_rows} of {total} rows are bad ({bad_rows / total:.2%}, above input.max_bad_fraction="
            f"{config.input.max_bad_fraction}): {dict(sorted(reasons.items()))}. Nothing was published; "
            "fix the input or raise the limit"
        )
    good, bad = sources.split_valid(checked)

    previous_date = latest_date(layout.root / "prepared", before=config.run_date)
    previous_users = previous_items = None
    if previous_date:
        base = layout.prepared(previous_date)
        previous_users = spark.read.parquet(str(base / "user_index"))
        previous_items = spark.read.parquet(str(base / "item_index"))
        log.info("extending the id maps of %s", previous_date)
    user_index = extend_index(good, USER_ID, USER_IDX, previous_users).persist()
    item_index = extend_index(good, ITEM_ID, ITEM_IDX, previous_items).persist()
    indexed = apply_index(apply_index(good, user_index, USER_ID, USER_IDX), item_index, ITEM_ID, ITEM_IDX)

    if config.split.method == "given":
        train = indexed.where(~F.col("_given")).drop("_given")
        validation = indexed.where(F.col("_given")).drop("_given")
    else:
        train, validation = split_ratings(
            indexed, config.split.method, config.split.validation_fraction, config.split.seed
        )
    validation, cold_start = set_apart_cold_start(train, validation)

    final = layout.prepared(config.run_date)
    with staged(layout, final, f"prepared-{config.run_date}") as folder:
        user_index.write.parquet(str(folder / "user_index"))
        item_index.write.parquet(str(folder / "item_index"))
        # Quarantine keeps the raw line and the parsed fields beside the reason, for diagnosis.
        bad.drop("_given").write.parquet(str(folder / "quarantine"))
        prepared_counts = {}
        files = max(4, math.ceil(good_rows / config.prepare.rows_per_file))
        write_feed(train, str(folder / "train"), files, config.prepare.row_group_mb)
        write_feed(validation, str(folder / "validation"), max(2, files // 4), config.prepare.row_group_mb)
        write_feed(cold_start, str(folder / "cold_start"), 1, config.prepare.row_group_mb)
        train_stats = (
            spark.read.parquet(str(folder / "train"))
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.min(RATING).alias("min"),
                F.max(RATING).alias("max"),
                F.mean(RATING).alias("mean"),
            )
            .first()
        )
        for name in ("validation", "cold_start"):
            prepared_counts[name] = spark.read.parquet(str(folder / name)).count()
        users = spark.read.parquet(str(folder / "user_index")).count()
        items = spark.read.parquet(str(folder / "item_index")).count()
        if train_stats["rows"] == 0 or prepared_counts["validation"] == 0:
            raise BadInputError(
                f"the split left train with {train_stats['rows']} and validation with "
                f"{prepared_counts['validation']} rows: give more data or change split.*"
            )
        manifest = {
            "run_date": str(config.run_date),
            "input": {
                "path": path,
                "format": config.input.format,
                "fingerprint": sources.fingerprint(path),
                "implicit": config.input.implicit,
            },
            "split": config.split.model_dump(),
            "previous_index_date": previous_date,
            "users": users,
            "items": items,
            "counts": {
                "train": train_stats["rows"],
                "validation": prepared_counts["validation"],
                "cold_start": prepared_counts["cold_start"],
                "quarantined": bad_rows,
                "quarantined_by_reason": dict(sorted(reasons.items())),
            },
            "rating": {"min": train_stats["min"], "max": train_stats["max"], "mean": train_stats["mean"]},
            "rating_range": [config.input.rating_min, config.input.rating_max],
        }
        write_json(folder / "manifest.json", manifest)
    checked.unpersist()
    outputs = {
        name: str(final / name)
        for name in ("train", "validation", "cold_start", "user_index", "item_index", "quarantine")
    }
    outputs["manifest"] = str(final / "manifest.json")
    return {
        "outputs": outputs,
        "counts": {
            "users": users,
            "items": items,
            "train": train_stats["rows"],
            "validation": prepared_counts["validation"],
            "cold_start": prepared_counts["cold_start"],
            "quarantined": bad_rows,
            "quarantined_by_reason": dict(sorted(reasons.items())),
        },
    }
