"""Similar items: nearest neighbours by cosine, on the driver and as a Spark job, known answers."""

from __future__ import annotations

import numpy as np

from recspark.serve.similar import most_similar, similar_items_table
from tests.unit.serve.test_similar import _twins


def test_spark_table_matches_the_driver_answer_for_every_item(spark):
    factors = _twins(pairs=15)
    eligible = np.ones(len(factors), dtype=bool)
    eligible[[4, 9]] = False
    items = spark.createDataFrame([(i,) for i in range(len(factors))], "item_idx int")
    table = similar_items_table(
        spark, items, factors, top_n=4, eligible=eligible, items_per_block=7, partitions=3
    ).toPandas()
    assert len(table) == len(factors) * 4
    assert table.groupby("item_idx")["rank"].apply(lambda r: sorted(r) == [1, 2, 3, 4]).all()
    for item, rows in table.groupby("item_idx"):
        rows = rows.sort_values("rank")
        index, cosine = most_similar(factors, int(item), 4, eligible)
        assert rows["similar_item_idx"].tolist() == index.tolist()
        np.testing.assert_allclose(rows["similarity"], cosine, atol=1e-6)
        assert item not in rows["similar_item_idx"].tolist()
        assert not set(rows["similar_item_idx"]) & {4, 9}
    # The twin of every eligible-twinned item is its first neighbour.
    first = table[table["rank"] == 1].set_index("item_idx")["similar_item_idx"]
    for item, neighbour in first.items():
        if item ^ 1 not in (4, 9):
            assert neighbour == item ^ 1
