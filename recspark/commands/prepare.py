"""prepare: check every row, index ids stably, split, and publish Parquet for training.

Reads ``input.*`` and writes ``prepared/RUN_DATE/`` (see :mod:`recspark.core.storage`): ``train``,
``validation`` and ``cold_start``, and ``test`` and ``test_cold_start`` with a test split
(``split.test_fraction``, or ``input.test_path`` for a given split) (``user_idx``, ``item_idx``,
``rating``, ``timestamp`` and ``weight`` when the input has one), ``user_index`` and
``item_index`` (raw id -> dense index),
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

This module is the wiring; the steps live in :mod:`recspark.data.inputs` (reading),
:mod:`recspark.data.checks` and :mod:`recspark.data.dedup` (row checks),
:mod:`recspark.data.quarantine` (the gate on bad rows) and :mod:`recspark.data.prepare` (split,
feed, manifest). Each receives the config sections it reads, picked out here.
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from recspark.commands.stage import Stage, StageResult
from recspark.core.config import Config, InputConfig
from recspark.core.constants import ITEM_ID, ITEM_IDX, TIMESTAMP, USER_ID, USER_IDX, WEIGHT
from recspark.core.location import Location
from recspark.core.s3_commit import staging_writer
from recspark.core.storage import Layout, parquet_rows, staged
from recspark.data.checks import cast_ids, check_rows, split_valid
from recspark.data.dedup import aggregate_events, mark_duplicates, mark_repeated_events
from recspark.data.indexing import apply_index, extend_index
from recspark.data.inputs import (
    SOURCE,
    header_setting,
    id_types,
    input_format,
    precheck_input,
    ratings_path,
    read_inputs,
    wanted_columns,
)
from recspark.data.prepare import (
    FEED_COLUMNS,
    INDEXES,
    PreparedCounts,
    PreviousMaps,
    ReadFacts,
    build_manifest,
    check_split,
    feed_files,
    flag_split,
    has_test_split,
    prepared_counts,
    previous_maps,
    rating_stats,
    split_table_names,
    split_tables,
    write_feed,
    write_index,
    write_rated,
)
from recspark.data.prepared import (
    ITEM_COUNTS,
    RATED,
    RatingStats,
    train_item_counts,
    write_manifest,
)
from recspark.data.quarantine import (
    QUARANTINE,
    RowCounts,
    count_rows,
    gate_bad_rows,
    write_quarantine,
)

log = logging.getLogger(__name__)

__all__ = ["STAGE", "precheck", "run"]


def precheck(config: Config) -> None:
    """The checks of the input that need no Spark (:func:`recspark.data.inputs.precheck_input`)."""
    settings = config.input
    precheck_input(
        ratings_path(settings, config.paths.root),
        settings.format,
        wanted_columns(settings),
        header=header_setting(settings.header),
        validation_path=settings.validation_path,
        split_method=config.split.method,
        test_path=settings.test_path,
    )


def _checked_rows(
    raw: DataFrame,
    settings: InputConfig,
    fmt: str,
    previous: PreviousMaps,
    delimiters: tuple[str, ...],
) -> tuple[DataFrame, dict[str, T.DataType]]:
    """Every row checked, its ids cast to the run's types and repeats marked; and those types."""
    checked = check_rows(raw, settings.rating_min, settings.rating_max, settings.max_id_length)
    types = id_types(settings.id_type, fmt, checked, previous.maps)
    checked = cast_ids(checked, types, delimiters)
    if settings.implicit:
        return mark_repeated_events(checked, TIMESTAMP in raw.columns), types
    return mark_duplicates(checked), types


def _write_tables(
    config: Config,
    folder: Location,
    tables: dict[str, DataFrame],
    *,
    good_rows: int,
    columns: list[str],
) -> dict[str, int]:
    """The split tables as feed files; return how many files each was written as."""
    files = feed_files(good_rows, config.prepare.rows_per_file)
    for name in tables:
        write_feed(
            tables[name],
            str(folder / name),
            files=files[name],
            row_group_mb=config.prepare.row_group_mb,
            seed=config.split.seed,
            columns=columns,
        )
    return files


