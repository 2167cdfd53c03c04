"""Eligible items from ``prepare``'s ``item_counts/`` table, read on the driver without Spark."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recspark.core.errors import BadInputError
from recspark.data.prepared import ITEM_COUNTS, eligible_in_run


def write_counts(prepared, index, counts) -> None:
    folder = prepared / ITEM_COUNTS
    folder.mkdir(parents=True)
    table = pa.table(
        {"item_idx": pa.array(index, pa.int32()), "train_ratings": pa.array(counts, pa.int64())}
    )
    pq.write_table(table, folder / "part-00000.parquet")
    (folder / "_SUCCESS").touch()


class NoSpark:
    """A session that fails any use: the table must be read without Spark."""

    def __getattr__(self, name):
        raise AssertionError(f"Spark was used ({name}) though item_counts/ was written")


def test_items_below_the_threshold_or_unrated_are_not_eligible(tmp_path):
    write_counts(tmp_path, [0, 2, 3, 5], [7, 5, 4, 12])
    eligible = eligible_in_run(NoSpark(), tmp_path, 6, 5)
    assert eligible.tolist() == [True, False, True, False, False, True]


def test_zero_threshold_lists_every_item_without_reading(tmp_path):
    assert eligible_in_run(NoSpark(), tmp_path, 4, 0).tolist() == [True] * 4


def test_counts_of_another_run_are_refused(tmp_path):
    write_counts(tmp_path, [0, 9], [5, 5])
    with pytest.raises(BadInputError, match="outside the model's 6 items"):
        eligible_in_run(NoSpark(), tmp_path, 6, 1)
