"""Rating and ranking metrics, computed in Spark so they scale with the table.

- Rating metrics (RMSE, MAE) use Spark's ``RegressionEvaluator`` on a ``prediction`` column.
- Ranking metrics at ``k`` (precision, recall, NDCG, MAP) use Spark's ``RankingEvaluator`` with
  binary relevance: one row per user holding the recommended items in rank order and the relevant
  items as arrays. Only users with at least one relevant item count. Spark's definitions:
  precision divides the hits in the first ``k`` by ``k``; recall by the number of relevant items;
  NDCG's ideal DCG and MAP's denominator use ``min(relevant, k)``, so a user with fewer than ``k``
  relevant items can still score 1.
- Written here because Spark lacks them: hit rate (share of users with at least one hit in the
  first ``k``), catalogue coverage (share of items recommended to anyone) and novelty, the mean
  self-information ``-log2 p(i)`` of the recommended items, with ``p(i) = (n_i + 1) / (U + 1)``
  where ``n_i`` is how many training users rated item ``i`` and ``U`` how many users trained (the
  +1 keeps items nobody rated finite).

Lists are ordered by ``rank``; rows of equal rank are ordered by the lower item index, the same
tie-break the scoring kernel uses.
"""

from __future__ import annotations

from pyspark.ml.evaluation import RankingEvaluator, RegressionEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recspark.core.constants import ITEM_IDX, PREDICTION, RANK, RATING, USER_IDX

RANKING_METRICS = {
    "precision_at_k": "precisionAtK",
    "recall_at_k": "recallAtK",
    "ndcg_at_k": "ndcgAtK",
    "map_at_k": "meanAveragePrecisionAtK",
}
RANKING_KEYS = (*RANKING_METRICS, "hit_rate_at_k", "coverage", "novelty")


def rating_metrics(
    predictions: DataFrame, label_col: str = RATING, prediction_col: str = PREDICTION
) -> dict[str, float | int | None]:
    """RMSE, MAE and row count of ``prediction_col`` against ``label_col``; None when empty."""
    for column in (label_col, prediction_col):
        if column not in predictions.columns:
            raise ValueError(f"predictions lack column {column!r}; they have {predictions.columns}")
    rows = predictions.count()
    if rows == 0:
        return {"rmse": None, "mae": None, "rows": 0}
    evaluator = RegressionEvaluator(labelCol=label_col, predictionCol=prediction_col)
    metrics: dict[str, float | int | None] = {
        name: evaluator.setMetricName(name).evaluate(predictions) for name in ("rmse", "mae")
    }
    metrics["rows"] = rows
    return metrics


def relevant_items(
    validation: DataFrame, threshold: float, rating_col: str = RATING
) -> DataFrame:
    """Validation rows rated at or above ``threshold``; every row when ``threshold`` is 0."""
    return validation if threshold <= 0 else validation.where(F.col(rating_col) >= threshold)


