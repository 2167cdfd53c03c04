"""The steps of the prepare job after the rows are checked: the split flags and tables, the feed
Petastorm reads, the previous run's id maps that keep indices stable, and the manifest with its
counts. ``recspark.commands.prepare`` calls them in order; reading the input is
:mod:`recspark.data.inputs` and the gate on bad rows :mod:`recspark.data.quarantine`.

Steps receive the config sections they read (``split``, ``input``), never the whole config.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.config import InputConfig, SplitConfig
from recspark.core.constants import ITEM_ID, ITEM_IDX, RATING, TIMESTAMP, USER_ID, USER_IDX
from recspark.core.errors import BadInputError
from recspark.core.s3_commit import staging_writer
from recspark.core.storage import Layout, latest_date
from recspark.data.indexing import check_index
from recspark.data.inputs import SOURCE
from recspark.data.listing import fingerprint
from recspark.data.prepared import (
    PreparedInput,
    PreparedRun,
    RatingStats,
    TableFacts,
    rated_by_every_user,
)
from recspark.data.quarantine import RowCounts
from recspark.data.splitting import (
    COLD_START_FLAG,
    TEST_FLAG,
    VALIDATION_FLAG,
    flag_cold_start,
    flag_holdouts,
)

log = logging.getLogger(__name__)

FEED_COLUMNS = [USER_IDX, ITEM_IDX, RATING, TIMESTAMP]
TABLES = ("train", "validation", "cold_start")
# Written when the run has a test split (split.test_fraction, or input.test_path when given):
# the test rows whose user and item are in train, and the rest, apart as cold_start is.
TEST_TABLES = ("test", "test_cold_start")
INDEXES = ("user_index", "item_index")


def has_test_split(split: SplitConfig, settings: InputConfig) -> bool:
    """Whether ``split`` and ``input`` hold out a test split (read by evaluate and the gate)."""
    if split.method == "given":
        return bool(settings.test_path)
    return split.test_fraction > 0


def split_table_names(has_test: bool) -> tuple[str, ...]:
    """The split tables a run writes: :data:`TABLES`, and :data:`TEST_TABLES` with a test split."""
    return TABLES + TEST_TABLES if has_test else TABLES


def flag_split(
    indexed: DataFrame, split: SplitConfig, columns: list[str], *, carve_validation: bool = False
) -> DataFrame:
    """``columns`` of the indexed good rows with the validation, test and cold-start flags.

    A given split (``split.method: given``) keeps each row where it came from (``source``); with
    ``carve_validation`` (a given test table and no validation table) validation is drawn from
    the input's rows, user_stratified with ``split.validation_fraction`` and ``split.seed``. The
    others draw from a hash of the raw ids, so a rating's side of the split does not depend on
    the id maps.
    """
    if split.method == "given":
        flagged = _given_split(indexed, split, carve_validation)
    else:
        flagged = flag_holdouts(
            indexed,
            split.method,
            split.validation_fraction,
            split.seed,
            split.test_fraction,
            user_col=USER_ID,
            item_col=ITEM_ID,
        )
    return flag_cold_start(flagged.select(*columns, VALIDATION_FLAG, TEST_FLAG))


def _given_split(indexed: DataFrame, split: SplitConfig, carve_validation: bool) -> DataFrame:
    """The flags of a given split: each row's ``source``, or a validation part carved per user
    from the input's rows (see :func:`flag_split`)."""
    source = F.col(SOURCE)
    if not carve_validation:
        return indexed.withColumn(VALIDATION_FLAG, source == "validation").withColumn(
            TEST_FLAG, source == "test"
        )
    carved = flag_holdouts(
        indexed.where(source == "input"),
        "user_stratified",
        split.validation_fraction,
        split.seed,
        user_col=USER_ID,
        item_col=ITEM_ID,
    )
    given = indexed.where(source != "input").withColumn(VALIDATION_FLAG, F.lit(False))
    return carved.unionByName(given.withColumn(TEST_FLAG, source == "test"))


def split_tables(flagged: DataFrame, has_test: bool = False) -> dict[str, DataFrame]:
    """The tables of :func:`split_table_names` as filters of :func:`flag_split`'s rows.

    ``cold_start`` holds validation's rows whose user or item is not in train, and
    ``test_cold_start`` test's: each held-out split's cold rows stay apart from it, so a figure
    is never measured on rows the model could not have learned.
    """
    validation, test, cold = (F.col(c) for c in (VALIDATION_FLAG, TEST_FLAG, COLD_START_FLAG))
    tables = {
        "train": flagged.where(~validation & ~test),
        "validation": flagged.where(validation & ~cold),
        "cold_start": flagged.where(validation & cold),
    }
    if has_test:
        tables.update(test=flagged.where(test & ~cold), test_cold_start=flagged.where(test & cold))
    return tables


