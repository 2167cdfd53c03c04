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
- Beyond accuracy (:func:`beyond_accuracy`), on the same lists: the share of list entries whose
  item has fewer than ``rare_item_ratings`` training ratings; popularity bias, the mean
  ``log(1 + n_i)`` of the listed items (``n_i``: the item's training ratings) beside the same mean
  over the ranked users' held-out (validation) items, and their difference; and intra-list
  diversity on item side features (genres), the mean over lists of the mean pairwise cosine
  distance ``1 - cos(f_i, f_j)`` of the listed items' feature vectors (None without features).
  Every figure is a Spark aggregation; only item-sized tables are broadcast.

Lists are ordered by ``rank``; rows of equal rank are ordered by the lower item index, the same
tie-break the scoring kernel uses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.ml.evaluation import RankingEvaluator, RegressionEvaluator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.core.constants import ITEM_IDX, PREDICTION, RANK, RATING, USER_IDX

RANKING_METRICS = {
    "precision_at_k": "precisionAtK",
    "recall_at_k": "recallAtK",
    "ndcg_at_k": "ndcgAtK",
    "map_at_k": "meanAveragePrecisionAtK",
}
BEYOND_ACCURACY_KEYS = (
    "rare_item_share",
    "heldout_rare_item_share",
    "log_popularity",
    "heldout_log_popularity",
    "popularity_bias",
    "intra_list_diversity",
)
RANKING_KEYS = (*RANKING_METRICS, "hit_rate_at_k", "coverage", "novelty", *BEYOND_ACCURACY_KEYS)
#: Columns of an item feature table (:func:`item_feature_frame`): one row per nonzero feature.
FEATURE, VALUE = "feature", "value"


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
    """``(item_idx, raters, ratings)`` from the training ratings (distinct raters and rating rows
    per item), and the number of training users."""
    raters = train.groupBy(item_col).agg(
        F.countDistinct(user_col).alias("raters"), F.count(F.lit(1)).alias("ratings")
    )
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


def rare_item_share(
    recommendations: DataFrame,
    popularity: DataFrame,
    min_ratings: int,
    item_col: str = ITEM_IDX,
) -> float | None:
    """Share of list entries whose item has fewer than ``min_ratings`` training ratings.

    ``popularity`` is ``(item_idx, ratings, ...)`` from :func:`item_popularity`; an item absent
    from it has 0 ratings. None when there are no recommendations.
    """
    joined = recommendations.select(item_col).join(
        F.broadcast(popularity.select(item_col, "ratings")), item_col, "left"
    )
    rare = (F.coalesce(F.col("ratings"), F.lit(0)) < min_ratings).cast("double")
    return joined.agg(F.mean(rare)).first()[0]


def mean_log_popularity(
    rows: DataFrame, popularity: DataFrame, item_col: str = ITEM_IDX
) -> float | None:
    """Mean ``log(1 + n_i)`` over the rows' items, ``n_i`` the item's training ratings (0 when the
    item is absent from ``popularity``); None when there are no rows."""
    joined = rows.select(item_col).join(
        F.broadcast(popularity.select(item_col, "ratings")), item_col, "left"
    )
    return joined.agg(F.mean(F.log1p(F.coalesce(F.col("ratings"), F.lit(0))))).first()[0]


def item_feature_frame(
    spark: SparkSession, features: np.ndarray, item_col: str = ITEM_IDX
) -> DataFrame:
    """``(item_idx, feature, value)``: the nonzero entries of an ``items x features`` array.

    Row ``i`` of ``features`` is item index ``i``. The table is item-sized (a few genres per film).
    """
    if features.ndim != 2:
        raise ValueError(f"features must be an items x features array, got shape {features.shape}")
    items, columns = np.nonzero(features)
    frame = pd.DataFrame(
        {
            item_col: items.astype(np.int32),
            FEATURE: columns.astype(np.int32),
            VALUE: features[items, columns].astype(np.float64),
        }
    )
    schema = f"{item_col} int, {FEATURE} int, {VALUE} double"
    return spark.createDataFrame(frame, schema)


def intra_list_diversity(
    recommendations: DataFrame,
    item_features: DataFrame,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
) -> float | None:
    """Mean over lists of two or more items of the mean pairwise ``1 - cos(f_i, f_j)``.

    ``item_features`` is ``(item_idx, feature, value)`` (:func:`item_feature_frame`). With unit
    vectors ``u_i = f_i / |f_i|``, the sum over ordered pairs ``i != j`` of ``u_i . u_j`` is
    ``|sum_i u_i|^2 - sum_i |u_i|^2``, so a list needs one sum per feature, not one row per pair.
    An item without features counts as at distance 1 from every other. None when no list has two
    items.
    """
    for column in (item_col, FEATURE, VALUE):
        if column not in item_features.columns:
            raise ValueError(
                f"item_features lacks column {column!r}; it has {item_features.columns}"
            )
    present = item_features.where(F.col(VALUE) != 0)
    norms = present.groupBy(item_col).agg(F.sqrt(F.sum(F.col(VALUE) ** 2)).alias("norm"))
    unit = present.join(norms, item_col).select(
        item_col, FEATURE, (F.col(VALUE) / F.col("norm")).alias("unit")
    )
    lists = recommendations.select(user_col, item_col)
    sizes = lists.groupBy(user_col).agg(F.count(F.lit(1)).alias("size")).where(F.col("size") >= 2)
    per_feature = (
        lists.join(F.broadcast(unit), item_col)
        .groupBy(user_col, FEATURE)
        .agg(F.sum("unit").alias("total"), F.sum(F.col("unit") ** 2).alias("squares"))
    )
    pairs = per_feature.groupBy(user_col).agg(
        F.sum(F.col("total") ** 2 - F.col("squares")).alias("similarity")
    )
    mean_similarity = F.coalesce(F.col("similarity"), F.lit(0.0)) / (
        F.col("size") * (F.col("size") - 1)
    )
    return sizes.join(pairs, user_col, "left").agg(F.mean(1.0 - mean_similarity)).first()[0]


def beyond_accuracy(
    recommendations: DataFrame,
    relevant: DataFrame,
    popularity: DataFrame,
    rare_item_ratings: int = 5,
    validation: DataFrame | None = None,
    item_features: DataFrame | None = None,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
) -> dict[str, float | None]:
    """The figures of :data:`BEYOND_ACCURACY_KEYS` for one model's lists.

    ``heldout_log_popularity`` is over the validation rows (``relevant`` when None) of the users
    with relevant items, the users the lists are for; ``popularity_bias`` is
    ``log_popularity - heldout_log_popularity`` (> 0: the lists lean to items more popular than
    those the users went on to rate).
    """
    ranked_users = relevant.select(user_col).distinct()
    heldout = (validation if validation is not None else relevant).join(
        ranked_users, user_col, "left_semi"
    )
    listed = mean_log_popularity(recommendations, popularity, item_col)
    truth = mean_log_popularity(heldout, popularity, item_col)
    return {
        "rare_item_share": rare_item_share(
            recommendations, popularity, rare_item_ratings, item_col
        ),
        # The same share over the items the ranked users went on to rate: how far into the tail
        # their own choices reach.
        "heldout_rare_item_share": rare_item_share(
            heldout, popularity, rare_item_ratings, item_col
        ),
        "log_popularity": listed,
        "heldout_log_popularity": truth,
        "popularity_bias": None if listed is None or truth is None else listed - truth,
        "intra_list_diversity": (
            intra_list_diversity(recommendations, item_features, user_col, item_col)
            if item_features is not None
            else None
        ),
    }


def assess(
    predictions: DataFrame | None,
    recommendations: DataFrame | None,
    relevant: DataFrame,
    k: int,
    n_items: int,
    popularity: DataFrame,
    n_users: int,
    cold_start_predictions: DataFrame | None = None,
    validation: DataFrame | None = None,
    rare_item_ratings: int = 5,
    item_features: DataFrame | None = None,
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
        From :func:`item_popularity` on the training ratings, for novelty and the figures beyond
        accuracy.
    cold_start_predictions
        The cold-start validation rows with ``prediction``, reported apart as ``cold_start_*``.
    validation, rare_item_ratings, item_features
        For :func:`beyond_accuracy`: the validation rows (the held-out items of popularity bias),
        the rating count under which an item is rare, and ``(item_idx, feature, value)`` side
        features for intra-list diversity (None: diversity is None).
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
    metrics.update(
        beyond_accuracy(
            recommendations, relevant, popularity, rare_item_ratings, validation, item_features
        )
    )
    recommendations.unpersist()
    return metrics
