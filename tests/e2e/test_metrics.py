"""Metric functions against hand-computed answers, and the baselines against planted structure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recspark.data.prepared import seen_items
from recspark.evaluate.baselines import fit_biases, fit_global_mean
from recspark.evaluate.metrics import (
    assess,
    coverage,
    item_popularity,
    novelty,
    ranking_metrics,
    rating_metrics,
    relevant_items,
)
from recspark.serve.scoring import ScoringPlan, recommend_all

K = 3
# (user, item, rank). u1 has a relevant item at rank 4, beyond k; u2 has a short list and more
# relevant items than k; u3 misses; u4 has relevant items but no list; u5 has a list but nothing
# relevant (not counted); u6 has two items sharing rank 1, so the lower index (20) comes first.
RECOMMENDATIONS = [
    (1, 10, 1),
    (1, 20, 2),
    (1, 30, 3),
    (1, 40, 4),
    (2, 40, 1),
    (2, 50, 2),
    (3, 10, 1),
    (3, 20, 2),
    (3, 30, 3),
    (5, 60, 1),
    (6, 30, 1),
    (6, 20, 1),
    (6, 10, 3),
]
RELEVANT = [(1, 20), (1, 40), (2, 40), (2, 50), (2, 60), (2, 70), (3, 99), (4, 10), (6, 30)]


def frames(spark):
    recommendations = spark.createDataFrame(RECOMMENDATIONS, "user_idx int, item_idx int, rank int")
    relevant = spark.createDataFrame(RELEVANT, "user_idx int, item_idx int")
    return recommendations, relevant


def test_ranking_metrics_by_hand(spark):
    recommendations, relevant = frames(spark)
    got = ranking_metrics(recommendations, relevant, K)
    g = 1 / math.log2(3)  # gain at position 2
    ndcg = {1: g / (1 + g), 2: (1 + g) / (1 + g + 0.5), 3: 0.0, 4: 0.0, 6: g / 1}
    precision = {1: 1 / 3, 2: 2 / 3, 3: 0, 4: 0, 6: 1 / 3}
    recall = {1: 1 / 2, 2: 2 / 4, 3: 0, 4: 0, 6: 1}
    # AP@k divides by min(relevant, k): u2 has 4 relevant items, so by 3.
    average_precision = {1: (1 / 2) / 2, 2: (1 / 1 + 2 / 2) / 3, 3: 0, 4: 0, 6: (1 / 2) / 1}
    assert got["ranked_users"] == 5
    assert got["precision_at_k"] == pytest.approx(sum(precision.values()) / 5)
    assert got["recall_at_k"] == pytest.approx(sum(recall.values()) / 5)
    assert got["ndcg_at_k"] == pytest.approx(sum(ndcg.values()) / 5)
    assert got["map_at_k"] == pytest.approx(sum(average_precision.values()) / 5)
    assert got["hit_rate_at_k"] == pytest.approx(3 / 5)


def test_ranking_and_rating_figures_equal_sparks_evaluators(spark):
    """One aggregation per group of figures, but Spark's own definitions: random lists of 0-12
    items (k 10) against 1-15 relevant items, and random predictions, agree with
    ``RankingEvaluator`` and ``RegressionEvaluator`` to 1e-9."""
    from pyspark.ml.evaluation import RankingEvaluator, RegressionEvaluator

    from recspark.evaluate.metrics import RANKING_METRICS, ranking_frame

    rng = np.random.default_rng(5)
    listed, relevant = [], []
    for user in range(60):
        for rank, item in enumerate(rng.permutation(30)[: rng.integers(0, 13)], start=1):
            listed.append((user, int(item), rank))
        relevant += [(user, int(item)) for item in rng.permutation(30)[: rng.integers(1, 16)]]
    lists = spark.createDataFrame(listed, "user_idx int, item_idx int, rank int")
    truth = spark.createDataFrame(relevant, "user_idx int, item_idx int")
    got = ranking_metrics(lists, truth, 10)
    frame = ranking_frame(lists.where("rank <= 10"), truth)
    evaluator = RankingEvaluator(predictionCol="prediction", labelCol="label", k=10)
    for name, spark_name in RANKING_METRICS.items():
        expected = evaluator.setMetricName(spark_name).evaluate(frame)
        assert got[name] == pytest.approx(expected, abs=1e-9), name
    assert got["ranked_users"] == 60
    pairs = spark.createDataFrame(
        [
            (float(r), float(p))
            for r, p in zip(rng.integers(1, 6, 200), rng.normal(3, 1, 200), strict=True)
        ],
        "rating double, prediction double",
    )
    figures = rating_metrics(pairs)
    for name in ("rmse", "mae"):
        expected = RegressionEvaluator(labelCol="rating", metricName=name).evaluate(pairs)
        assert figures[name] == pytest.approx(expected, abs=1e-9), name


def test_a_perfect_short_list_scores_one(spark):
    # Fewer relevant items than k, all at the top: NDCG, MAP, recall and hit rate are 1.
    recommendations = spark.createDataFrame(
        [(1, 5, 1), (1, 6, 2), (1, 7, 3)], "user_idx int, item_idx int, rank int"
    )
    relevant = spark.createDataFrame([(1, 5), (1, 6)], "user_idx int, item_idx int")
    got = ranking_metrics(recommendations, relevant, K)
    assert got["ndcg_at_k"] == pytest.approx(1.0)
    assert got["map_at_k"] == pytest.approx(1.0)
    assert got["recall_at_k"] == pytest.approx(1.0)
    assert got["precision_at_k"] == pytest.approx(2 / 3)


def test_rating_metrics_by_hand(spark):
    predictions = spark.createDataFrame(
        [(4.0, 3.0), (4.0, 4.0), (3.0, 5.0)], "rating double, prediction float"
    )
    got = rating_metrics(predictions)
    assert got["rmse"] == pytest.approx(math.sqrt(5 / 3), rel=1e-6)
    assert got["mae"] == pytest.approx(1.0)
    assert got["rows"] == 3
    assert rating_metrics(predictions.limit(0)) == {"rmse": None, "mae": None, "rows": 0}


def test_coverage_novelty_and_assess(spark):
    recommendations, relevant = frames(spark)
    listed = recommendations.where("rank <= 3")
    assert coverage(listed, 12) == pytest.approx(6 / 12)
    # Items 10 (3 raters) and 20 (1 rater) among 3 training users; the rest unrated.
    train = spark.createDataFrame(
        [(1, 10, 4.0), (2, 10, 3.0), (3, 10, 5.0), (1, 20, 2.0)],
        "user_idx int, item_idx int, rating float",
    )
    popularity, users = item_popularity(train)
    assert users == 3
    # -log2((n+1)/4): item 10 -> 0, item 20 -> 1, unrated -> 2; 12 listed rows summing to 15.
    assert novelty(listed, popularity, users) == pytest.approx(15 / 12)
    everything = assess(
        None, recommendations, relevant, K, 12, popularity=popularity, n_users=users
    )
    assert everything["coverage"] == pytest.approx(0.5)
    assert everything["novelty"] == pytest.approx(15 / 12)
    assert everything["rmse"] is None and everything["ranked_users"] == 5


def test_relevance_threshold_zero_keeps_every_row(spark):
    validation = spark.createDataFrame(
        [(1, 1, 1.0), (1, 2, 4.0), (2, 3, 5.0)], "user_idx int, item_idx int, rating float"
    )
    assert relevant_items(validation, 0).count() == 3
    assert relevant_items(validation, 4).count() == 2


def test_bias_baseline_recovers_additive_ratings_and_ranks_by_item_bias(spark):
    user_effect, item_effect = [0.5, -0.5], [1.0, 0.25, -1.0, -0.25]
    rows = [(u, i, 3.0 + user_effect[u] + item_effect[i]) for u in range(2) for i in range(4)]
    train = spark.createDataFrame(rows, "user_idx int, item_idx int, rating float")
    fitted = fit_biases(train, n_items=5, reg=0.0, iterations=2)
    predicted = fitted.predict(train).toPandas()
    assert np.allclose(predicted["prediction"], predicted["rating"], atol=1e-5)
    unknown = fitted.predict(
        spark.createDataFrame([(0, 4, 0.0)], "user_idx int, item_idx int, rating float")
    )
    assert unknown.first()["prediction"] == pytest.approx(3.5)  # mu + b_u; item 4 never rated
    # The scorer ranks by mu + b_u + b_i; user 0 has rated item 0 in this exclusion list.
    seen = seen_items(spark.createDataFrame([(0, 0)], "user_idx int, item_idx int"))
    lists = recommend_all(
        spark, fitted.scorer.users, seen, ScoringPlan(fitted.scorer.payload, 3, device="cpu")
    )
    got = lists.toPandas().sort_values(["user_idx", "rank"])
    assert got.loc[got.user_idx == 0, "item_idx"].tolist() == [1, 4, 3]
    assert got.loc[got.user_idx == 0, "score"].tolist() == pytest.approx([3.75, 3.5, 3.25])
    assert got.loc[got.user_idx == 1, "item_idx"].tolist() == [0, 1, 4]
    mean = fit_global_mean(train)
    assert mean.scorer is None
    assert pd.Series(mean.predict(train).toPandas()["prediction"]).eq(3.0).all()
