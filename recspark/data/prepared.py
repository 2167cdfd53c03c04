"""The tables a prepared run holds, as the later stages read them.

``prepare`` publishes ``prepared/<run_date>/``: the splits (``train/``, ``validation/``,
``cold_start/``, and ``test/`` and ``test_cold_start/`` when the run holds out a test split, which
only evaluate and the nightly gate read), the id maps (``user_index/``, ``item_index/``), the
quarantine, ``rated/`` (one row per user of the id map with every item it rated, sorted: what
``score`` excludes and its list of users), ``item_counts/`` (train ratings per item index: which
items may be listed) and ``manifest.json``. This module names them and reads them in one place; the
manifest is :class:`PreparedRun`, written by :func:`write_manifest` and read by
:func:`read_manifest`.
"""

from __future__ import annotations

import logging
from functools import reduce
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core import parquet_safety
from recspark.core.constants import ITEM_IDX, ITEMS, USER_ID, USER_IDX
from recspark.core.errors import BadInputError, MissingInputError
from recspark.core.location import Location
from recspark.core.storage import (
    Layout,
    parquet_files,
    parquet_rows,
    read_json,
    read_parquet,
    write_json,
)

log = logging.getLogger(__name__)

RATED_SPLITS = ("train", "validation", "cold_start", "test", "test_cold_start")
RATED = "rated"  # prepare's (user_idx, items) table: every item of RATED_SPLITS per user
ITEM_COUNTS = "item_counts"  # prepare's (item_idx, train_ratings) table, one row per rated item
TRAIN_RATINGS = "train_ratings"
MANIFEST = "manifest.json"
VALIDATION = "validation"
TEST = "test"


def cold_start_table(split: str) -> str:
    """The table of ``split``'s rows whose user or item is not in train: ``cold_start`` for
    validation, ``test_cold_start`` for test."""
    return "cold_start" if split == VALIDATION else f"{split}_cold_start"


class _Read(BaseModel):
    # Read back from disk: keys of other versions are ignored, keys this one lacks default.
    model_config = ConfigDict(extra="ignore", frozen=True)


class PreparedInput(_Read):
    """Where the ratings came from and how they were read."""

    path: str | None = None
    format: str | None = None
    validation_path: str | None = None  # split.method: given
    test_path: str | None = None  # split.method: given
    fingerprint: str | None = None  # :func:`recspark.data.sources.fingerprint` of the input files
    implicit: bool = False
    columns: dict[str, str | None] = Field(default_factory=dict)  # input.columns
    has_timestamp: bool | None = None
    has_weight: bool | None = None
    id_types: dict[str, str] = Field(default_factory=dict)  # Spark type of user_id and item_id
    max_bad_fraction: float | None = None


class RatingStats(_Read):
    """Rating min, max and mean of the train split."""

    min: float | None = None
    max: float | None = None
    mean: float | None = None


class TableFacts(_Read):
    rows: int


class PreparedRun(_Read):
    """A prepared run's ``manifest.json``: what ``prepare`` hands ``train`` and the later stages.

    Table sizes (``users``, ``items``) are the id maps' and size the model's tables.
    """

    run_date: str
    users: int = Field(ge=0)
    items: int = Field(ge=0)
    rating_range: tuple[float, float]  # the scale the model's predictions are bounded to
    input: PreparedInput = Field(default_factory=PreparedInput)
    split: dict[str, Any] = Field(default_factory=dict)  # split.* as prepare ran it
    previous_index_date: str | None = None  # the run whose id maps these extend
    # prepare's summary counts (users, items, new_users, input_rows, the splits, quarantined,
    # quarantined_by_reason, and aggregated_events for implicit input).
    counts: dict[str, int | dict[str, int]] = Field(default_factory=dict)
    rating: RatingStats = Field(default_factory=RatingStats)
    columns: list[str] = Field(default_factory=list)  # the split tables' columns
    tables: dict[str, TableFacts] = Field(default_factory=dict)
    row_group_mb: int | None = None

    @property
    def has_test(self) -> bool:
        """Whether the run holds out a test split (runs prepared before there was one do not)."""
        return TEST in self.tables

    @property
    def evaluation_split(self) -> str:
        """The split ``evaluate`` and the nightly gate report on: ``test`` when the run has one,
        else ``validation`` (the split that also chose the model)."""
        return TEST if self.has_test else VALIDATION


def write_manifest(folder: Location, manifest: PreparedRun) -> Location:
    """Write ``manifest.json`` into a prepared run's (staging) ``folder``; return its path.

    Only the fields that were given are written, so the file holds what ``prepare`` said.
    """
    path = folder / MANIFEST
    write_json(path, manifest.model_dump(mode="json", exclude_unset=True))
    return path


