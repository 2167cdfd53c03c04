"""Inputs a real team hands over that used to be corrupted silently (issue 28, items 1 to 3).

1. Ids written ``12.0`` one day and ``12`` the next (CSV) are the same ids, not twice as many.
2. CSV parts whose headers list the columns in different orders are each read by their own header.
3. Parquet float ids holding NaN, inf, -1.0 and 2.5 are quarantined under the default id type.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recspark.data.reasons import NON_NUMERIC_USER, USER_OUT_OF_RANGE
from tests.e2e.test_prepare import prepare, prepared_ratings, read


def lines_of(users: range, items: range, id_text=str) -> list[str]:
    return [
        f"{id_text(u)},{id_text(i)},{1 + (u + i) % 5},{1000 + u * 10 + i}"
        for u in users
        for i in items
    ]


def write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def test_integral_float_ids_read_as_the_integers_they_are_from_day_to_day(spark, tmp_path):
    root = tmp_path / "root"
    header = "user_id,item_id,rating,timestamp"
    day1 = write_csv(
        tmp_path / "day1.csv", header, lines_of(range(1, 9), range(1, 6), "{}.0".format)
    )
    one = prepare(
        spark, root, **{"input.path": day1, "input.format": "csv", "run_date": "2026-02-01"}
    )
    assert one["counts"]["quarantined"] == 0, one["counts"]
    users1 = read(one, "user_index")
    assert users1["user_id"].dtype == "int64" and sorted(users1["user_id"]) == list(range(1, 9))
    # Day 2: the same ids written as plain integers, and one new user.
    day2 = write_csv(tmp_path / "day2.csv", header, lines_of(range(1, 10), range(1, 6)))
    two = prepare(
        spark, root, **{"input.path": day2, "input.format": "csv", "run_date": "2026-02-02"}
    )
    assert two["counts"]["quarantined"] == 0, two["counts"]
    users2 = read(two, "user_index")
    assert sorted(users2["user_id"]) == list(range(1, 10))
    assert len(read(two, "item_index")) == 5
    assert (two["counts"]["new_users"], two["counts"]["new_items"]) == (1, 0)
    # Day 1's indices are kept for the same users.
    kept = users2.merge(users1, on="user_id", suffixes=("", "_before"))
    assert (kept["user_idx"] == kept["user_idx_before"]).all() and len(kept) == 8


def test_each_csv_part_is_read_by_its_own_header(spark, tmp_path):
    folder = tmp_path / "parts"
    # Users 1-4 rate items 101-103 in both parts; only the column order differs.
    write_csv(
        folder / "part-00000.csv",
        "user_id,item_id,rating,timestamp",
        [f"{u},{i},4,{u * 1000 + i}" for u in (1, 2) for i in (101, 102, 103)],
    )
    write_csv(
        folder / "part-00001.csv",
        "item_id,timestamp,user_id,rating",
        [f"{i},{u * 1000 + i},{u},3" for u in (3, 4) for i in (101, 102, 103)],
    )
    summary = prepare(spark, tmp_path / "root", **{"input.path": folder, "input.format": "csv"})
    assert summary["counts"]["quarantined"] == 0, summary["counts"]
    got = prepared_ratings(summary)
    assert sorted(got["user_id"].unique()) == [1, 2, 3, 4]
    assert sorted(got["item_id"].unique()) == [101, 102, 103]
    by_user = got.groupby("user_id")["rating"].first().to_dict()
    assert by_user == {1: 4.0, 2: 4.0, 3: 3.0, 4: 3.0}


def test_a_csv_part_whose_header_lacks_a_column_is_named(spark, tmp_path):
    folder = tmp_path / "parts"
    write_csv(folder / "part-00000.csv", "user_id,item_id,rating", ["1,2,4", "2,2,5"])
    write_csv(folder / "part-00001.csv", "customer,item_id,rating", ["3,2,4", "4,2,5"])
    from tests.e2e.test_prepare import run_cli

    status, summary = run_cli(
        {
            "paths.root": tmp_path / "root",
            "spark.conf": "{}",
            "input.path": folder,
            "input.format": "csv",
        }
    )
    assert status == 1, summary
    assert "part-00001.csv" in summary["error"] and "user_id" in summary["error"]
    assert not (tmp_path / "root" / "prepared").exists() or not any(
        (tmp_path / "root" / "prepared").iterdir()
    )


def test_parquet_float_ids_that_name_nobody_are_quarantined_by_default(spark, tmp_path):
    good = [(float(u), float(i)) for u in range(1, 7) for i in range(10, 15)]
    bad = {
        float("nan"): NON_NUMERIC_USER,
        float("inf"): NON_NUMERIC_USER,
        -1.0: USER_OUT_OF_RANGE,
        2.5: NON_NUMERIC_USER,
    }
    pairs = good + [(user, 10.0) for user in bad]
    table = pa.table(
        {
            "user_id": pa.array([u for u, _ in pairs], pa.float64()),
            "item_id": pa.array([i for _, i in pairs], pa.float64()),
            "rating": pa.array([4.0] * len(pairs)),
        }
    )
    path = tmp_path / "in" / "ratings.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    summary = prepare(
        spark,
        tmp_path / "root",
        **{"input.path": path, "input.format": "parquet", "input.max_bad_fraction": 0.5},
    )
    index = read(summary, "user_index")
    assert index["user_id"].dtype == "int64" and sorted(index["user_id"]) == list(range(1, 7))
    assert sorted(read(summary, "item_index")["item_id"]) == list(range(10, 15))
    quarantine = pd.read_parquet(summary["outputs"]["quarantine"])
    found = {}
    for line, reason in zip(quarantine["raw_line"], quarantine["reason"], strict=True):
        user = float(json.loads(line)["user_id"])  # NaN and Infinity, as Spark writes them
        found["nan" if user != user else user] = reason
    assert found == {
        "nan": NON_NUMERIC_USER,
        float("inf"): NON_NUMERIC_USER,
        -1.0: USER_OUT_OF_RANGE,
        2.5: NON_NUMERIC_USER,
    }
