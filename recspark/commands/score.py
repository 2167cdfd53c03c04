"""score: publish the top-N of every user the model knows, as ``recommendations/run_date=D``.

Users known to the model are scored whether or not they appear in today's input. Items the user
rated (train, validation and cold-start rows of the prepared run) are left out when
``score.exclude_seen``. The partition is written to staging and renamed into place whole.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.artifacts import Layout, read_json, staged
from recspark.config import Config
from recspark.constants import ITEM_ID, ITEM_IDX, MODEL_VERSION, RANK, SCORE, USER_ID, USER_IDX
from recspark.errors import MissingInputError
from recspark.model_io import load_model
from recspark.scoring import item_side_payload, recommend_all, seen_items


def load_published_model(layout: Layout, run_date):
    folder = layout.model(run_date)
    if not (folder / "model.pt").exists():
        raise MissingInputError(
            f"no trained model for run_date {run_date} under {layout.root}: run `recspark train` first"
        )
    model, spec, meta = load_model(folder)
    metrics = read_json(folder / "metrics.json")
    return folder, model, spec, meta, metrics["model_version"]


def rated(spark: SparkSession, prepared, names=("train", "validation", "cold_start")) -> DataFrame:
    frames = [spark.read.parquet(str(prepared / name)).select(USER_IDX, ITEM_IDX) for name in names]
    return reduce(DataFrame.unionByName, frames)


def with_raw_ids(recommendations: DataFrame, user_index: DataFrame, item_index: DataFrame) -> DataFrame:
    return (
        recommendations.join(user_index, USER_IDX)
        .join(F.broadcast(item_index), ITEM_IDX)
    )


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    folder, model, spec, meta, model_version = load_published_model(layout, config.run_date)
    prepared = layout.prepared(meta["index_date"])
    user_factors = spark.read.parquet(str(folder / "user_factors"))
    seen = seen_items(rated(spark, prepared)) if config.score.exclude_seen else None
    recommendations = recommend_all(
        spark,
        user_factors,
        seen,
        item_side_payload(model, spec, meta),
        config.score.top_n,
        config.score.users_per_block,
        config.train.device,
    )
    table = with_raw_ids(
        recommendations,
        spark.read.parquet(str(prepared / "user_index")),
        spark.read.parquet(str(prepared / "item_index")),
    ).select(
        USER_ID,
        ITEM_ID,
        F.col(RANK).cast("int").alias(RANK),
        F.col(SCORE).cast("float").alias(SCORE),
        F.lit(model_version).alias(MODEL_VERSION),
    )
    final = layout.recommendations_partition(config.run_date)
    with staged(layout, final, f"recommendations-{config.run_date}") as staging:
        table.write.mode("overwrite").parquet(str(staging))
        written = spark.read.parquet(str(staging))
        counts = written.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(USER_ID).alias("users")).first()
    return {
        "outputs": {"recommendations": str(layout.recommendations), "partition": str(final)},
        "counts": {"users": counts["users"], "rows": counts["rows"]},
        "metrics": {"model_version": model_version, "top_n": config.score.top_n},
    }
