"""evaluate: rating and ranking metrics of the trained model on the prepared validation split.

Writes ``evaluation/RUN_DATE/evaluation.json``. Ranking metrics rank every item the user did not
rate in train, against validation items rated at or above ``evaluate.relevance_threshold``.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.artifacts import Layout, staged, write_json
from recspark.commands.score import load_published_model
from recspark.config import Config
from recspark.constants import RATING
from recspark.metrics import coverage, ranking_metrics, rating_metrics
from recspark.model_io import model_bytes
from recspark.scoring import item_side_payload, predict, recommend_all, seen_items


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    folder, model, spec, meta, model_version = load_published_model(layout, config.run_date)
    prepared = layout.prepared(meta["index_date"])
    train = spark.read.parquet(str(prepared / "train"))
    validation = spark.read.parquet(str(prepared / "validation"))
    predictions = predict(spark, validation, model_bytes(model, spec, meta), config.train.device)
    metrics: dict[str, Any] = rating_metrics(predictions)

    k = config.evaluate.k
    relevant = validation.where(F.col(RATING) >= config.evaluate.relevance_threshold)
    users = relevant.select("user_idx").distinct()
    user_factors = spark.read.parquet(str(folder / "user_factors")).join(users, "user_idx")
    recommendations = recommend_all(
        spark, user_factors, seen_items(train), item_side_payload(model, spec, meta), k,
        config.score.users_per_block, config.train.device,
    ).cache()
    ranking = ranking_metrics(recommendations, relevant, k)
    metrics.update(ranking)
    metrics["coverage"] = coverage(recommendations, spec["n_items"])
    recommendations.unpersist()
    metrics = {name: float(value) if value is not None else None for name, value in metrics.items()}
    report = {
        "run_date": str(config.run_date),
        "model_version": model_version,
        "k": k,
        "relevance_threshold": config.evaluate.relevance_threshold,
        "metrics": metrics,
    }
    final = layout.evaluation(config.run_date)
    with staged(layout, final, f"evaluation-{config.run_date}") as staging:
        write_json(staging / "evaluation.json", report)
    return {
        "outputs": {"report": str(final / "evaluation.json")},
        "counts": {"validation": validation.count(), "ranked_users": int(metrics.pop("ranked_users"))},
        "metrics": metrics,
    }