def ranking_frame(
    recommendations: DataFrame,
    relevant: DataFrame,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    rank_col: str = RANK,
) -> DataFrame:
    """One row per user with relevant items: ``prediction`` (ranked items) and ``label`` arrays.

    A user with relevant items but no recommendations gets an empty ``prediction``.
    """
    for frame, columns in ((recommendations, (user_col, item_col, rank_col)), (relevant, (user_col, item_col))):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"column(s) {missing} missing; the frame has {frame.columns}")
    ranked = recommendations.groupBy(user_col).agg(
        F.transform(
            F.array_sort(
                F.collect_list(
                    F.struct(F.col(rank_col), F.col(item_col).cast("double").alias(item_col))
                )
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
) -> dict[str, float | int | None]:
    """Precision, recall, NDCG, MAP and hit rate at ``k``, over users with relevant items.

    Returns None for every metric when no user has a relevant item.
    """
    frame = ranking_frame(
        recommendations.where(F.col(rank_col) <= k), relevant, user_col, item_col, rank_col
    ).cache()
    users = frame.count()
    if users == 0:
        frame.unpersist()
        return {**dict.fromkeys(RANKING_METRICS), "hit_rate_at_k": None, "ranked_users": 0}
    evaluator = RankingEvaluator(predictionCol="prediction", labelCol="label", k=k)
    metrics: dict[str, float | int | None] = {
        name: evaluator.setMetricName(spark_name).evaluate(frame)
        for name, spark_name in RANKING_METRICS.items()
    }
    hits = F.size(F.array_intersect(F.slice("prediction", 1, k), "label")) > 0
    metrics["hit_rate_at_k"] = frame.agg(F.mean(hits.cast("double"))).first()[0]
    metrics["ranked_users"] = users
    frame.unpersist()
    return metrics


def coverage(recommendations: DataFrame, n_items: int, item_col: str = ITEM_IDX) -> float:
    """Share of the catalogue of ``n_items`` that appears in at least one user's list."""
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    return recommendations.select(item_col).distinct().count() / n_items


def item_popularity(
    train: DataFrame, user_col: str = USER_IDX, item_col: str = ITEM_IDX
) -> tuple[DataFrame, int]:
    """``(item_idx, raters)`` from the training ratings, and the number of training users."""
    raters = train.groupBy(item_col).agg(F.countDistinct(user_col).alias("raters"))
    users = train.agg(F.countDistinct(user_col)).first()[0]
    return raters, int(users)


def novelty(
    recommendations: DataFrame,
    popularity: DataFrame,
    n_users: int,
    item_col: str = ITEM_IDX,
) -> float | None:
    """Mean self-information ``-log2((n_i + 1) / (n_users + 1))`` over all recommended rows.

    ``popularity`` is ``(item_idx, raters)`` from :func:`item_popularity`; an item absent from it
    has ``n_i = 0``. None when there are no recommendations.
    """
    joined = recommendations.select(item_col).join(F.broadcast(popularity), item_col, "left")
    information = -F.log2((F.coalesce(F.col("raters"), F.lit(0)) + 1) / F.lit(n_users + 1))
    return joined.agg(F.mean(information)).first()[0]


def assess(
    predictions: DataFrame | None,
    recommendations: DataFrame | None,
    relevant: DataFrame,
    k: int,
    n_items: int,
    popularity: DataFrame,
    n_users: int,
    cold_start_predictions: DataFrame | None = None,
) -> dict[str, float | int | None]:
    """Every metric of one model (or baseline) on one split, None where it has no such output.

    Parameters
    ----------
    predictions
        Validation rows with ``rating`` and ``prediction``; None for a ranking-only model.
    recommendations
        ``(user_idx, item_idx, rank)`` top-``k`` lists of the evaluated users (training items
        excluded); None for a model that cannot rank (the global mean).
    relevant
        Validation rows that count as relevant (see :func:`relevant_items`).
    k
        Cut-off of the ranking metrics.
    n_items
        Catalogue size for coverage.
    popularity, n_users
        From :func:`item_popularity` on the training ratings, for novelty.
    cold_start_predictions
        The cold-start validation rows with ``prediction``, reported apart as ``cold_start_*``.
    """
    metrics: dict[str, float | int | None] = {}
    if predictions is not None:
        rating = rating_metrics(predictions)
        metrics.update(rmse=rating["rmse"], mae=rating["mae"], validation_rows=rating["rows"])
    else:
        metrics.update(rmse=None, mae=None, validation_rows=None)
    if cold_start_predictions is not None:
        cold = rating_metrics(cold_start_predictions)
        metrics.update(
            cold_start_rmse=cold["rmse"], cold_start_mae=cold["mae"], cold_start_rows=cold["rows"]
        )
    if recommendations is None:
        metrics.update(dict.fromkeys(RANKING_KEYS), ranked_users=None)
        return metrics
    recommendations = recommendations.where(F.col(RANK) <= k).cache()
    metrics.update(ranking_metrics(recommendations, relevant, k))
    metrics["coverage"] = coverage(recommendations, n_items)
    metrics["novelty"] = novelty(recommendations, popularity, n_users)
    recommendations.unpersist()
    return metrics
