"""prepare: check every row, index ids stably, split, and publish Parquet for training.

Reads ``input.*`` and writes ``prepared/RUN_DATE/`` (see :mod:`recspark.core.storage`): ``train``,
``validation`` and ``cold_start`` (``user_idx``, ``item_idx``, ``rating``, ``timestamp`` and
``weight`` when the input has one), ``user_index`` and ``item_index`` (raw id -> dense index),
``rated`` (``user_idx``, ``user_id``, ``items``: one row per user of the id map with every item
it rated in any split, empty when none: the users ``score`` scores and what it leaves out),
``quarantine`` (every rejected row with its ``reason``) and ``manifest.json``. When the quarantined
fraction of the input exceeds ``input.max_bad_fraction`` the job fails: only the quarantine is
published, to ``prepared/_rejected/RUN_DATE/quarantine``, and the date's earlier prepared run stays.
Any later failure discards the staging folder, so a prepared date is whole or absent.

:func:`precheck` runs before Spark starts (the CLI calls it): a missing, empty or misread input
fails in a second instead of after the JVM's start.

With ``input.implicit`` the input is a table of (user, item) events or counts with no rating:
the events of a pair become one row whose ``rating`` is the number of events and whose ``weight``
is the sum of ``input.columns.weight`` over them (when configured).

This module is the wiring; the steps live in :mod:`recspark.data.prepare`.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.constants import ITEM_ID, ITEM_IDX, TIMESTAMP, USER_ID, USER_IDX, WEIGHT
from recspark.core.storage import Layout, parquet_rows, staged
from recspark.data import sources
from recspark.data.indexing import apply_index, extend_index
from recspark.data.prepare import (
    FEED_COLUMNS,
    INDEXES,
    QUARANTINE,
    SOURCE,
    TABLES,
    build_manifest,
    check_split,
    count_rows,
    feed_files,
    flag_split,
    gate_bad_rows,
    header_setting,
    id_types,
    input_format,
    input_path,
    mark_repeats,
    precheck_input,
    prepared_counts,
    previous_maps,
    rating_stats,
    read_inputs,
    split_tables,
    wanted_columns,
    write_feed,
    write_quarantine,
)
from recspark.data.prepared import RATED, rated_by_every_user, write_manifest

log = logging.getLogger(__name__)


def precheck(config: Config) -> None:
    """The checks of the input that need no Spark (:func:`recspark.data.prepare.precheck_input`)."""
    precheck_input(
        input_path(config),
        config.input.format,
        wanted_columns(config),
        header_setting(config.input.header),
        config.input.validation_path,
        config.split.method,
    )


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    """Prepare one run date; return the summary's ``outputs``, ``counts`` and ``metrics``."""
    layout = Layout(config.paths.root)
    settings, split = config.input, config.split
    path = input_path(config)
    fmt = input_format(path, settings.format)
    raw, delimiters = read_inputs(spark, config, path, fmt)
    has_timestamp, has_weight = TIMESTAMP in raw.columns, WEIGHT in raw.columns
    checked = sources.check_rows(
        raw, settings.rating_min, settings.rating_max, settings.max_id_length
    )
    previous_date, previous, previous_sizes = previous_maps(spark, layout, config.run_date)
    types = id_types(config, fmt, checked, previous)
    checked = sources.cast_ids(checked, types, delimiters)
    checked = mark_repeats(checked, settings.implicit, has_timestamp)
    # Persisted because counting, indexing and the quarantine each read it; else the input is
    # parsed and sorted once per use.
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    cached = [checked]
    try:
        counts = count_rows(checked)
        good, bad = sources.split_valid(checked)
        gate_bad_rows(counts, bad, settings.max_bad_fraction, path, layout, config.run_date,
                      config.prepare.rows_per_file)
        if settings.implicit:
            good = sources.aggregate_events(good, by=(SOURCE,))

        user_index = extend_index(good, USER_ID, USER_IDX, previous.get(USER_ID))
        item_index = extend_index(good, ITEM_ID, ITEM_IDX, previous.get(ITEM_ID))
        user_index = user_index.persist(StorageLevel.MEMORY_AND_DISK)
        item_index = item_index.persist(StorageLevel.MEMORY_AND_DISK)
        cached += [user_index, item_index]
        indexed = apply_index(
            apply_index(good, user_index, USER_ID, USER_IDX), item_index, ITEM_ID, ITEM_IDX
        )
        feed_columns = FEED_COLUMNS + ([WEIGHT] if has_weight else [])
        flagged = flag_split(indexed, split.method == "given", split.method,
                             split.validation_fraction, split.seed, feed_columns)
        # Persisted so that the three tables below are filters of one computed split.
        flagged = flagged.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(flagged)
        tables = split_tables(flagged)

        final = layout.prepared(config.run_date)
        row_group_mb = config.prepare.row_group_mb
        with staged(layout, final, f"prepared-{config.run_date}") as folder:
            user_index.write.parquet(str(folder / "user_index"))
            item_index.write.parquet(str(folder / "item_index"))
            write_quarantine(bad, folder, counts.bad, config.prepare.rows_per_file)
            files = feed_files(counts.good, config.prepare.rows_per_file)
            for name in TABLES:
                write_feed(tables[name], str(folder / name), files[name], row_group_mb,
                           split.seed, feed_columns)
            # Every user of the id map with every item it rated, one array per user: the users
            # `score` scores and what it leaves out, grouped once here instead of reshuffling
            # every rating at each scoring run.
            rated_by_every_user(user_index, flagged).repartition(
                files["validation"], USER_IDX
            ).sortWithinPartitions(USER_IDX).write.parquet(str(folder / RATED))
            rows = {name: parquet_rows(folder / name) for name in (*TABLES, *INDEXES)}
            check_split(rows)
            train_stats = rating_stats(spark, str(folder / "train"))
            summary_counts = prepared_counts(rows, counts, previous_sizes, settings.implicit)
            write_manifest(folder, build_manifest(
                config, path, fmt, has_timestamp, has_weight, types, previous_date,
                summary_counts, rows, train_stats, feed_columns,
            ))
    finally:
        for frame in cached:
            frame.unpersist()
    outputs = {name: str(final / name) for name in (*TABLES, *INDEXES, RATED, QUARANTINE)}
    outputs["manifest"] = str(final / "manifest.json")
    log.info(
        "prepared %d users, %d items: %d train, %d validation, %d cold-start, %d quarantined",
        rows["user_index"], rows["item_index"], rows["train"], rows["validation"],
        rows["cold_start"], counts.bad,
    )
    return {"outputs": outputs, "counts": summary_counts,
            "metrics": {"rating_mean": train_stats["mean"]}}
