"""The prepare job end to end: MovieLens acceptance, quarantine, stable ids, splits, implicit."""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recspark.cli import main
from recspark.commands.prepare import run
from recspark.core.config import load_config
from recspark.core.location import Location
from recspark.data.reasons import REASONS
from tests.e2e.test_sources import BAD_LINES

TABLES = ("train", "validation", "cold_start")


def prepare(spark, root: Path, **settings) -> dict:
    values = {"paths.root": str(root), "run_date": "2026-02-01", "spark.conf": "{}"}
    values.update(settings)
    config = load_config(None, [f"{key}={value}" for key, value in values.items()])
    return run(config, spark).summary()


def read(summary: dict, name: str) -> pd.DataFrame:
    return pd.read_parquet(summary["outputs"][name])


def prepared_ratings(summary: dict) -> pd.DataFrame:
    """Every prepared row with its raw ids, sorted."""
    users, items = read(summary, "user_index"), read(summary, "item_index")
    rows = pd.concat([read(summary, name).assign(table=name) for name in TABLES])
    rows = rows.merge(users, on="user_idx").merge(items, on="item_idx")
    return rows.sort_values(["user_id", "item_id"]).reset_index(drop=True)


def pairs(frame: pd.DataFrame, *columns: str) -> list[tuple]:
    return list(frame[list(columns)].itertuples(index=False, name=None))


