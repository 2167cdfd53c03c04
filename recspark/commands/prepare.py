"""prepare: check every row, index ids stably, split, and publish Parquet for training.

Reads ``input.*`` and writes ``prepared/RUN_DATE/`` (see :mod:`recspark.core.storage`): ``train``,
``validation`` and ``cold_start`` (``user_idx``, ``item_idx``, ``rating``, ``timestamp`` and
``weight`` when the input has one), ``user_index`` and ``item_index`` (raw id -> dense index),
``rated`` (``user_idx``, ``user_id``, ``items``: one row per user of the id map with every item
it rated in any split, empty when none: the users ``score`` scores and what it leaves out),
``quarantine`` (every rejected row with its ``reason``) and ``manifest.json``. When the quarantined
fraction of the input exceeds ``input.max_bad_fraction`` the job fails before writing and nothing
is published; any later failure discards the staging folder, so a prepared date is whole or absent.

With ``input.implicit`` the input is a table of (user, item) events or counts with no rating:
the events of a pair become one row whose ``rating`` is the number of events and whose ``weight``
is the sum of ``input.columns.weight`` over them (when configured).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.config import Config
from recspark.core.constants import (
    ITEM_ID,
    ITEM_IDX,
    RATING,
    REASON,
    TIMESTAMP,
    USER_ID,
    USER_IDX,
    WEIGHT,
)
from recspark.core.errors import BadInputError
from recspark.core.storage import Layout, latest_date, parquet_rows, staged, write_json
from recspark.data import sources
from recspark.data.indexing import apply_index, check_index, extend_index
from recspark.data.prepared import RATED, rated_by_every_user
from recspark.data.splitting import (
    COLD_START_FLAG,
    VALIDATION_FLAG,
    flag_cold_start,
    flag_validation,
)

log = logging.getLogger(__name__)

FEED_COLUMNS = [USER_IDX, ITEM_IDX, RATING, TIMESTAMP]
SOURCE = "source"  # in the quarantine: "input" or "validation" (input.validation_path)
TABLES = ("train", "validation", "cold_start")
INDEXES = ("user_index", "item_index")
INTEGER_ID_FORMATS = ("movielens-100k", "movielens-1m")


def input_path(config: Config) -> str:
    """The ratings input: ``input.path``, or the generated table for ``format: synthetic``."""
    if config.input.path:
        return config.input.path
    if config.input.format == "synthetic":
        return str(Layout(config.paths.root).ratings)
    raise BadInputError("input.path is not set: point it at a ratings file or folder")


def read_input(spark: SparkSession, config: Config, path: str, fmt: str) -> DataFrame:
    """Read one input table with the configured columns into :func:`sources.read_raw` form."""
    columns = config.input.columns
    return sources.read_raw(
        spark,
        path,
        fmt,
        user_col=columns.user,
        item_col=columns.item,
        rating_col=None if config.input.implicit else columns.rating,
        timestamp_col=columns.timestamp,
        weight_col=columns.weight,
    )


def id_types(
    config: Config, fmt: str, checked: DataFrame, previous: dict[str, DataFrame]
) -> dict[str, T.DataType]:
    """Raw id types: ``input.id_type`` when set, else the previous maps', else the format's.

    MovieLens ids are integers; Parquet ids keep their type; CSV/TSV ids are integers when every
    one is (:func:`sources.infer_id_types`), else strings.
    """
    if config.input.id_type == "integer":
        return {USER_ID: T.LongType(), ITEM_ID: T.LongType()}
    if config.input.id_type == "string":
        return {USER_ID: T.StringType(), ITEM_ID: T.StringType()}
    if previous:
        return {column: previous[column].schema[column].dataType for column in (USER_ID, ITEM_ID)}
    if fmt in INTEGER_ID_FORMATS:
        return {USER_ID: T.LongType(), ITEM_ID: T.LongType()}
    if fmt in ("parquet", "synthetic"):  # typed input: ids keep the input's type
        return {column: checked.schema[column].dataType for column in (USER_ID, ITEM_ID)}
    return sources.infer_id_types(checked)


def write_feed(
    frame: DataFrame, path: str, files: int, row_group_mb: int, seed: int, columns: list[str]
) -> None:
    """Parquet that petastorm's ``make_batch_reader`` reads: flat numeric columns, sized row groups.

    Rows are laid out in an order fixed by a hash of (user, item, seed): the same data gives the
    same files, and a row group holds a mix of users and items rather than one user's block, so
    shuffling row groups plus a small buffer is enough for SGD.
    """
    order = F.xxhash64(F.col(USER_IDX), F.col(ITEM_IDX), F.lit(seed))
    (
        frame.select(*columns)
        .withColumn("_order", order)
        .repartition(files, "_order")
        .sortWithinPartitions("_order", USER_IDX, ITEM_IDX)
        .drop("_order")
        .write.option("parquet.block.size", row_group_mb << 20)
        .parquet(path)
    )


def rating_stats(spark: SparkSession, path: str) -> dict[str, float]:
    """Rating min/max/mean of a written table (one small aggregate)."""
    row = spark.read.parquet(path).agg(
        F.min(RATING).alias("min"), F.max(RATING).alias("max"), F.mean(RATING).alias("mean")
    ).first()
    return {key: row[key] for key in ("min", "max", "mean")}


def previous_maps(
    spark: SparkSession, layout: Layout, run_date
) -> tuple[str | None, dict[str, DataFrame], dict[str, int]]:
    """The latest published id maps before ``run_date``, checked, and their sizes."""
    date = latest_date(layout.root / "prepared", before=run_date)
    if date is None:
        return None, {}, {}
    base = layout.prepared(date)
    maps, sizes = {}, {}
    names = ((USER_ID, USER_IDX, "user_index"), (ITEM_ID, ITEM_IDX, "item_index"))
    for id_col, idx_col, name in names:
        if not (base / name).exists():
            raise BadInputError(
                f"the prepared run {date} under {layout.root} has no {name}: remove that run or "
                "start a new paths.root"
            )
        frame = spark.read.parquet(str(base / name))
        sizes[id_col] = check_index(frame, id_col, idx_col, f"{name} of {date}")
        maps[id_col] = frame
    log.info("extending the id maps of %s", date)
    return date, maps, sizes


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    """Prepare one run date; return the summary's ``outputs`` and ``counts``."""
    layout = Layout(config.paths.root)
    implicit = config.input.implicit
    path = input_path(config)
    fmt = sources.detect_format(path) if config.input.format == "auto" else config.input.format
    given = config.split.method == "given"
    raw = read_input(spark, config, path, fmt).withColumn(SOURCE, F.lit("input"))
    if given:
        if not config.input.validation_path:
            raise BadInputError(
                "split.method is 'given' but input.validation_path is not set: point it at the "
                "validation table (e.g. ml-100k/u1.test with u1.base as input.path)"
            )
        validation_fmt = (
            sources.detect_format(config.input.validation_path)
            if config.input.format == "auto"
            else config.input.format
        )
        validation_raw = read_input(spark, config, config.input.validation_path, validation_fmt)
        if set(validation_raw.columns) != set(raw.columns) - {SOURCE}:
            raise BadInputError(
                f"input.path has columns {raw.columns[:-1]} but input.validation_path has "
                f"{validation_raw.columns}: give both the same columns"
            )
        raw = raw.unionByName(validation_raw.withColumn(SOURCE, F.lit("validation")))
    has_timestamp = TIMESTAMP in raw.columns
    has_weight = WEIGHT in raw.columns
    if config.split.method == "chronological" and not has_timestamp:
        raise BadInputError(
            "split.method is 'chronological' but the input has no timestamp column: set "
            "input.columns.timestamp or choose another split.method"
        )

    checked = sources.check_rows(raw, config.input.rating_min, config.input.rating_max)
    previous_date, previous, previous_sizes = previous_maps(spark, layout, config.run_date)
    types = id_types(config, fmt, checked, previous)
    checked = sources.cast_ids(checked, types)
    if implicit:
        checked = sources.mark_repeated_events(checked, has_timestamp)
    else:
        checked = sources.mark_duplicates(checked)
    # Persisted because counting, indexing and the quarantine each read it; else the input is
    # parsed and sorted once per use.
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    cached = [checked]
    try:
        counted = {row[REASON]: row["count"] for row in checked.groupBy(REASON).count().collect()}
        good_rows = counted.pop(None, 0)
        unknown = set(counted) - set(sources.REASONS)
        if unknown:
            raise BadInputError(f"rows quarantined for unknown reasons {sorted(unknown)}")
        by_reason = {reason: counted.get(reason, 0) for reason in sources.REASONS}
        bad_rows = sum(counted.values())
        total = good_rows + bad_rows
        if total == 0:
            raise BadInputError(f"input {path} has no rows")
        if bad_rows / total > config.input.max_bad_fraction:
            found = {reason: n for reason, n in by_reason.items() if n}
            raise BadInputError(
                f"{bad_rows} of {total} rows are bad ({bad_rows / total:.2%}, above "
                f"input.max_bad_fraction={config.input.max_bad_fraction}): {found}. Nothing was "
                "published; fix the input or raise input.max_bad_fraction"
            )
        if good_rows == 0:
            raise BadInputError(f"input {path} has no good rows: {by_reason}")
        good, bad = sources.split_valid(checked)
        if implicit:
            good = sources.aggregate_events(good, by=(SOURCE,))

        user_index = extend_index(good, USER_ID, USER_IDX, previous.get(USER_ID))
        item_index = extend_index(good, ITEM_ID, ITEM_IDX, previous.get(ITEM_ID))
        user_index = user_index.persist(StorageLevel.MEMORY_AND_DISK)
        item_index = item_index.persist(StorageLevel.MEMORY_AND_DISK)
        cached += [user_index, item_index]
        indexed = apply_index(
            apply_index(good, user_index, USER_ID, USER_IDX), item_index, ITEM_ID, ITEM_IDX
        )
        if given:
            flagged = indexed.withColumn(VALIDATION_FLAG, F.col(SOURCE) == "validation")
        else:
            # Raw ids are hashed, so a rating's side of the split does not depend on the maps.
            flagged = flag_validation(
                indexed,
                config.split.method,
                config.split.validation_fraction,
                config.split.seed,
                user_col=USER_ID,
                item_col=ITEM_ID,
            )
        feed_columns = FEED_COLUMNS + ([WEIGHT] if has_weight else [])
        flagged = flag_cold_start(flagged.select(*feed_columns, VALIDATION_FLAG))
        # Persisted so that the three tables below are filters of one computed split.
        flagged = flagged.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(flagged)
        validation_rows = F.col(VALIDATION_FLAG) & ~F.col(COLD_START_FLAG)
        tables = {
            "train": flagged.where(~F.col(VALIDATION_FLAG)),
            "validation": flagged.where(validation_rows),
            "cold_start": flagged.where(F.col(COLD_START_FLAG)),
        }

        final = layout.prepared(config.run_date)
        settings = config.prepare
        with staged(layout, final, f"prepared-{config.run_date}") as folder:
            user_index.write.parquet(str(folder / "user_index"))
            item_index.write.parquet(str(folder / "item_index"))
            # The quarantine keeps the raw line and the parsed fields beside the reason.
            quarantine_files = max(1, math.ceil(bad_rows / settings.rows_per_file))
            bad.coalesce(quarantine_files).write.parquet(str(folder / "quarantine"))
            files = max(4, math.ceil(good_rows / settings.rows_per_file))
            file_counts = {"train": files, "validation": max(2, files // 4), "cold_start": 1}
            for name in TABLES:
                write_feed(tables[name], str(folder / name), file_counts[name],
                           settings.row_group_mb, config.split.seed, feed_columns)
            # Every user of the id map with every item it rated, one array per user: the users
            # `score` scores and what it leaves out, grouped once here instead of reshuffling
            # every rating at each scoring run.
            rated_by_every_user(user_index, flagged).repartition(
                max(2, files // 4), USER_IDX
            ).sortWithinPartitions(USER_IDX).write.parquet(str(folder / RATED))
            rows = {name: parquet_rows(folder / name) for name in (*TABLES, *INDEXES)}
            users, items = rows["user_index"], rows["item_index"]
            if rows["train"] == 0 or rows["validation"] == 0:
                raise BadInputError(
                    f"the split left train with {rows['train']} and validation with "
                    f"{rows['validation']} rows (and {rows['cold_start']} cold-start rows): give "
                    "more data or change split.*"
                )
            train_stats = rating_stats(spark, str(folder / "train"))
            counts = {
                "users": users,
                "items": items,
                "new_users": users - previous_sizes.get(USER_ID, 0),
                "new_items": items - previous_sizes.get(ITEM_ID, 0),
                "input_rows": total,
                "train": rows["train"],
                "validation": rows["validation"],
                "cold_start": rows["cold_start"],
                "quarantined": bad_rows,
                "quarantined_by_reason": by_reason,
            }
            if implicit:
                pairs = sum(rows[name] for name in TABLES)
                counts["aggregated_events"] = good_rows - pairs
                rating_range = [1.0, float(train_stats["max"])]
            else:
                rating_range = [config.input.rating_min, config.input.rating_max]
            manifest = {
                "run_date": str(config.run_date),
                "input": {
                    "path": path,
                    "format": fmt,
                    "validation_path": config.input.validation_path if given else None,
                    "fingerprint": sources.fingerprint(
                        [path, config.input.validation_path if given else None]
                    ),
                    "implicit": implicit,
                    "columns": config.input.columns.model_dump(),
                    "has_timestamp": has_timestamp,
                    "has_weight": has_weight,
                    "id_types": {c: t.simpleString() for c, t in types.items()},
                    "max_bad_fraction": config.input.max_bad_fraction,
                },
                "split": config.split.model_dump(),
                "previous_index_date": previous_date,
                "users": users,
                "items": items,
                "counts": counts,
                "rating": train_stats,
                "rating_range": rating_range,
                "columns": feed_columns,
                "tables": {name: {"rows": rows[name]} for name in TABLES},
                "row_group_mb": settings.row_group_mb,
            }
            write_json(folder / "manifest.json", manifest)
    finally:
        for frame in cached:
            frame.unpersist()
    outputs = {name: str(final / name) for name in (*TABLES, "user_index", "item_index", RATED)}
    outputs["quarantine"] = str(final / "quarantine")
    outputs["manifest"] = str(final / "manifest.json")
    log.info(
        "prepared %d users, %d items: %d train, %d validation, %d cold-start, %d quarantined",
        users, items, counts["train"], counts["validation"], counts["cold_start"], bad_rows,
    )
    metrics = {"rating_mean": train_stats["mean"]}
    return {"outputs": outputs, "counts": counts, "metrics": metrics}
