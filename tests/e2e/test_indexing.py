"""Dense id maps: numbered in raw-id order, stable across runs, deterministic."""

from __future__ import annotations

import pytest

from recspark.core.errors import BadInputError
from recspark.data.indexing import apply_index, check_index, extend_index


def as_dict(index, id_col="user_id", idx_col="user_idx"):
    return {row[id_col]: row[idx_col] for row in index.collect()}


def test_first_run_numbers_ids_densely_in_raw_id_order(spark):
    ids = spark.createDataFrame([(30,), (10,), (20,), (10,), (None,)], "user_id long")
    index = extend_index(ids, "user_id", "user_idx")
    assert index.schema["user_idx"].dataType.simpleString() == "int"
    assert as_dict(index) == {10: 0, 20: 1, 30: 2}


def test_known_ids_keep_their_index_and_new_ids_follow_the_last(spark):
    previous = spark.createDataFrame([("b", 0), ("d", 1), ("a", 2)], "user_id string, user_idx int")
    ids = spark.createDataFrame([("c",), ("a",), ("e",), ("b",)], "user_id string")
    index = extend_index(ids, "user_id", "user_idx", previous)
    # d is absent today but keeps its index; c and e follow 2 in raw-id order.
    assert as_dict(index) == {"b": 0, "d": 1, "a": 2, "c": 3, "e": 4}
    assert check_index(index, "user_id", "user_idx") == 5


def test_the_same_ids_in_any_partitioning_give_the_same_map(spark):
    rows = [(i * 7919 % 1000,) for i in range(1000)]
    single = spark.createDataFrame(rows, "item_id long").coalesce(1)
    one = extend_index(single, "item_id", "item_idx")
    many = extend_index(
        spark.createDataFrame(rows[::-1], "item_id long").repartition(5), "item_id", "item_idx"
    )
    first = as_dict(one, "item_id", "item_idx")
    assert first == as_dict(many, "item_id", "item_idx")
    assert first == {item: item for item in range(1000)}


def test_a_changed_id_type_or_a_corrupt_map_fails_clearly(spark):
    previous = spark.createDataFrame([(1, 0)], "user_id long, user_idx int")
    ids = spark.createDataFrame([("x",)], "user_id string")
    with pytest.raises(BadInputError, match="string in this input but bigint"):
        extend_index(ids, "user_id", "user_idx", previous)
    corrupt = spark.createDataFrame([(1, 0), (2, 0)], "user_id long, user_idx int")
    with pytest.raises(BadInputError, match="corrupt"):
        check_index(corrupt, "user_id", "user_idx", "user_index of 2026-01-01")


def test_apply_index_adds_the_dense_column(spark):
    index = spark.createDataFrame([(5, 1), (6, 0)], "user_id long, user_idx int")
    ratings = spark.createDataFrame([(5, 4.0), (6, 3.0), (5, 2.0)], "user_id long, rating float")
    joined = apply_index(ratings, index, "user_id", "user_idx")
    got = sorted((r.user_idx, r.rating) for r in joined.collect())
    assert got == [(0, 3.0), (1, 2.0), (1, 4.0)]
