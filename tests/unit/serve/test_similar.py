"""Similar items: nearest neighbours by cosine, on the driver and as a Spark job, known answers.
The tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_similar.py.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recspark.core.errors import BadInputError
from recspark.serve.similar import most_similar, read_item_factors, unit_rows


def _twins(pairs: int = 12, factors: int = 5, seed: int = 1) -> np.ndarray:
    """Items 2k and 2k+1 point almost the same way (lengths differ); pairs are far apart.

    Twins differ by a little noise, so no two cosines tie up to float rounding.
    """
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(pairs, factors))
    twins = np.repeat(base, 2, axis=0) + rng.normal(0, 0.03, size=(2 * pairs, factors))
    lengths = rng.uniform(0.5, 3.0, size=2 * pairs)
    return (twins * lengths[:, None]).astype(np.float32)


def test_unit_rows_keeps_zero_rows_zero():
    unit = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0]])


def test_most_similar_finds_the_twin_whatever_its_length():
    factors = _twins()
    for item in range(len(factors)):
        index, cosine = most_similar(factors, item, 3)
        assert index[0] == item ^ 1
        assert cosine[0] > 0.99
        assert item not in index
        assert (np.diff(cosine) <= 1e-7).all()


def test_most_similar_skips_ineligible_items_and_breaks_ties_by_index():
    factors = np.array(
        [[1.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.1]], dtype=np.float32
    )
    index, _ = most_similar(factors, 0, 4)
    assert index.tolist() == [1, 2, 4, 3]  # 1 and 2 tie at cosine 1: lower index first
    eligible = np.array([True, False, True, True, True])
    index, _ = most_similar(factors, 0, 10, eligible)
    assert index.tolist() == [2, 4, 3]  # 1 is out; fewer than asked come back
    with pytest.raises(IndexError):
        most_similar(factors, 5, 2)


def test_read_item_factors_orders_rows_by_item_index(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    order = [2, 0, 3, 1]
    table = pa.table(
        {
            "item_idx": pa.array(order, pa.int32()),
            "bias": pa.array([float(i) for i in order], pa.float32()),
            "factors": pa.array([matrix[i].tolist() for i in order], pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "part-0.parquet")
    side = read_item_factors(str(tmp_path))
    np.testing.assert_array_equal(side.factors, matrix)
    np.testing.assert_array_equal(side.bias, [0.0, 1.0, 2.0, 3.0])
    pq.write_table(table.slice(0, 3), tmp_path / "part-0.parquet")
    with pytest.raises(BadInputError, match="once each"):
        read_item_factors(str(tmp_path))