def read_manifest(layout: Layout, run_date) -> PreparedRun:
    """The prepared run's ``manifest.json``; a clear error when prepare has not run.

    Raises
    ------
    MissingInputError
        When ``run_date`` was not prepared under ``layout``.
    BadInputError
        When its manifest is not one ``prepare`` wrote.
    """
    path = layout.prepared(run_date) / MANIFEST
    if not path.exists():
        raise MissingInputError(
            f"no prepared data for run_date {run_date} under {layout.root}: run `recspark prepare` "
            "with the same paths.root and run_date first"
        )
    return _load_manifest(path, run_date)


def evaluation_split(prepared: Location) -> str:
    """The split ``evaluate`` measures a prepared run on: its manifest's
    :attr:`PreparedRun.evaluation_split`, or for a run without a manifest whether it holds a
    ``test/`` table.

    Raises
    ------
    MissingInputError
        When that split's table is gone from the run.
    """
    path = prepared / MANIFEST
    if path.exists():
        split = _load_manifest(path, prepared.name).evaluation_split
    else:
        split = TEST if (prepared / TEST).exists() else VALIDATION
    if not (prepared / split).exists():
        raise MissingInputError(
            f"the prepared run {prepared} has no {split}/ table, which its manifest lists: re-run "
            "`recspark prepare` for that date"
        )
    return split


def _load_manifest(path: Location, run_date) -> PreparedRun:
    """``manifest.json`` at ``path`` as :class:`PreparedRun`; a clear error when it is not one."""
    try:
        return PreparedRun.model_validate(read_json(path))
    except (ValidationError, ValueError) as error:
        detail = (
            "; ".join(
                f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
                for problem in error.errors()[:3]
            )
            if isinstance(error, ValidationError)
            else str(error)
        )
        raise BadInputError(
            f"{path} is not a prepared run's manifest ({detail}): re-run `recspark prepare` for "
            f"{run_date}"
        ) from None


def rated_lists(pairs: DataFrame) -> DataFrame:
    """``(user_idx, items)``: each user's rated items as one array, from ``(user_idx, item_idx)``.

    One shuffle of the pairs; a user with no pair has no row.
    """
    return pairs.groupBy(F.col(USER_IDX).cast("int").alias(USER_IDX)).agg(
        F.sort_array(F.collect_list(F.col(ITEM_IDX).cast("int"))).alias(ITEMS)
    )


def rated_by_every_user(user_index: DataFrame, pairs: DataFrame) -> DataFrame:
    """``(user_idx, user_id, items)``: one row for every user of the id map ``user_index``.

    ``items`` holds the user's rated items of ``pairs`` (``(user_idx, item_idx)``), sorted, and is
    empty for a user with none. ``prepare`` writes this table once per run (``rated/``): the score
    job reads it as its list of users to score, with what each one has already rated, instead of
    regrouping every rating and joining it to the model's users at each run.
    """
    return (
        user_index.select(F.col(USER_IDX).cast("int").alias(USER_IDX), USER_ID)
        .join(rated_lists(pairs), USER_IDX, "left")
        .select(
            USER_IDX, USER_ID, F.coalesce(F.col(ITEMS), F.array().cast("array<int>")).alias(ITEMS)
        )
    )


def seen_items(ratings: DataFrame, user_col: str = USER_IDX, item_col: str = ITEM_IDX) -> DataFrame:
    """``(user_idx, item_idx)`` pairs of ``ratings``: what :func:`recommend_all` excludes."""
    return ratings.select(
        F.col(user_col).cast("int").alias(USER_IDX), F.col(item_col).cast("int").alias(ITEM_IDX)
    )


def item_rating_counts(train: DataFrame, n_items: int, item_col: str = ITEM_IDX) -> np.ndarray:
    """Training ratings per item index, as an array of length ``n_items``.

    One aggregation in Spark; only its item-sized result comes to the driver.

    Raises
    ------
    ValueError
        When ``train`` has no ``item_col`` column.
    BadInputError
        When an item index of ``train`` is outside ``[0, n_items)``: the split is not the model's.
    """
    if item_col not in train.columns:
        raise ValueError(f"train lacks column {item_col!r}; it has {train.columns}")
    # pyspark's stubs type toPandas() as a protocol that cannot be indexed; it is a pandas frame.
    counts = cast(pd.DataFrame, train.groupBy(item_col).count().toPandas())
    index = counts[item_col].to_numpy(dtype=np.int64)
    return _counts_array(index, counts["count"].to_numpy(), n_items)


def eligible_items(
    train: DataFrame, n_items: int, min_item_ratings: int, item_col: str = ITEM_IDX
) -> np.ndarray:
    """Which items may be recommended: those with at least ``min_item_ratings`` training ratings.

    The rows of rarer items have barely moved from their random start. ``score``, ``evaluate``
    and ``recommend`` all take their candidates from this mask (``score.min_item_ratings``), over
    the train split of the model's prepared run, so their lists agree. At 0 every item is
    eligible and ``train`` is not read.
    """
    if min_item_ratings <= 0:
        return np.ones(n_items, dtype=bool)
    return item_rating_counts(train, n_items, item_col) >= min_item_ratings