def feed_files(good_rows: int, rows_per_file: int) -> dict[str, int]:
    """How many Parquet files each split table is written as."""
    files = max(4, math.ceil(good_rows / rows_per_file))
    held_out = max(2, files // 4)
    return {
        "train": files,
        "validation": held_out,
        "cold_start": 1,
        "test": held_out,
        "test_cold_start": 1,
    }


def table_files(rows: int, rows_per_file: int) -> int:
    """Files for a table of at most ``rows`` rows: one per ``rows_per_file`` rows, at least one.

    The id maps and the quarantine are written this way rather than as one file per shuffle
    partition (``spark.sql.shuffle.partitions``, 200 by default): on an object store every file
    costs a dozen requests to write, commit and publish, and a map of a few thousand ids is one
    small file.
    """
    return max(1, math.ceil(rows / rows_per_file))


def write_index(index: DataFrame, path: str, *, good_rows: int, rows_per_file: int) -> None:
    """An id map as Parquet, :func:`table_files` files for ``good_rows`` rows (a map has no more
    ids than rows); ``coalesce``, as the map is persisted and small beside the rows."""
    files = table_files(good_rows, rows_per_file)
    staging_writer(index.coalesce(files), path).parquet(path)


def write_rated(user_index: DataFrame, flagged: DataFrame, path: str, *, files: int) -> None:
    """``rated/``: every user of the id map with every item it rated in any split, one array per
    user, in ``files`` files grouped and sorted by user: the users ``score`` scores and what it
    leaves out, grouped once here instead of reshuffling every rating at each scoring run."""
    rated = (
        rated_by_every_user(user_index, flagged)
        .repartition(files, USER_IDX)
        .sortWithinPartitions(USER_IDX)
    )
    staging_writer(rated, path).parquet(path)


def check_split(rows: dict[str, int]) -> None:
    """Fail when the split left train or validation (or a test split it was asked for) empty."""
    if rows["train"] == 0 or rows["validation"] == 0:
        raise BadInputError(
            f"the split left train with {rows['train']} and validation with "
            f"{rows['validation']} rows (and {rows['cold_start']} cold-start rows): give "
            "more data or change split.*"
        )
    if rows.get("test") == 0:
        raise BadInputError(
            f"the split left test empty (and {rows['test_cold_start']} cold-start test rows): "
            "give more data, raise split.test_fraction or check input.test_path"
        )


@dataclass(frozen=True)
class PreparedCounts:
    """The summary's (and the manifest's) ``counts``: id map sizes, rows read, split and
    quarantined, in the order the summary line has always listed them."""

    users: int
    items: int
    new_users: int
    new_items: int
    input_rows: int
    train: int
    validation: int
    cold_start: int
    quarantined: int
    quarantined_by_reason: dict[str, int]
    aggregated_events: int | None = None  # implicit input only: events folded into pairs
    test: int | None = None  # with a test split only
    test_cold_start: int | None = None

    def to_dict(self) -> dict[str, int | dict[str, int]]:
        """The counts as the summary line and ``manifest.json`` hold them."""
        counts: dict[str, int | dict[str, int]] = {
            "users": self.users,
            "items": self.items,
            "new_users": self.new_users,
            "new_items": self.new_items,
            "input_rows": self.input_rows,
            "train": self.train,
            "validation": self.validation,
            "cold_start": self.cold_start,
        }
        if self.test is not None:
            counts.update(test=self.test, test_cold_start=self.test_cold_start or 0)
        counts |= {
            "quarantined": self.quarantined,
            "quarantined_by_reason": self.quarantined_by_reason,
        }
        if self.aggregated_events is not None:
            counts["aggregated_events"] = self.aggregated_events
        return counts


def prepared_counts(
    rows: dict[str, int], counts: RowCounts, previous_sizes: dict[str, int], implicit: bool
) -> PreparedCounts:
    """The prepared run's counts from the written tables' row counts and the rows' reasons."""
    users, items = rows["user_index"], rows["item_index"]
    return PreparedCounts(
        users=users,
        items=items,
        new_users=users - previous_sizes.get(USER_ID, 0),
        new_items=items - previous_sizes.get(ITEM_ID, 0),
        input_rows=counts.total,
        train=rows["train"],
        validation=rows["validation"],
        cold_start=rows["cold_start"],
        quarantined=counts.bad,
        quarantined_by_reason=counts.by_reason,
        aggregated_events=(
            counts.good - sum(rows.get(name, 0) for name in TABLES + TEST_TABLES)
            if implicit
            else None
        ),
        test=rows.get("test"),
        test_cold_start=rows.get("test_cold_start"),
    )


def rating_range(
    implicit: bool, train_stats: RatingStats, rating_min: float, rating_max: float
) -> tuple[float, float]:
    """The scale predictions are bounded to: the input's range, or 1..max count for implicit."""
    if implicit:
        assert train_stats.max is not None, "the split was checked: train has rows"
        return (1.0, float(train_stats.max))
    return (rating_min, rating_max)


class ReadFacts(NamedTuple):
    """What prepare found out reading the input, for the manifest."""

    path: str
    format: str
    has_timestamp: bool
    has_weight: bool
    id_types: dict[str, T.DataType]


def build_manifest(
    *,
    run_date: dt.date,
    settings: InputConfig,
    split: SplitConfig,
    row_group_mb: int,
    read: ReadFacts,
    previous_date: str | None,
    counts: PreparedCounts,
    rows: dict[str, int],
    train_stats: RatingStats,
    feed_columns: list[str],
) -> PreparedRun:
    """The prepared run's ``manifest.json``: what was read, how, and what was written.

    Parameters
    ----------
    run_date, row_group_mb
        ``run_date`` and ``prepare.row_group_mb``.
    settings, split
        The ``input`` and ``split`` sections the run was prepared with.
    read
        The input's path, format and columns as read.
    previous_date
        The run whose id maps these extend, if any.
    counts, rows, train_stats, feed_columns
        What was written: the counts, every table's rows, the train ratings' statistics and the
        split tables' columns.
    """
    given = split.method == "given"
    validation_path = settings.validation_path if given else None
    test_path = settings.test_path if given else None
    return PreparedRun(
        run_date=str(run_date),
        input=PreparedInput(
            path=read.path,
            format=read.format,
            validation_path=validation_path,
            test_path=test_path,
            fingerprint=fingerprint([read.path, validation_path, test_path]),
            implicit=settings.implicit,
            columns=settings.columns.model_dump(),
            has_timestamp=read.has_timestamp,
            has_weight=read.has_weight,
            id_types={column: t.simpleString() for column, t in read.id_types.items()},
            max_bad_fraction=settings.max_bad_fraction,
        ),
        split=split.model_dump(),
        previous_index_date=previous_date,
        users=rows["user_index"],
        items=rows["item_index"],
        counts=counts.to_dict(),
        rating=train_stats,
        rating_range=rating_range(
            settings.implicit, train_stats, settings.rating_min, settings.rating_max
        ),
        columns=feed_columns,
        tables={name: TableFacts(rows=rows[name]) for name in TABLES + TEST_TABLES if name in rows},
        row_group_mb=row_group_mb,
    )


def write_feed(
    frame: DataFrame,
    path: str,
    *,
    files: int,
    row_group_mb: int,
    seed: int,
    columns: list[str],
) -> None:
    """Parquet that petastorm's ``make_batch_reader`` reads: flat numeric columns, sized row groups.

    Rows are laid out in an order fixed by a hash of (user, item, seed): the same data gives the
    same files, and a row group holds a mix of users and items rather than one user's block, so
    shuffling row groups plus a small buffer is enough for SGD.
    """
    order = F.xxhash64(F.col(USER_IDX), F.col(ITEM_IDX), F.lit(seed))
    ordered = (
        frame.select(*columns)
        .withColumn("_order", order)
        .repartition(files, "_order")
        .sortWithinPartitions("_order", USER_IDX, ITEM_IDX)
        .drop("_order")
    )
    staging_writer(ordered, path).option("parquet.block.size", row_group_mb << 20).parquet(path)


def rating_stats(spark: SparkSession, path: str) -> RatingStats:
    """Rating min/max/mean of a written table (one small aggregate)."""
    row = (
        spark.read.parquet(path)
        .agg(F.min(RATING).alias("min"), F.max(RATING).alias("max"), F.mean(RATING).alias("mean"))
        .first()
    )
    assert row is not None  # a global aggregate has one row
    return RatingStats(min=row["min"], max=row["max"], mean=row["mean"])


class PreviousMaps(NamedTuple):
    """The latest published id maps before a run date, and their sizes."""

    date: str | None  # None when no earlier run was prepared
    maps: dict[str, DataFrame]  # user_id/item_id -> the id map
    sizes: dict[str, int]  # user_id/item_id -> its number of ids


def previous_maps(spark: SparkSession, layout: Layout, run_date: dt.date) -> PreviousMaps:
    """The latest published id maps before ``run_date``, checked, and their sizes."""
    date = latest_date(layout.root / "prepared", before=run_date)
    if date is None:
        return PreviousMaps(None, {}, {})
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
    return PreviousMaps(date, maps, sizes)
