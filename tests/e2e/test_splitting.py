"""Split methods with known answers, deterministic whatever the partitioning."""

from __future__ import annotations

import pytest

from recspark.data.splitting import flag_validation, set_apart_cold_start, split_ratings

SCHEMA = "user_idx int, item_idx int, rating float, timestamp long"


def ratings_of(spark, counts: dict[int, int]):
    """User u rates items 0..counts[u]-1, item i at time 100 * i."""
    rows = [(u, i, 1.0 + i % 5, 100 * i) for u, n in counts.items() for i in range(n)]
    return spark.createDataFrame(rows, SCHEMA)


def held_out(frame):
    return sorted((r.user_idx, r.item_idx) for r in frame.collect())


def test_random_split_is_a_fraction_of_rows_and_ignores_partitioning(spark):
    ratings = ratings_of(spark, {u: 50 for u in range(40)})
    _, validation = split_ratings(ratings, "random", 0.2, seed=3)
    _, again = split_ratings(ratings.repartition(7), "random", 0.2, seed=3)
    _, other_seed = split_ratings(ratings, "random", 0.2, seed=4)
    chosen = held_out(validation)
    assert chosen == held_out(again)
    assert chosen != held_out(other_seed)
    assert 0.17 < len(chosen) / 2000 < 0.23


def test_user_stratified_holds_out_the_rounded_fraction_of_each_user(spark):
    # round half up, and at least one rating stays in train: 1 -> 0, 2 -> 1, 4 -> 1, 10 -> 3
    ratings = ratings_of(spark, {1: 1, 2: 2, 3: 4, 4: 10})
    flagged = flag_validation(ratings, "user_stratified", 0.25, seed=42)
    per_user = {
        r.user_idx: r["count"]
        for r in flagged.where("_validation").groupBy("user_idx").count().collect()
    }
    assert per_user == {2: 1, 3: 1, 4: 3}
    again = flag_validation(ratings.repartition(3), "user_stratified", 0.25, seed=42)
    assert held_out(flagged.where("_validation")) == held_out(again.where("_validation"))


def test_chronological_holds_out_each_users_latest_ratings(spark):
    ratings = ratings_of(spark, {1: 10, 2: 4, 3: 1})
    train, validation = split_ratings(ratings, "chronological", 0.3, seed=1)
    assert held_out(validation) == [(1, 7), (1, 8), (1, 9), (2, 3)]
    assert train.count() == 11


def test_unknown_method_and_bad_fraction_are_rejected(spark):
    ratings = ratings_of(spark, {1: 2})
    with pytest.raises(ValueError, match=r"input\.validation_path"):
        split_ratings(ratings, "given", 0.2, seed=1)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        split_ratings(ratings, "random", 1.5, seed=1)


def test_cold_start_rows_are_set_apart(spark):
    train = spark.createDataFrame([(0, 0, 4.0, 1), (1, 1, 3.0, 1)], SCHEMA)
    validation = spark.createDataFrame(
        [(0, 1, 5.0, 2), (2, 0, 1.0, 2), (1, 9, 2.0, 2), (1, 0, 3.0, 2)], SCHEMA
    )
    warm, cold = set_apart_cold_start(train, validation)
    assert warm.columns == validation.columns
    assert held_out(warm) == [(0, 1), (1, 0)]
    assert held_out(cold) == [(1, 9), (2, 0)]