def train_item_counts(train: DataFrame) -> DataFrame:
    """``(item_idx, train_ratings)``: the train split's ratings per item, one row per item it
    holds. ``prepare`` writes it once per run (``item_counts/``), so that ``score``, ``evaluate``
    and ``recommend`` read an item-sized table instead of aggregating every rating again."""
    return train.groupBy(F.col(ITEM_IDX).cast("int").alias(ITEM_IDX)).agg(
        F.count(F.lit(1)).alias(TRAIN_RATINGS)
    )


def eligible_in_run(
    spark: SparkSession, prepared: Path | Location, n_items: int, min_item_ratings: int
) -> np.ndarray:
    """:func:`eligible_items` over the prepared run's train split: from its ``item_counts/``
    table (item-sized, read on the driver) when ``prepare`` wrote one, else by aggregating
    ``train/`` in Spark (runs prepared before the table existed)."""
    if min_item_ratings <= 0:
        return np.ones(n_items, dtype=bool)
    folder = Location(prepared) / ITEM_COUNTS
    if not (folder / "_SUCCESS").exists():
        train = spark.read.parquet(str(Location(prepared) / "train"))
        return eligible_items(train, n_items, min_item_ratings)
    table = read_parquet(folder, columns=[ITEM_IDX, TRAIN_RATINGS])
    index = table.column(ITEM_IDX).to_numpy().astype(np.int64)
    return _counts_array(index, table.column(TRAIN_RATINGS).to_numpy(), n_items) >= min_item_ratings


def _counts_array(index: np.ndarray, counts: np.ndarray, n_items: int) -> np.ndarray:
    """One count per item index from ``(index, count)`` pairs; items absent count 0.

    Raises
    ------
    BadInputError
        When an index is outside ``[0, n_items)``: the split is not the model's.
    """
    if len(index) and (index.min() < 0 or index.max() >= n_items):
        raise BadInputError(
            f"the train split has item indices outside the model's {n_items} items: the model and "
            "the prepared run disagree; re-run train on this prepared run"
        )
    out = np.zeros(n_items, dtype=np.int64)
    out[index] = counts
    return out


def rated(spark: SparkSession, prepared: Path | Location, names=RATED_SPLITS) -> DataFrame:
    """``(user_idx, item_idx)`` of every rating in the prepared run's splits (of ``names``, those
    the run has: a run without a test split has no ``test/``)."""
    frames = [
        spark.read.parquet(str(prepared / name)).select(USER_IDX, ITEM_IDX)
        for name in names
        if name in ("train", VALIDATION) or (prepared / name).exists()
    ]
    return reduce(DataFrame.unionByName, frames)


def rated_by_user(spark: SparkSession, prepared: Path | Location) -> DataFrame:
    """``(user_idx, items)``: every item each user rated, as ``prepare`` wrote it (``rated/``).

    A prepared run from before ``rated/`` existed is regrouped from its splits (one shuffle).
    """
    folder = prepared / RATED
    if (folder / "_SUCCESS").exists() or any(folder.glob("*.parquet")):
        return spark.read.parquet(str(folder)).select(USER_IDX, ITEMS)
    log.info("%s has no %s/ table: grouping the rated items of its splits", prepared, RATED)
    return rated_lists(rated(spark, prepared))


# The tables of a prepared run that pyarrow reads (the trainer's feed, the id maps, the rated
# lists); the others are read by Spark's own reader alone.
PYARROW_TABLES = ("train", "validation", "user_index", "item_index", RATED, ITEM_COUNTS)


def check_tables(prepared: Path | Location, names: tuple[str, ...] = PYARROW_TABLES) -> None:
    """Refuse a prepared run with a file that pyarrow must not open, before any row is read.

    A prepared run lies under ``paths.root``, where others may write: every file that a Parquet
    reader would take from these tables (``_*`` and ``.*`` aside) is checked by its footer
    (:func:`recspark.core.parquet_safety.check_parquet_folder`).

    Raises
    ------
    BadInputError
        Naming the file and the column.
    """
    for name in names:
        parquet_safety.check_parquet_folder(Location(prepared) / name)


def lists_every_user(prepared: Path | Location, users: int) -> bool:
    """Whether ``prepared/rated/`` has one row per user of the id map, with its raw id: the list
    of users to score as it lies. (Runs prepared before it did need the model's user table.)"""
    folder = prepared / RATED
    files = parquet_files(folder) if (folder / "_SUCCESS").exists() else []
    if not files:
        return False
    names = parquet_safety.read_schema(files[0]).names
    return USER_ID in names and parquet_rows(folder) == users
