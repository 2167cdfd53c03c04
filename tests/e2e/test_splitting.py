"""Split methods with known answers, deterministic whatever the partitioning."""

from __future__ import annotations

import pytest

from recspark.data.splitting import (
    flag_cold_start,
    flag_holdouts,
    flag_validation,
    set_apart_cold_start,
    split_ratings,
)

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


def per_user(flagged, flag: str) -> dict[int, int]:
    return {
        r.user_idx: r["count"] for r in flagged.where(flag).groupBy("user_idx").count().collect()
    }


def test_a_test_split_is_held_out_before_validation_and_never_overlaps_it(spark):
    ratings = ratings_of(spark, {1: 1, 2: 2, 3: 4, 4: 10, 5: 20})
    # user_stratified: test takes round(n * 0.2), validation round(n * 0.25) of the rest of the
    # order, and one rating stays in train: 2 -> 0 + 1, 4 -> 1 + 1, 10 -> 2 + 3, 20 -> 4 + 5.
    flagged = flag_holdouts(ratings, "user_stratified", 0.25, 42, 0.2)
    assert per_user(flagged, "_test") == {3: 1, 4: 2, 5: 4}
    assert per_user(flagged, "_validation") == {2: 1, 3: 1, 4: 3, 5: 5}
    assert flagged.where("_test AND _validation").count() == 0
    # chronological: test holds each user's latest ratings, validation the ones just before.
    dated = flag_holdouts(ratings, "chronological", 0.25, 1, 0.2)
    assert held_out(dated.where("_test AND user_idx = 4")) == [(4, 8), (4, 9)]
    assert held_out(dated.where("_validation AND user_idx = 4")) == [(4, 5), (4, 6), (4, 7)]
    # random: disjoint ranges of one draw; at test_fraction 0 validation is what it always was.
    many = ratings_of(spark, {u: 50 for u in range(40)})
    drawn = flag_holdouts(many, "random", 0.2, 3, 0.1)
    assert 0.07 < drawn.where("_test").count() / 2000 < 0.13
    assert drawn.where("_test AND _validation").count() == 0
    plain = flag_validation(many, "random", 0.2, seed=3)
    none = flag_holdouts(many, "random", 0.2, 3, 0.0)
    assert held_out(plain.where("_validation")) == held_out(none.where("_validation"))
    with pytest.raises(ValueError, match="test_fraction"):
        flag_holdouts(many, "random", 0.5, 3, 0.5)


def test_cold_start_flags_held_out_rows_of_either_split(spark):
    rows = [(0, 0, 4.0, 1, False, False), (1, 1, 3.0, 1, False, False)]
    rows += [(0, 1, 5.0, 2, True, False), (2, 0, 1.0, 2, True, False)]
    rows += [(1, 0, 3.0, 2, False, True), (1, 9, 2.0, 2, False, True)]
    flagged = spark.createDataFrame(rows, SCHEMA + ", _validation boolean, _test boolean")
    cold = flag_cold_start(flagged).where("_cold_start")
    assert held_out(cold.where("_validation")) == [(2, 0)]
    assert held_out(cold.where("_test")) == [(1, 9)]
