"""The tables a prepared run holds, as the later stages read them.

``prepare`` publishes ``prepared/<run_date>/``: the splits (``train/``, ``validation/``,
``cold_start/``), the id maps (``user_index/``, ``item_index/``), the quarantine, ``rated/`` (one row
per user of the id map with every item it rated, sorted: what ``score`` excludes and its list of
users) and ``manifest.json``. This module names them and reads them in one place.
"""

from __future__ import annotations

import logging
from functools import reduce
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.constants import ITEM_IDX, ITEMS, USER_ID, USER_IDX
from recspark.core.errors import MissingInputError
from recspark.core.storage import Layout, parquet_rows, read_json

log = logging.getLogger(__name__)

RATED_SPLITS = ("train", "validation", "cold_start")
RATED = "rated"  # prepare's (user_idx, items) table: every item of RATED_SPLITS per user


def read_manifest(layout: Layout, run_date) -> dict[str, Any]:
    """The prepared run's ``manifest.json``; a clear error when prepare has not run."""
    path = layout.prepared(run_date) / "manifest.json"
    if not path.exists():
        raise MissingInputError(
            f"no prepared data for run_date {run_date} under {layout.root}: run `recspark prepare` "
            "with the same paths.root and run_date first"
        )
    return read_json(path)


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
    return user_index.select(F.col(USER_IDX).cast("int").alias(USER_IDX), USER_ID).join(
        rated_lists(pairs), USER_IDX, "left"
    ).select(
        USER_IDX, USER_ID, F.coalesce(F.col(ITEMS), F.array().cast("array<int>")).alias(ITEMS)
    )


def seen_items(ratings: DataFrame, user_col: str = USER_IDX, item_col: str = ITEM_IDX) -> DataFrame:
    """``(user_idx, item_idx)`` pairs of ``ratings``: what :func:`recommend_all` excludes."""
    return ratings.select(
        F.col(user_col).cast("int").alias(USER_IDX), F.col(item_col).cast("int").alias(ITEM_IDX)
    )


def rated(spark: SparkSession, prepared: Path, names=RATED_SPLITS) -> DataFrame:
    """``(user_idx, item_idx)`` of every rating in the prepared run's splits."""
    frames = [spark.read.parquet(str(prepared / name)).select(USER_IDX, ITEM_IDX) for name in names]
    return reduce(DataFrame.unionByName, frames)


def rated_by_user(spark: SparkSession, prepared: Path) -> DataFrame:
    """``(user_idx, items)``: every item each user rated, as ``prepare`` wrote it (``rated/``).

    A prepared run from before ``rated/`` existed is regrouped from its splits (one shuffle).
    """
    folder = prepared / RATED
    if (folder / "_SUCCESS").exists() or any(folder.glob("*.parquet")):
        return spark.read.parquet(str(folder)).select(USER_IDX, ITEMS)
    log.info("%s has no %s/ table: grouping the rated items of its splits", prepared, RATED)
    return rated_lists(rated(spark, prepared))


def lists_every_user(prepared: Path, users: int) -> bool:
    """Whether ``prepared/rated/`` has one row per user of the id map, with its raw id: the list
    of users to score as it lies. (Runs prepared before it did need the model's user table.)"""
    folder = prepared / RATED
    files = sorted(folder.glob("*.parquet")) if (folder / "_SUCCESS").exists() else []
    return bool(files) and USER_ID in pq.read_schema(files[0]).names and parquet_rows(folder) == users
