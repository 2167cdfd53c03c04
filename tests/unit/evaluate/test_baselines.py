"""The ranking baselines (most popular, EASE) and the figures beyond accuracy, on hand-made data
whose answers are worked out here; and the benchmark's new contenders end to end. The tests that
need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_baselines.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from recspark.core.config import load_config
from recspark.data.side_info import item_genre_flags
from recspark.evaluate.benchmark import Dataset, Skipped, run_ease
from recspark.evaluate.report import best_per_metric, format_metric_table


def test_ease_is_skipped_above_its_item_limit():
    config = load_config(overrides=["benchmark.ease_max_items=4"])
    dataset = Dataset("tiny", config, 10)
    with pytest.raises(Skipped, match="ease_max_items"):
        run_ease(None, dataset, SimpleNamespace(n_items=5))


def test_item_genre_flags_from_a_titles_table(tmp_path):
    flags = ["0"] * 19
    rows = []
    for item, genres in ((7, (1, 5)), (8, (5,)), (9, ())):
        line = flags.copy()
        for genre in genres:
            line[genre] = "1"
        rows.append("|".join([str(item), f"Film {item}", "01-Jan-1995", "", "url", *line]))
    titles = tmp_path / "u.item"
    titles.write_text("\n".join(rows) + "\n", encoding="latin-1")
    prepared = tmp_path / "prepared"
    (prepared / "item_index").mkdir(parents=True)
    pd.DataFrame({"item_id": [9, 7, 8, 42], "item_idx": [0, 1, 2, 3]}).to_parquet(
        prepared / "item_index" / "part-0.parquet"
    )
    got = item_genre_flags(prepared, 5, titles_path=str(titles))
    # Genres present: Action (1) and Comedy (5), sorted by name; item 42 and index 4 are unknown.
    np.testing.assert_array_equal(got, [[0, 0], [1, 1], [0, 1], [0, 0], [0, 0]])
    assert item_genre_flags(prepared, 5) is None


def test_best_per_metric_marks_the_best_contender():
    rows = {
        "model": {"rmse": 0.9, "ndcg_at_k": 0.30, "coverage": 0.2, "novelty": 5.0},
        "als": {"rmse": 0.95, "ndcg_at_k": 0.35, "coverage": 0.2, "novelty": 6.0},
        "global_mean": {"rmse": 1.1, "ndcg_at_k": None, "coverage": None},
    }
    best = best_per_metric(rows)
    assert best == {"rmse": ["model"], "ndcg_at_k": ["als"], "coverage": ["model", "als"]}
    text = format_metric_table(rows, best).splitlines()
    assert text[0].split(" | ")[0].strip() == "metric"
    ndcg = next(line for line in text if line.startswith("ndcg_at_k"))
    assert [cell.strip() for cell in ndcg.split(" | ")] == ["ndcg_at_k", "0.3000", "0.3500*", "n/a"]
