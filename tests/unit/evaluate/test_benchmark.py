"""benchmark: runs on a tiny synthetic size, and its figures are the outputs' own. The tests that
need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_benchmark.py.
"""

from __future__ import annotations

import pytest

from recspark.evaluate.benchmark_report import ContenderResult, accuracy_table, format_table, ratios


def test_ratios_and_table_by_hand():
    results = [
        ContenderResult("recspark", 2.0, 1.0, {"rmse": 0.9, "ndcg_at_k": 0.3}),
        ContenderResult("als", 6.0, 5.0, {"rmse": 1.0, "ndcg_at_k": 0.2}),
    ]
    columns = accuracy_table(10)
    got = ratios(results, "als", columns)
    assert got == {
        "recspark": pytest.approx(
            {"rmse": 0.9, "ndcg_at_k": 1.5, "train_seconds": 3.0, "score_seconds": 5.0}
        )
    }
    text = format_table({"tiny": results}, columns, "als").splitlines()
    assert [cell.strip() for cell in text[0].split(" | ")] == [
        "data set",
        "model",
        "RMSE",
        "NDCG@10",
        "train s",
        "score s",
    ]
    assert "recspark/als" in text[-1] and "5.000x" in text[-1] and "0.900" in text[-1]
