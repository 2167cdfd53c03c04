"""generate: write the embedded synthetic data set and its planted truth under ``data/``."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.commands.stage import Stage, StageResult
from recspark.core.config import Config
from recspark.core.constants import ITEM_ID, USER_ID
from recspark.core.storage import Layout, publish, write_json
from recspark.data.synthetic import (
    SyntheticSpec,
    generate_ratings,
    item_truth_frame,
    noise_floor,
    user_truth_frame,
)


def spec_from(config: Config) -> SyntheticSpec:
    """The data set ``synthetic.*`` describes (its Spark partitions aside)."""
    fields = config.synthetic.model_dump(exclude={"partitions"})
    return SyntheticSpec(**fields)


def run(config: Config, spark: SparkSession) -> StageResult:
    """Generate and publish ``data/ratings`` and ``data/truth``; return the summary fields."""
    layout = Layout(config.paths.root)
    spec = spec_from(config)
    staging = layout.staging("data")
    ratings_path, truth_path = staging / "ratings", staging / "truth"
    ratings = generate_ratings(spark, spec, str(truth_path / "noise"), config.synthetic.partitions)
    ratings.write.parquet(str(ratings_path))
    user_truth_frame(spark, spec).write.parquet(str(truth_path / "users"))
    spark.createDataFrame(item_truth_frame(spec)).write.parquet(str(truth_path / "items"))
    floor = noise_floor(str(truth_path / "noise"), spec.blocks)
    stats = (
        spark.read.parquet(str(ratings_path))
        .agg(
            F.count(F.lit(1)).alias("ratings"),
            F.countDistinct(USER_ID).alias("users"),
            F.countDistinct(ITEM_ID).alias("items"),
            F.mean("rating").alias("mean"),
        )
        .first()
    )
    assert stats is not None  # a global aggregate has one row
    write_json(
        truth_path / "truth.json",
        {"spec": spec.__dict__, "noise_floor_rmse": floor, "ratings": stats["ratings"]},
    )
    publish(ratings_path, layout.ratings)
    publish(truth_path, layout.truth)
    staging.rmtree()
    return StageResult(
        outputs={"ratings": str(layout.ratings), "truth": str(layout.truth)},
        counts={"ratings": stats["ratings"], "users": stats["users"], "items": stats["items"]},
        metrics={"noise_floor_rmse": floor, "mean_rating": stats["mean"]},
    )


STAGE = Stage(
    name="generate",
    purpose="Write the embedded synthetic ratings data set and its planted factors.",
    sections=("paths", "synthetic", "spark"),
    example="recspark generate --set synthetic.users=100000 --set synthetic.ratings=10000000",
    run=run,
)
