"""score: publish the top-N of every user the model knows, as ``recommendations/run_date=D``.

Every user in the model's ``user_factors`` table is scored, whether or not it appears in today's
input. Items the user rated (train, validation and cold-start rows of the prepared run) are left
out when ``score.exclude_seen``; a user with fewer than ``top_n`` unrated items gets what there is.

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

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.artifacts import Layout, clean_leftovers, read_json, staged
from recspark.config import Config
from recspark.constants import ITEM_ID, ITEM_IDX, MODEL_VERSION, RANK, SCORE, USER_ID, USER_IDX
from recspark.errors import MissingInputError
from recspark.model_io import load_model
from recspark.scoring import item_side_payload, recommend_all, seen_items

log = logging.getLogger(__name__)

RATED_SPLITS = ("train", "validation", "cold_start")


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


def recommendation_table(
    spark: SparkSession,
    user_factors: DataFrame,
    user_index: DataFrame,
    item_index: DataFrame,
    seen: DataFrame | None,
    payload: bytes,
    model_version: str,
    top_n: int,
    users_per_block: int = 256,
    device: str = "auto",
    partitions: int | None = None,
) -> DataFrame:
    """The published table's rows: ``user_id``, ``item_id`` (raw, input types), rank, score, version.

    Raw ids are joined on after scoring: the item index by broadcast, the user index by a shuffle
    join (it grows with the users).
    """
    recommendations = recommend_all(
        spark, user_factors, seen, payload, top_n, users_per_block, device, partitions
    )
    return (
        recommendations.join(user_index.select(USER_IDX, USER_ID), USER_IDX)
        .join(F.broadcast(item_index.select(ITEM_IDX, ITEM_ID)), ITEM_IDX)
    ).select(
        USER_ID,
        ITEM_ID,
        F.col(RANK).cast("int").alias(RANK),
        F.col(SCORE).cast("float").alias(SCORE),
        F.lit(model_version).alias(MODEL_VERSION),
    )


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    folder, model, spec, meta, model_version = load_published_model(layout, config.run_date)
    prepared = layout.prepared(meta["index_date"])
    final = layout.recommendations_partition(config.run_date)
    name = f"recommendations-{config.run_date}"
    for path in clean_leftovers(layout, final, name):
        log.info("removed %s, left by an earlier run that did not finish", path)
    table = recommendation_table(
        spark,
        spark.read.parquet(str(folder / "user_factors")),
        spark.read.parquet(str(prepared / "user_index")),
        spark.read.parquet(str(prepared / "item_index")),
        seen_items(rated(spark, prepared)) if config.score.exclude_seen else None,
        item_side_payload(model, spec, meta),
        model_version,
        config.score.top_n,
        config.score.users_per_block,
        config.train.device,
        config.score.partitions,
    )
    with staged(layout, final, name) as staging:
        table.write.mode("overwrite").parquet(str(staging))
        # Counted from what was written, so the summary describes the published partition. Every
        # scored user has exactly one rank-1 row, so no distinct count (and no shuffle) is needed.
        counts = (
            spark.read.parquet(str(staging))
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum((F.col(RANK) == 1).cast("long")).alias("users"),
            )
            .first()
        )
    log.info("published %d rows for %d users to %s", counts["rows"], counts["users"], final)
    return {
        "outputs": {"recommendations": str(layout.recommendations), "partition": str(final)},
        "counts": {"users": counts["users"], "rows": counts["rows"], "model_users": spec["n_users"]},
        "metrics": {"model_version": model_version, "top_n": config.score.top_n},
    }
