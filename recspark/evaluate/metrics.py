"""Rating and ranking metrics, computed in Spark so they scale with the table.

- Rating metrics (RMSE, MAE) of a ``prediction`` column, as Spark's ``RegressionEvaluator``.
- Ranking metrics at ``k`` (precision, recall, NDCG, MAP) as Spark's ``RankingEvaluator`` defines
  them with binary relevance, on one row per user holding the recommended items in rank order and
  the relevant items as arrays. Only users with at least one relevant item count. Spark's
  definitions: precision divides the hits in the first ``k`` by ``k``; recall by the number of
  relevant items; NDCG's ideal DCG and MAP's denominator use ``min(relevant, k)``, so a user with
  fewer than ``k`` relevant items can still score 1.
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

Each group of figures is one aggregation, one Spark job (the evaluators run one per figure): an
evaluation computes a dozen figures for each of several contenders, and on small data the jobs'
fixed cost was most of its time.

Lists are ordered by ``rank``; rows of equal rank are ordered by the lower item index, the same
tie-break the scoring kernel uses.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
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


class RatingFigures(NamedTuple):
    """RMSE and MAE of predicted ratings (None when there are no rows) and the row count."""

    rmse: float | None
    mae: float | None
    rows: int


def rating_figures(
    predictions: DataFrame, label_col: str = RATING, prediction_col: str = PREDICTION
) -> RatingFigures:
    """RMSE, MAE and row count of ``prediction_col`` against ``label_col``; None when empty.

    One aggregation (Spark's ``RegressionEvaluator`` runs a job per figure).
    """
    for column in (label_col, prediction_col):
        if column not in predictions.columns:
            raise ValueError(f"predictions lack column {column!r}; they have {predictions.columns}")
    error = F.col(prediction_col).cast("double") - F.col(label_col).cast("double")
    row = predictions.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sqrt(F.mean(error * error)).alias("rmse"),
        F.mean(F.abs(error)).alias("mae"),
    ).collect()[0]  # a global aggregation: one row
    if row["rows"] == 0:
        return RatingFigures(None, None, 0)
    return RatingFigures(row["rmse"], row["mae"], int(row["rows"]))


def rating_metrics(
    predictions: DataFrame, label_col: str = RATING, prediction_col: str = PREDICTION
) -> dict[str, float | int | None]:
    """:func:`rating_figures` as a dict: ``rmse``, ``mae`` and ``rows``."""
    return dict(rating_figures(predictions, label_col, prediction_col)._asdict())


def relevant_items(validation: DataFrame, threshold: float, rating_col: str = RATING) -> DataFrame:
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
    for frame, columns in (
        (recommendations, (user_col, item_col, rank_col)),
        (relevant, (user_col, item_col)),
    ):
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
    *,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    rank_col: str = RANK,
) -> dict[str, float | int | None]:
    """Precision, recall, NDCG, MAP and hit rate at ``k``, over users with relevant items.

    Spark's ``RankingEvaluator`` definitions (see the module docstring; a test checks the figures
    equal the evaluator's), computed per user with array functions and averaged in one
    aggregation: the evaluator runs a job per metric. Returns None for every metric when no user
    has a relevant item.
    """
    frame = ranking_frame(
        recommendations.where(F.col(rank_col) <= k), relevant, user_col, item_col, rank_col
    )
    listed = F.slice("prediction", 1, k)
    hits = F.transform(listed, lambda item: F.array_contains("label", item).cast("double"))
    found = F.aggregate(hits, F.lit(0.0), lambda total, hit: total + hit)
    # Rank i (0-based) gains 1 / log2(i + 2); the ideal list has min(relevant, k) hits on top.
    dcg = F.aggregate(
        F.transform(hits, lambda hit, i: hit / F.log2(i + 2)), F.lit(0.0), lambda a, x: a + x
    )
    ideal_gains = [float(np.sum(1.0 / np.log2(np.arange(n) + 2))) for n in range(1, k + 1)]
    ideal = F.element_at(F.array(*map(F.lit, ideal_gains)), F.least(F.size("label"), F.lit(k)))
    # Average precision: the precision at each hit's rank, over min(relevant, k).
    precision_at_hits = F.transform(
        hits,
        lambda hit, i: (
            hit * F.aggregate(F.slice(hits, 1, i + 1), F.lit(0.0), lambda a, x: a + x) / (i + 1)
        ),
    )
    average_precision = F.aggregate(precision_at_hits, F.lit(0.0), lambda a, x: a + x) / F.least(
        F.size("label"), F.lit(k)
    )
    row = frame.agg(
        F.count(F.lit(1)).alias("users"),
        F.mean(found / k).alias("precision_at_k"),
        F.mean(found / F.size("label")).alias("recall_at_k"),
        F.mean(dcg / ideal).alias("ndcg_at_k"),
        F.mean(average_precision).alias("map_at_k"),
        F.mean((found > 0).cast("double")).alias("hit_rate_at_k"),
    ).collect()[0]
    if row["users"] == 0:
        return {**dict.fromkeys(RANKING_METRICS), "hit_rate_at_k": None, "ranked_users": 0}
    metrics: dict[str, float | int | None] = {name: row[name] for name in RANKING_METRICS}
    metrics["hit_rate_at_k"] = row["hit_rate_at_k"]
    metrics["ranked_users"] = int(row["users"])
    return metrics


class PopularityFigures(NamedTuple):
    """What :func:`popularity_figures` finds of list entries or held-out rows."""

    entries: int
    items: int
    log_popularity: float | None
    rare_share: float | None
    novelty: float | None = None


def popularity_figures(
    rows: DataFrame,
    popularity: DataFrame,
    n_users: int | None = None,
    min_ratings: int = 5,
    item_col: str = ITEM_IDX,
) -> PopularityFigures:
    """Every figure of list entries (or held-out rows) that needs only their items' popularity,
    in one aggregation over ``rows`` joined to the item-sized ``popularity`` (broadcast).

    ``popularity`` is ``(item_idx, raters, ratings)`` from :func:`item_popularity`; an item absent
    from it has 0 of each. Returns ``entries`` and distinct ``items`` of ``rows``, their mean
    ``log_popularity`` (``log(1 + ratings)``), the ``rare_share`` of entries under
    ``min_ratings`` ratings and, given ``n_users``, ``novelty`` (see the module docstring); the
    means are None when ``rows`` is empty.
    """
    joined = rows.select(item_col).join(
        F.broadcast(popularity.select(item_col, "raters", "ratings")), item_col, "left"
    )
    ratings = F.coalesce(F.col("ratings"), F.lit(0))
    raters = F.coalesce(F.col("raters"), F.lit(0))
    figures = [
        F.count(F.lit(1)).alias("entries"),
        F.countDistinct(item_col).alias("items"),
        F.mean(F.log1p(ratings)).alias("log_popularity"),
        F.mean((ratings < min_ratings).cast("double")).alias("rare_share"),
    ]
    if n_users is not None:
        figures.append(F.mean(-F.log2((raters + 1) / F.lit(n_users + 1))).alias("novelty"))
    return PopularityFigures(**joined.agg(*figures).collect()[0].asDict())


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
    users = train.agg(F.countDistinct(user_col)).collect()[0][0]
    return raters, int(users)


def novelty(
    recommendations: DataFrame,
    popularity: DataFrame,
    n_users: int,
    item_col: str = ITEM_IDX,
) -> float | None:
    """Mean self-information ``-log2((n_i + 1) / (n_users + 1))`` over all recommended rows.

    ``popularity`` is ``(item_idx, raters, ...)`` from :func:`item_popularity`; an item absent
    from it has ``n_i = 0``. None when there are no recommendations.
    """
    return popularity_figures(recommendations, popularity, n_users, item_col=item_col).novelty


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
    figures = popularity_figures(recommendations, popularity, None, min_ratings, item_col)
    return figures.rare_share


def mean_log_popularity(
    rows: DataFrame, popularity: DataFrame, item_col: str = ITEM_IDX
) -> float | None:
    """Mean ``log(1 + n_i)`` over the rows' items, ``n_i`` the item's training ratings (0 when the
    item is absent from ``popularity``); None when there are no rows."""
    return popularity_figures(rows, popularity, item_col=item_col).log_popularity


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
    return sizes.join(pairs, user_col, "left").agg(F.mean(1.0 - mean_similarity)).collect()[0][0]


def beyond_accuracy(
    recommendations: DataFrame,
    relevant: DataFrame,
    popularity: DataFrame,
    rare_item_ratings: int = 5,
    *,
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
    listed = popularity_figures(recommendations, popularity, None, rare_item_ratings, item_col)
    truth = popularity_figures(heldout, popularity, None, rare_item_ratings, item_col)
    return _beyond_accuracy(
        listed,
        truth,
        recommendations,
        item_features=item_features,
        user_col=user_col,
        item_col=item_col,
    )


def _beyond_accuracy(
    listed: PopularityFigures,
    truth: PopularityFigures,
    recommendations: DataFrame,
    *,
    item_features: DataFrame | None,
    user_col: str,
    item_col: str,
) -> dict[str, float | None]:
    """:func:`beyond_accuracy`'s figures from the lists' and held-out rows'
    :func:`popularity_figures`."""
    log_listed, log_truth = listed.log_popularity, truth.log_popularity
    return {
        "rare_item_share": listed.rare_share,
        # The same share over the items the ranked users went on to rate: how far into the tail
        # their own choices reach.
        "heldout_rare_item_share": truth.rare_share,
        "log_popularity": log_listed,
        "heldout_log_popularity": log_truth,
        "popularity_bias": (
            None if log_listed is None or log_truth is None else log_listed - log_truth
        ),
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
    *,
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
        rating = rating_figures(predictions)
        metrics.update(rmse=rating.rmse, mae=rating.mae, validation_rows=rating.rows)
    else:
        metrics.update(rmse=None, mae=None, validation_rows=None)
    if cold_start_predictions is not None:
        cold = rating_figures(cold_start_predictions)
        metrics.update(
            cold_start_rmse=cold.rmse, cold_start_mae=cold.mae, cold_start_rows=cold.rows
        )
    if recommendations is None:
        metrics.update(dict.fromkeys(RANKING_KEYS), ranked_users=None)
        return metrics
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    recommendations = recommendations.where(F.col(RANK) <= k).cache()
    metrics.update(ranking_metrics(recommendations, relevant, k))
    listed = popularity_figures(recommendations, popularity, n_users, rare_item_ratings)
    metrics["coverage"] = listed.items / n_items
    metrics["novelty"] = listed.novelty
    heldout = (validation if validation is not None else relevant).join(
        relevant.select(USER_IDX).distinct(), USER_IDX, "left_semi"
    )
    truth = popularity_figures(heldout, popularity, None, rare_item_ratings)
    metrics.update(
        _beyond_accuracy(
            listed,
            truth,
            recommendations,
            item_features=item_features,
            user_col=USER_IDX,
            item_col=ITEM_IDX,
        )
    )
    recommendations.unpersist()
    return metrics