def load_udata(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", names=["user_id", "item_id", "rating", "timestamp"])


def check_index_is_dense(frame: pd.DataFrame, id_col: str, idx_col: str) -> None:
    assert frame[id_col].is_unique
    assert sorted(frame[idx_col]) == list(range(len(frame)))


def test_ml100k_user_stratified(spark, ml100k, tmp_path):
    summary = prepare(
        spark,
        tmp_path,
        **{
            "input.path": ml100k / "u.data",
            "input.format": "auto",
            "split.method": "user_stratified",
            "split.validation_fraction": 0.25,
        },
    )
    counts = summary["counts"]
    assert (counts["users"], counts["items"]) == (943, 1682)
    assert counts["train"] + counts["validation"] + counts["cold_start"] == 100000
    assert counts["quarantined"] == 0
    # Each user holds out round-half-up(n / 4) of n ratings.
    per_user = load_udata(ml100k / "u.data").groupby("user_id").size()
    assert counts["validation"] + counts["cold_start"] == int(np.floor(per_user * 0.25 + 0.5).sum())
    check_index_is_dense(read(summary, "user_index"), "user_id", "user_idx")
    check_index_is_dense(read(summary, "item_index"), "item_id", "item_idx")
    manifest = json.loads(Location(summary["outputs"]["manifest"]).read_text())
    assert manifest["users"] == 943 and manifest["items"] == 1682
    assert manifest["rating_range"] == [1.0, 5.0]
    assert manifest["input"]["format"] == "movielens-100k"
    assert manifest["split"] == {
        "method": "user_stratified",
        "validation_fraction": 0.25,
        "test_fraction": 0.0,
        "seed": 42,
    }
    train = read(summary, "train")
    assert manifest["rating"]["mean"] == pytest.approx(train["rating"].mean())
    assert len(manifest["input"]["fingerprint"]) == 16
    # Petastorm's batch reader reads the table as written.
    from recspark.train.feeding import open_feed

    fed = 0
    with open_feed(summary["outputs"]["train"], batch_size=8192, shuffle=True, seed=1) as loader:
        for batch in loader:
            fed += len(batch["user_idx"])
            assert int(batch["item_idx"].max()) < 1682
    assert fed == counts["train"]


def test_ml100k_copy_with_malformed_lines(spark, ml100k, tmp_path):
    lines = (ml100k / "u.data").read_text().splitlines()
    extra = {
        "196\t242\t3\t881250949": "duplicate_row",  # a copy of u.data's first line
        "196\t242\t5\t800000000": "repeated_pair",  # an older rating of the same pair
        "186\t302\t4\t999999999": None,  # a newer rating of line 2: that line is set aside
    }
    copy = tmp_path / "input" / "u.data"
    copy.parent.mkdir()
    copy.write_text("\n".join([*lines[:50000], *BAD_LINES, *lines[50000:], *extra]) + "\n")
    summary = prepare(spark, tmp_path / "root", **{"input.path": copy, "input.format": "auto"})
    counts = summary["counts"]
    expected = {reason: 0 for reason in REASONS}
    for reason in [*BAD_LINES.values(), "duplicate_row", "repeated_pair", "repeated_pair"]:
        expected[reason] += 1
    assert counts["quarantined_by_reason"] == expected
    assert counts["quarantined"] == 15 and counts["input_rows"] == 100015
    assert (counts["users"], counts["items"]) == (943, 1682)
    quarantine = read(summary, "quarantine")
    found = sorted(pairs(quarantine, "raw_line", "reason"))
    assert found == sorted(
        [
            *BAD_LINES.items(),
            ("196\t242\t5\t800000000", "repeated_pair"),
            ("196\t242\t3\t881250949", "duplicate_row"),
            ("186\t302\t3\t891717742", "repeated_pair"),
        ]
    )
    # The good rows are all there: u.data with (186, 302) re-rated.
    truth = load_udata(ml100k / "u.data")
    truth.loc[(truth.user_id == 186) & (truth.item_id == 302), ["rating", "timestamp"]] = [
        4,
        999999999,
    ]
    truth = truth.sort_values(["user_id", "item_id"]).reset_index(drop=True)
    got = prepared_ratings(summary)
    assert len(got) == 100000
    np.testing.assert_array_equal(
        got[["user_id", "item_id", "timestamp"]].to_numpy(),
        truth[["user_id", "item_id", "timestamp"]].to_numpy(),
    )
    np.testing.assert_array_equal(got["rating"].to_numpy(), truth["rating"].to_numpy())


def test_ml100k_given_split_sets_cold_start_apart(ml100k, ml100k_u1):
    # prepare of u1.base -> u1.test with input.format auto and split.method given, run once for
    # the session (conftest.py) and shared with the tests that train on it.
    _, summary = ml100k_u1
    base, test = load_udata(ml100k / "u1.base"), load_udata(ml100k / "u1.test")
    cold = ~test.user_id.isin(base.user_id) | ~test.item_id.isin(base.item_id)
    counts = summary["counts"]
    assert (counts["users"], counts["items"]) == (943, 1682)
    assert counts["train"] == 80000
    assert (counts["validation"], counts["cold_start"]) == (int((~cold).sum()), int(cold.sum()))
    assert counts["cold_start"] > 0
    got = prepared_ratings(summary)
    cold_start = got[got.table == "cold_start"]
    expected = set(pairs(test[cold], "user_id", "item_id"))
    assert set(pairs(cold_start, "user_id", "item_id")) == expected


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def grid(users: list[str], items: list[str]) -> pd.DataFrame:
    """Every user rates every item; rating and time vary with the position."""
    rows = [
        (u, i, 1 + (a + b) % 5, 1000 + 10 * b + a)
        for a, u in enumerate(users)
        for b, i in enumerate(items)
    ]
    return pd.DataFrame(rows, columns=["customer", "product", "stars", "when"])


COLUMNS = {
    "input.columns.user": "customer",
    "input.columns.item": "product",
    "input.columns.rating": "stars",
    "input.columns.timestamp": "when",
    "input.format": "csv",
    "split.validation_fraction": 0.3,
}


def test_two_runs_keep_every_old_index_and_append_new_ids(spark, tmp_path):
    first = write_csv(
        tmp_path / "day1.csv", grid(["u1", "u2", "u3", "u4", "u5"], ["i2", "i3", "i4", "i1"])
    )
    one = prepare(
        spark, tmp_path / "root", **COLUMNS, **{"input.path": first, "run_date": "2026-02-01"}
    )
    users1 = dict(read(one, "user_index")[["user_id", "user_idx"]].itertuples(index=False))
    items1 = dict(read(one, "item_index")[["item_id", "item_idx"]].itertuples(index=False))
    assert users1 == {"u1": 0, "u2": 1, "u3": 2, "u4": 3, "u5": 4}
    assert items1 == {"i1": 0, "i2": 1, "i3": 2, "i4": 3}
    # Day 2: u3 is gone, u0 and u9 are new, items i0 and i5 are new.
    second = write_csv(
        tmp_path / "day2.csv",
        grid(["u9", "u1", "u2", "u4", "u5", "u0"], ["i5", "i1", "i2", "i0", "i4"]),
    )
    two = prepare(
        spark, tmp_path / "root", **COLUMNS, **{"input.path": second, "run_date": "2026-02-02"}
    )
    users2 = dict(read(two, "user_index")[["user_id", "user_idx"]].itertuples(index=False))
    items2 = dict(read(two, "item_index")[["item_id", "item_idx"]].itertuples(index=False))
    assert users2 == {**users1, "u0": 5, "u9": 6}
    assert items2 == {**items1, "i0": 4, "i5": 5}
    assert (two["counts"]["new_users"], two["counts"]["new_items"]) == (2, 2)
    manifest = json.loads(Location(two["outputs"]["manifest"]).read_text())
    assert manifest["previous_index_date"] == "2026-02-01" and manifest["users"] == 7
    got = prepared_ratings(two)
    assert len(got) == 30 and set(got.user_id) == {"u0", "u1", "u2", "u4", "u5", "u9"}
    # rated/ lists every user of the map, u3 (gone today, still in the map) with nothing rated:
    # it is the list of users score scores.
    rated = read(two, "rated").set_index("user_id")
    assert dict(rated["user_idx"]) == users2
    assert list(rated.loc["u3", "items"]) == []
    assert list(rated.loc["u9", "items"]) == sorted(
        items2[i] for i in ["i5", "i1", "i2", "i0", "i4"]
    )


def test_same_input_and_seed_give_the_same_maps_and_splits(spark, tmp_path):
    users = [str(100 + u) for u in range(12)]
    frame = grid(users, [str(7 * i) for i in range(9)])
    path = tmp_path / "ratings.dat"
    path.write_text(
        "".join(f"{r.customer}::{r.product}::{r.stars}::{r.when}\n" for r in frame.itertuples())
    )
    settings = {"input.path": path, "input.format": "auto", "split.method": "random"}
    one = prepare(spark, tmp_path / "a", **settings)
    two = prepare(spark, tmp_path / "b", **settings)
    for name in ("user_index", "item_index", *TABLES):
        left = read(one, name).sort_values(list(read(one, name).columns)).reset_index(drop=True)
        right = read(two, name).sort_values(list(left.columns)).reset_index(drop=True)
        pd.testing.assert_frame_equal(left, right)
    assert one["counts"] == two["counts"]
    assert one["counts"]["train"] + one["counts"]["validation"] + one["counts"]["cold_start"] == 108
    # rated/: every item each user rated, in any split, one sorted array per user (what score
    # leaves out).
    rated = read(one, "rated")
    every = pd.concat([read(one, name) for name in TABLES])
    expected = every.groupby("user_idx")["item_idx"].apply(sorted).to_dict()
    assert {
        u: list(items) for u, items in zip(rated.user_idx, rated["items"], strict=True)
    } == expected
    assert sorted(pairs(rated, "user_id", "user_idx")) == sorted(
        pairs(read(one, "user_index"), "user_id", "user_idx")
    )


def test_synthetic_format_with_chronological_split(spark, tmp_path):
    rows = [
        (u, i, float(1 + (u + i) % 5), 500 + (i + u) % 6 * 10) for u in range(10) for i in range(6)
    ]
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    (tmp_path / "data" / "ratings").mkdir(parents=True)
    ratings.to_parquet(tmp_path / "data" / "ratings" / "part-0.parquet")
    summary = prepare(
        spark,
        tmp_path,
        **{
            "input.format": "synthetic",
            "split.method": "chronological",
            "split.validation_fraction": 0.34,
        },
    )
    got = prepared_ratings(summary)
    held = got[got.table != "train"]
    latest = ratings.sort_values("timestamp").groupby("user_id").tail(2)  # round(6 * 0.34) = 2
    assert sorted(pairs(held, "user_id", "item_id")) == sorted(pairs(latest, "user_id", "item_id"))
    # item_counts/: the train split's ratings per item, what score's eligible items come from.
    counts = read(summary, "item_counts").set_index("item_idx")["train_ratings"]
    expected = read(summary, "train").groupby("item_idx").size()
    assert counts.sort_index().to_dict() == expected.sort_index().to_dict()


def test_implicit_events_aggregate_into_counts_and_weights(spark, tmp_path):
    events = [
        (u, i, 1 + (u * i) % 3, 10 * k)
        for u in range(8)
        for i in range(5)
        for k in range(1 + (u + i) % 3)
    ]
    frame = pd.DataFrame(events, columns=["user", "song", "plays", "ts"])
    bad = pd.DataFrame([(0, 0, 1, 0), (1, 1, 0, 99), (2, 2, None, 99)], columns=frame.columns)
    # (0, 0, 1, 0) re-delivers the first event; a weight of 0 or none is quarantined.
    path = write_csv(tmp_path / "plays.csv", pd.concat([frame, bad]).astype({"plays": "Int64"}))
    summary = prepare(
        spark,
        tmp_path / "root",
        **{
            "input.path": path,
            "input.format": "auto",
            "input.implicit": "true",
            "input.columns.user": "user",
            "input.columns.item": "song",
            "input.columns.weight": "plays",
            "input.columns.timestamp": "ts",
            "split.method": "user_stratified",
            "input.max_bad_fraction": 0.1,
        },
    )
    counts = summary["counts"]
    assert counts["quarantined_by_reason"]["duplicate_row"] == 1
    assert counts["quarantined_by_reason"]["weight_out_of_range"] == 1
    assert counts["quarantined_by_reason"]["missing_weight"] == 1
    assert counts["aggregated_events"] == len(events) - 40
    got = prepared_ratings(summary)
    expected = (
        frame.groupby(["user", "song"])
        .agg(rating=("ts", "size"), weight=("plays", "sum"), timestamp=("ts", "max"))
        .reset_index()
    )
    assert len(got) == 40
    np.testing.assert_array_equal(
        got[["user_id", "item_id", "rating", "weight", "timestamp"]].to_numpy(dtype=float),
        expected.to_numpy(dtype=float),
    )
    assert list(read(summary, "train").columns) == [
        "user_idx",
        "item_idx",
        "rating",
        "timestamp",
        "weight",
    ]


def run_cli(overrides: dict) -> tuple[int, dict]:
    buffer = StringIO()
    with redirect_stdout(buffer):
        args = [part for k, v in overrides.items() for part in ("--set", f"{k}={v}")]
        status = main(["prepare", *args])
    return status, json.loads(buffer.getvalue().strip().splitlines()[-1])


def test_failures_publish_nothing(spark, tmp_path):
    root = tmp_path / "root"
    good = write_csv(tmp_path / "good.csv", grid(["a", "b", "c"], ["x", "y", "z", "w"]))
    base = {"paths.root": root, "spark.conf": "{}", **COLUMNS}
    status, summary = run_cli({**base, "input.path": good, "run_date": "2026-02-01"})
    assert status == 0, summary
    before = sorted(p.name for p in (root / "prepared" / "2026-02-01").iterdir())
    # Day 2: 3 of 15 rows are bad, above the default max_bad_fraction of 1%.
    broken = grid(["a", "b", "c"], ["x", "y", "z", "w", "v"]).astype(str)
    broken.loc[[0, 5, 9], "stars"] = ["", "NaN", "11"]
    bad = write_csv(tmp_path / "bad.csv", broken)
    status, summary = run_cli({**base, "input.path": bad, "run_date": "2026-02-02"})
    assert status == 1 and summary["status"] == "error"
    assert "3 of 15 rows are bad" in summary["error"]
    assert (
        "input.max_bad_fraction" in summary["error"] and "Nothing was published" in summary["error"]
    )
    # Only the quarantine of the rejected date is published, apart from the run dates.
    rejected = root / "prepared" / "_rejected" / "2026-02-02" / "quarantine"
    assert str(rejected) in summary["error"]
    assert sorted(pd.read_parquet(rejected)["reason"]) == [
        "missing_rating",
        "non_numeric_rating",
        "rating_out_of_range",
    ]
    # A failure after writing began (an empty validation split) discards the staging folder too.
    lonely = write_csv(tmp_path / "lonely.csv", grid(["a", "b"], ["x"]))
    status, summary = run_cli(
        {
            **base,
            "input.path": lonely,
            "run_date": "2026-02-03",
            "split.method": "user_stratified",
            "input.max_bad_fraction": 0.1,
        }
    )
    assert status == 1 and "validation with 0 rows" in summary["error"]
    assert sorted(p.name for p in (root / "prepared").iterdir()) == ["2026-02-01", "_rejected"]
    assert sorted(p.name for p in (root / "prepared" / "2026-02-01").iterdir()) == before
    assert list((root / "_staging").iterdir()) == []
