"""Rating and ranking metrics, computed in Spark so they scale with the table.

Rating metrics use Spark's ``RegressionEvaluator`` and ranking metrics its ``RankingEvaluator``
(binary relevance, one row per user holding the recommended and the relevant items as arrays).
Only users with at least one relevant validation item count toward ranking metrics.
"""

from __future__ import annotations

from pyspark.ml.evaluation import RankingEvaluator, RegressionEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recspark.constants import ITEM_IDX, PREDICTION, RANK, RATING, USER_IDX

RANKING_METRICS = {
    "precision_at_k": "precisionAtK",
    "recall_at_k": "recallAtK",
    "ndcg_at_k": "ndcgAtK",
    "map_at_k": "meanAveragePrecisionAtK",
}


def rating_metrics(
    predictions: DataFrame, label_col: str = RATING, prediction_col: str = PREDICTION
) -> dict[str, float]:
    """RMSE and MAE of ``prediction_col`` against ``label_col``."""
    evaluator = RegressionEvaluator(labelCol=label_col, predictionCol=prediction_col)
    return {
        name: evaluator.setMetricName(name).evaluate(predictions) for name in ("rmse", "mae")
    }


def ranking_frame(
    recommendations: DataFrame,
    relevant: DataFrame,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    rank_col: str = RANK,
) -> DataFrame:
    """One row per user with relevant items: ``prediction`` (ranked items) and ``label`` arrays."""
    ranked = recommendations.groupBy(user_col).agg(
        F.transform(
            F.array_sort(
                F.collect_list(F.struct(F.col(rank_col), F.col(item_col).cast("double").alias(item_col)))
            ),
            lambda pair: pair.getField(item_col),
        ).alias("prediction")
    )
    labels = relevant.groupBy(user_col).agg(
        F.collect_set(F.col(item_col).cast("double")).alias("label")
    )
    return labels.join(ranked, user_col, "left").select(
        user_col,
        F.coalesce(F.col("prediction"), F.array().cast("array<double>")).alias("prediction"),
        F.col("label"),
    )


def ranking_metrics(
    recommendations: DataFrame,
    relevant: DataFrame,
    k: int,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    rank_col: str = RANK,
) -> dict[str, float]:
    """Precision, recall, NDCG, MAP and hit rate at ``k`` over users with relevant items."""
    frame = ranking_frame(
        recommendations.where(F.col(rank_col) <= k), relevant, user_col, item_col, rank_col
    ).cache()
    evaluator = RankingEvaluator(predictionCol="prediction", labelCol="label", k=k)
    metrics = {
        name: evaluator.setMetricName(spark_name).evaluate(frame)
        for name, spark_name in RANKING_METRICS.items()
    }
    hits = frame.select(
        (F.size(F.array_intersect("prediction", "label")) > 0).cast("double").alias("hit")
    )
    metrics["hit_rate_at_k"] = hits.agg(F.mean("hit")).first()[0]
    metrics["ranked_users"] = frame.count()
    frame.unpersist()
    return metrics


def coverage(recommendations: DataFrame, n_items: int, item_col: str = ITEM_IDX) -> float:
    """Share of the catalogue that appears in at least one user's list."""
    return recommendations.select(item_col).distinct().count() / n_items