def run(config: Config, spark: SparkSession) -> StageResult:
    """Prepare one run date; return the summary's ``outputs``, ``counts`` and ``metrics``."""
    layout = Layout(config.paths.root)
    settings = config.input
    path = ratings_path(settings, config.paths.root)
    fmt = input_format(path, settings.format)
    raw, delimiters = read_inputs(spark, settings, config.split.method, path, fmt)
    previous = previous_maps(spark, layout, config.run_date)
    checked, types = _checked_rows(raw, settings, fmt, previous, delimiters)
    read = ReadFacts(path, fmt, TIMESTAMP in raw.columns, WEIGHT in raw.columns, types)
    # Persisted because counting, indexing and the quarantine each read it; else the input is
    # parsed and sorted once per use.
    checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    cached = [checked]
    try:
        counts = count_rows(checked)
        good, bad = split_valid(checked)
        gate_bad_rows(
            counts,
            bad,
            max_bad_fraction=settings.max_bad_fraction,
            path=path,
            layout=layout,
            run_date=config.run_date,
            rows_per_file=config.prepare.rows_per_file,
        )
        if settings.implicit:
            good = aggregate_events(good, by=(SOURCE,))
        summary_counts, train_stats = _publish(
            config,
            spark,
            read=read,
            good=good,
            bad=bad,
            counts=counts,
            previous=previous,
            cached=cached,
        )
    finally:
        for frame in cached:
            frame.unpersist()
    final = layout.prepared(config.run_date)
    names = split_table_names(has_test_split(config.split, settings))
    outputs = {
        name: str(final / name) for name in (*names, *INDEXES, RATED, ITEM_COUNTS, QUARANTINE)
    }
    outputs["manifest"] = str(final / "manifest.json")
    log.info(
        "prepared %d users, %d items: %d train, %d validation, %d cold-start, %s test, "
        "%d quarantined",
        summary_counts.users,
        summary_counts.items,
        summary_counts.train,
        summary_counts.validation,
        summary_counts.cold_start,
        "no" if summary_counts.test is None else summary_counts.test,
        counts.bad,
    )
    return StageResult(
        outputs=outputs,
        counts=summary_counts.to_dict(),
        metrics={"rating_mean": train_stats.mean},
    )


def _index_and_split(
    config: Config, good: DataFrame, previous: PreviousMaps, *, columns: list[str]
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """The id maps extended with the new ids, and the indexed rows flagged for the split."""
    user_index = extend_index(good, USER_ID, USER_IDX, previous.maps.get(USER_ID))
    item_index = extend_index(good, ITEM_ID, ITEM_IDX, previous.maps.get(ITEM_ID))
    user_index = user_index.persist(StorageLevel.MEMORY_AND_DISK)
    item_index = item_index.persist(StorageLevel.MEMORY_AND_DISK)
    indexed = apply_index(
        apply_index(good, user_index, USER_ID, USER_IDX), item_index, ITEM_ID, ITEM_IDX
    )
    # Persisted so that the split tables are filters of one computed split.
    carve = config.split.method == "given" and not config.input.validation_path
    flagged = flag_split(indexed, config.split, columns, carve_validation=carve)
    flagged = flagged.persist(StorageLevel.MEMORY_AND_DISK)
    return user_index, item_index, flagged


def _publish(
    config: Config,
    spark: SparkSession,
    *,
    read: ReadFacts,
    good: DataFrame,
    bad: DataFrame,
    counts: RowCounts,
    previous: PreviousMaps,
    cached: list[DataFrame],
) -> tuple[PreparedCounts, RatingStats]:
    """Index, split and write the run date's tables and manifest into a staging folder that is
    published whole; the persisted frames are added to ``cached`` for the caller to release."""
    layout = Layout(config.paths.root)
    feed_columns = FEED_COLUMNS + ([WEIGHT] if read.has_weight else [])
    user_index, item_index, flagged = _index_and_split(config, good, previous, columns=feed_columns)
    cached += [user_index, item_index, flagged]
    has_test = has_test_split(config.split, config.input)
    tables = split_tables(flagged, has_test)
    final = layout.prepared(config.run_date)
    with staged(layout, final, f"prepared-{config.run_date}") as folder:
        for name, index in (("user_index", user_index), ("item_index", item_index)):
            write_index(
                index,
                str(folder / name),
                good_rows=counts.good,
                rows_per_file=config.prepare.rows_per_file,
            )
        write_quarantine(bad, folder, counts.bad, config.prepare.rows_per_file)
        files = _write_tables(config, folder, tables, good_rows=counts.good, columns=feed_columns)
        write_rated(user_index, flagged, str(folder / RATED), files=files["validation"])
        # Train ratings per item (item-sized): which items score, evaluate and recommend list.
        counts_path = str(folder / ITEM_COUNTS)
        staging_writer(train_item_counts(tables["train"]).coalesce(1), counts_path).parquet(
            counts_path
        )
        rows = {name: parquet_rows(folder / name) for name in (*tables, *INDEXES)}
        check_split(rows)
        train_stats = rating_stats(spark, str(folder / "train"))
        summary_counts = prepared_counts(rows, counts, previous.sizes, config.input.implicit)
        manifest = build_manifest(
            run_date=config.run_date,
            settings=config.input,
            split=config.split,
            row_group_mb=config.prepare.row_group_mb,
            read=read,
            previous_date=previous.date,
            counts=summary_counts,
            rows=rows,
            train_stats=train_stats,
            feed_columns=feed_columns,
        )
        write_manifest(folder, manifest)
    return summary_counts, train_stats


STAGE = Stage(
    name="prepare",
    purpose="Check, index and split a ratings table into Parquet for training.",
    sections=("paths", "run_date", "input", "split", "prepare", "spark"),
    example="recspark prepare --config conf/movielens-100k.yaml --set split.method=chronological",
    run=run,
    precheck=precheck,
)
