"""score: publish the top-N of every user the model knows, as ``recommendations/run_date=D``.

Every user in the model's user table is scored, whether or not it appears in today's input. Items
the user rated (train, validation and cold-start rows of the prepared run) are left out when
``score.exclude_seen``; a user with fewer than ``top_n`` unrated items gets what there is.

No rating is shuffled: ``prepare`` wrote ``rated/``, one row per user of the id map with every item
it rated. When the model's user table fits ``score.broadcast_users_mb`` it is broadcast with the
item side and the tasks read ``rated/`` as it lies (no shuffle at all); a larger one is joined by
user with ``rated/`` (one shuffle of both, one row per user).

The partition is written under ``_staging/`` and renamed into place whole with a ``_SUCCESS``
marker (:func:`recspark.artifacts.publish`): a job killed midway leaves the previous partition as
it was, and re-running a date replaces it whole. What a killed run left in ``_staging`` is removed
when the next run for the same date starts.
"""

from __future__ import annotations

import logging
from functools import reduce
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_type

from recspark.artifacts import Layout, clean_leftovers, parquet_rows, read_json, staged
from recspark.config import Config
from recspark.constants import ITEM_ID, ITEM_IDX, MODEL_VERSION, RANK, SCORE, USER_ID, USER_IDX
from recspark.errors import MissingInputError
from recspark.model_io import load_model, raw_ids
from recspark.scoring import (
    ITEMS,
    ScoreCounters,
    UserTable,
    item_side_payload,
    rated_lists,
    recommend_all,
    recommend_listed,
)

log = logging.getLogger(__name__)

RATED_SPLITS = ("train", "validation", "cold_start")
RATED = "rated"  # prepare's (user_idx, items) table: every item of RATED_SPLITS per user


def load_published_model(layout: Layout, run_date):
    """``(folder, model, spec, meta, model_version)`` of the model published for ``run_date``."""
    folder = layout.model(run_date)
    if not (folder / "model.pt").exists():
        raise MissingInputError(
            f"no trained model for run_date {run_date} under {layout.root}: run `recspark train` first"
        )
    model, spec, meta = load_model(folder)
    metrics = read_json(folder / "metrics.json")
    return folder, model, spec, meta, metrics["model_version"]


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


def recommendation_table(
    spark: SparkSession,
    model_users: DataFrame | UserTable,
    prepared: Path,
    exclude_seen: bool,
    payload: bytes,
    model_version: str,
    top_n: int,
    users_per_block: int = 128,
    device: str = "auto",
    partitions: int | None = None,
    counters: ScoreCounters | None = None,
) -> DataFrame:
    """The published table's rows: ``user_id``, ``item_id`` (raw, input types), rank, score, version.

    ``model_users`` is the model's user table, as arrays broadcast to the tasks (a
    :class:`UserTable`: the users to score are then ``prepare``'s ``rated/`` table as it lies,
    which must list every user, see :func:`lists_every_user`) or as the ``user_factors``
    DataFrame, joined by user with the rated items. No join after scoring: the raw user id
    travels with the user's row (from ``rated/``, or from ``user_factors`` where ``train`` wrote
    it; an older table without it is joined with the prepared ``user_index`` before scoring), and
    the raw item ids are broadcast with the model (one per item, like the item factors).
    """
    index = prepared / "item_index"
    id_type = spark.read.parquet(str(index)).schema[ITEM_ID].dataType  # as Spark reads it
    item_ids = raw_ids(index, ITEM_ID, ITEM_IDX, parquet_rows(index)).cast(to_arrow_type(id_type))
    if isinstance(model_users, UserTable):
        listed = spark.read.parquet(str(prepared / RATED))
        if not exclude_seen:
            listed = listed.withColumn(ITEMS, F.lit(None).cast("array<int>"))
        recommendations = recommend_listed(
            spark, listed, model_users, payload, top_n, users_per_block, device, partitions,
            carry=(USER_ID,), item_ids=item_ids, counters=counters,
        )
    else:
        carried = USER_ID in model_users.columns
        recommendations = recommend_all(
            spark, model_users, rated_by_user(spark, prepared) if exclude_seen else None, payload,
            top_n, users_per_block, device, partitions,
            user_columns=None if carried else spark.read.parquet(str(prepared / "user_index")).select(
                USER_IDX, USER_ID
            ),
            carry=(USER_ID,) if carried else (),
            item_ids=item_ids,
            counters=counters,
        )
    return recommendations.select(
        USER_ID,
        ITEM_ID,
        F.col(RANK).cast("int").alias(RANK),
        F.col(SCORE).cast("float").alias(SCORE),
        F.lit(model_version).alias(MODEL_VERSION),
    )


def model_users(
    spark: SparkSession, model, folder: Path, prepared: Path, limit_mb: float
) -> DataFrame | UserTable:
    """The model's user table as :func:`recommendation_table` takes it: broadcast arrays when they
    fit ``limit_mb`` and ``rated/`` lists every user, else the ``user_factors`` DataFrame."""
    weights = model.user_factors.weight
    size = (weights.numel() + len(weights)) * 4  # factors and one bias per user, float32
    if size <= limit_mb * 2**20 and lists_every_user(prepared, len(weights)):
        return UserTable.of(model)
    log.info(
        "joining the user table (%.1f MiB; score.broadcast_users_mb=%s) with %s",
        size / 2**20, limit_mb, prepared / RATED,
    )
    return spark.read.parquet(str(folder / "user_factors"))


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    folder, model, spec, meta, model_version = load_published_model(layout, config.run_date)
    prepared = layout.prepared(meta["index_date"])
    final = layout.recommendations_partition(config.run_date)
    name = f"recommendations-{config.run_date}"
    for path in clean_leftovers(layout, final, name):
        log.info("removed %s, left by an earlier run that did not finish", path)
    counters = ScoreCounters.create(spark)
    user_table = model_users(spark, model, folder, prepared, config.score.broadcast_users_mb)
    table = recommendation_table(
        spark,
        user_table,
        prepared,
        config.score.exclude_seen,
        item_side_payload(model, spec, meta),
        model_version,
        config.score.top_n,
        config.score.users_per_block,
        config.train.device,
        config.score.partitions,
        counters,
    )
    with staged(layout, final, name) as staging:
        table.write.mode("overwrite").parquet(str(staging))
        # The rows are counted from the written files' footers, so the summary describes the
        # published partition; the tasks' own count must agree, and says how many users got one.
        rows, users = parquet_rows(staging), counters.users.value
        if rows != counters.rows.value:
            raise RuntimeError(
                f"the scoring tasks produced {counters.rows.value} rows but {rows} were written "
                f"to {staging}: nothing was published"
            )
    log.info("published %d rows for %d users to %s", rows, users, final)
    return {
        "outputs": {"recommendations": str(layout.recommendations), "partition": str(final)},
        "counts": {"users": users, "rows": rows, "model_users": spec["n_users"]},
        "metrics": {
            "model_version": model_version,
            "top_n": config.score.top_n,
            # How the tasks got the users' vectors: "broadcast" (no shuffle) or "joined".
            "user_factors": "broadcast" if isinstance(user_table, UserTable) else "joined",
        },
    }
