"""Reading every input format and checking every kind of bad row, with known answers."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import types as T

from recspark.core.errors import BadInputError, MissingInputError
from recspark.data import sources
from recspark.data.checks import split_valid
from recspark.data.dedup import aggregate_events, mark_duplicates, mark_repeated_events
from tests.unit.data.test_sources import write


def rows(frame, *columns):
    """Collect a tiny frame as a sorted list of tuples (test inputs are a few rows)."""
    names = list(columns) or frame.columns
    return sorted(
        (tuple(row[c] for c in names) for row in frame.select(*names).collect()),
        key=lambda r: tuple((x is None, 0 if x is None else x) for x in r),
    )


def test_movielens_formats_read_into_standard_columns(spark, tmp_path):
    for name, text, fmt in (
        ("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n", "movielens-100k"),
        ("ratings.dat", "196::242::3::881250949\n186::302::3::891717742\n", "movielens-1m"),
    ):
        frame = sources.read_ratings(spark, write(tmp_path / name, text), "auto")
        assert frame.schema["user_id"].dataType == T.LongType()
        assert frame.schema["rating"].dataType == T.FloatType()
        assert rows(frame, "user_id", "item_id", "rating", "timestamp", "reason") == [
            (186, 302, 3.0, 891717742, None),
            (196, 242, 3.0, 881250949, None),
        ], fmt


def test_ratings_csv_with_empty_trailing_columns_reads_without_complaint(spark, tmp_path):
    text = (
        "\ufeffuserId,movieId,rating,timestamp,,\n"
        "1,31,2.5,1260759144,,\n"
        "1,1029,3.0,1260759179,,\n"
        "\n"
        "2,10,4.0,835355493\n"
    )
    frame = sources.read_ratings(spark, write(tmp_path / "ratings.csv", text), "auto")
    assert rows(frame, "user_id", "item_id", "rating", "timestamp", "reason") == [
        (1, 31, 2.5, 1260759144, None),
        (1, 1029, 3.0, 1260759179, None),
        (2, 10, 4.0, 835355493, None),
    ]


def test_mapped_csv_tsv_and_parquet_columns(spark, tmp_path):
    csv = (
        "stars,customer,when,product,extra\n"
        '4,c1,2024-01-02 03:04:05,"lamp, red",x\n'
        "2,c2,1700000000,mug,y\n"
    )
    mapping = dict(
        user_col="customer", item_col="product", rating_col="stars", timestamp_col="when"
    )
    frame = sources.read_ratings(spark, write(tmp_path / "sales.csv", csv), "csv", **mapping)
    assert frame.schema["user_id"].dataType == T.StringType()
    assert rows(frame, "user_id", "item_id", "rating", "timestamp", "reason") == [
        ("c1", "lamp, red", 4.0, 1704164645, None),
        ("c2", "mug", 2.0, 1700000000, None),
    ]
    tsv = "when\tcustomer\tproduct\tstars\n5\t7\t8\t1\n"
    frame = sources.read_ratings(spark, write(tmp_path / "sales.tsv", tsv), "tsv", **mapping)
    assert rows(frame, "user_id", "item_id", "rating", "timestamp") == [(7, 8, 1.0, 5)]
    parquet = tmp_path / "sales.parquet"
    # pyarrow directly: pandas would turn the NaN into a null.
    pq.write_table(
        pa.table(
            {
                "customer": ["a", None, "b"],
                "product": [1, 2, 3],
                "stars": [5.0, 3.0, float("nan")],
                "when": [1, 2, 3],
            }
        ),
        parquet,
    )
    frame = sources.read_ratings(spark, str(parquet), "auto", **mapping)
    assert rows(frame, "user_id", "item_id", "reason") == [
        ("a", 1, None),
        ("b", 3, "non_numeric_rating"),
        (None, 2, "missing_user"),
    ]
    quarantined = frame.where("reason is not null").select("raw_line").collect()
    assert sorted(row["raw_line"] for row in quarantined) == [
        '{"item_id":2,"rating":3.0,"timestamp":2}',
        '{"user_id":"b","item_id":3,"rating":"NaN","timestamp":3}',
    ]


def test_headerless_csv_reads_by_position(spark, tmp_path):
    frame = sources.read_ratings(spark, write(tmp_path / "plain.csv", "u1,i1,4\nu2,i1,5\n"), "csv")
    assert rows(frame, "user_id", "item_id", "rating", "timestamp", "reason") == [
        ("u1", "i1", 4.0, 0, None),
        ("u2", "i1", 5.0, 0, None),
    ]
    assert "timestamp" not in sources.read_raw(spark, str(tmp_path / "plain.csv"), "csv").columns


BAD_LINES = {
    "3\t10\t4": "wrong_field_count",
    "3\t10\t4\t100\t7": "wrong_field_count",
    "\t10\t4\t100": "missing_user",
    "3\t\t4\t100": "missing_item",
    "x7\t10\t4\t100": "non_numeric_user",
    "3\ty\t4\t100": "non_numeric_item",
    "3\t10\t\t100": "missing_rating",
    "3\t10\tgood\t100": "non_numeric_rating",
    "3\t10\t9\t100": "rating_out_of_range",
    "3\t10\t0.5\t100": "rating_out_of_range",
    "3\t10\t4\t": "missing_timestamp",
    "3\t10\t4\tyesterday": "invalid_timestamp",
}


def test_every_kind_of_bad_line_gets_its_reason(spark, tmp_path):
    good = ["1\t10\t4\t100", "1\t11\t3\t101", "2\t10\t5\t102"]
    repeats = {
        "1\t10\t4\t100": "duplicate_row",  # an exact copy of a good line
        "1\t10\t2\t50": "repeated_pair",  # an older rating of (1, 10)
        "1\t11\t5\t200": None,  # a newer rating of (1, 11): kept, the older one is set aside
    }
    lines = good + list(BAD_LINES) + list(repeats)
    path = write(tmp_path / "u.data", "\n".join(lines) + "\n")
    raw = sources.read_raw(spark, path, "movielens-100k")
    checked = sources.check_rows(raw, 1.0, 5.0)
    checked = sources.cast_ids(checked, {"user_id": T.LongType(), "item_id": T.LongType()})
    marked = mark_duplicates(checked)
    found = rows(marked, "raw_line", "reason")
    expected = dict(BAD_LINES)
    expected.update(
        {
            "1\t10\t4\t100": None,
            "1\t11\t3\t101": "repeated_pair",
            "2\t10\t5\t102": None,
            "1\t10\t2\t50": "repeated_pair",
            "1\t11\t5\t200": None,
        }
    )
    assert len(found) == len(lines) == 18
    assert sorted(r for _, r in found if r) == sorted(
        [*BAD_LINES.values(), "duplicate_row", "repeated_pair", "repeated_pair"]
    )
    by_line = {}
    for line, reason in found:
        by_line.setdefault(line, []).append(reason)
    assert sorted(by_line.pop("1\t10\t4\t100"), key=str) == [None, "duplicate_row"]
    for line, reasons in by_line.items():
        assert reasons == [expected[line]], line
    good_rows, bad_rows = split_valid(marked)
    assert rows(good_rows, "user_id", "item_id", "rating", "timestamp") == [
        (1, 10, 4.0, 100),
        (1, 11, 5.0, 200),
        (2, 10, 5.0, 102),
    ]
    assert bad_rows.where("raw_line is null").count() == 0


def test_weight_checks_and_string_ids_stay_strings(spark, tmp_path):
    text = (
        "user,item,plays\n"
        "alice,song1,3\nalice,song1,2\nbob,song2,\nbob,song3,many\nbob,song4,0\n"
        "carol,song1,-1\n42,song1,1\n"
    )
    raw = sources.read_raw(
        spark,
        write(tmp_path / "plays.csv", text),
        "csv",
        user_col="user",
        item_col="item",
        rating_col=None,
        timestamp_col=None,
        weight_col="plays",
    )
    checked = sources.check_rows(raw)
    types = sources.infer_id_types(checked)
    assert types == {"user_id": T.StringType(), "item_id": T.StringType()}
    marked = mark_repeated_events(sources.cast_ids(checked, types), has_timestamp=False)
    assert rows(marked, "user_id", "item_id", "reason") == [
        ("42", "song1", None),
        ("alice", "song1", None),
        ("alice", "song1", None),
        ("bob", "song2", "missing_weight"),
        ("bob", "song3", "non_numeric_weight"),
        ("bob", "song4", "weight_out_of_range"),
        ("carol", "song1", "weight_out_of_range"),
    ]
    good, _ = split_valid(marked)
    pairs = aggregate_events(good)
    assert rows(pairs, "user_id", "item_id", "rating", "weight") == [
        ("42", "song1", 1.0, 1.0),
        ("alice", "song1", 2.0, 5.0),
    ]


def test_repeated_events_with_timestamps_drop_only_redeliveries(spark):
    frame = spark.createDataFrame(
        [
            ("l1", 1, 7, 1.0, 10, None),
            ("l1", 1, 7, 1.0, 10, None),
            ("l2", 1, 7, 1.0, 11, None),
            ("l3", 2, 7, 1.0, 10, None),
        ],
        "raw_line string, user_id long, item_id long, rating float, timestamp long, reason string",
    )
    marked = mark_repeated_events(frame, has_timestamp=True)
    assert rows(marked, "raw_line", "reason") == [
        ("l1", "duplicate_row"),
        ("l1", None),
        ("l2", None),
        ("l3", None),
    ]
    good, _ = split_valid(marked)
    assert rows(aggregate_events(good), "user_id", "item_id", "rating", "timestamp") == [
        (1, 7, 2.0, 11),
        (2, 7, 1.0, 10),
    ]


def test_integer_ids_are_inferred_only_when_every_id_is_one(spark, tmp_path):
    path = write(tmp_path / "r.csv", "user_id,item_id,rating\n 7 ,0012,4\n8,13,5\n")
    frame = sources.read_ratings(spark, path, "csv")
    assert frame.schema["user_id"].dataType == T.LongType()
    assert rows(frame, "user_id", "item_id") == [(7, 12), (8, 13)]


def test_missing_input_and_missing_columns_fail_clearly(spark, tmp_path):
    with pytest.raises(MissingInputError, match=r"set input\.path"):
        sources.read_raw(spark, str(tmp_path / "nope.csv"))
    path = write(tmp_path / "r.csv", "who,what,stars\n1,2,3\n")
    with pytest.raises(BadInputError, match=r"lacks column\(s\) \['item_id'\]"):
        sources.read_raw(spark, path, "csv", user_col="who", rating_col="stars")
    with pytest.raises(BadInputError, match=r"is not Parquet but input\.format is synthetic"):
        sources.read_raw(spark, path, "synthetic")
    empty = write(tmp_path / "empty.csv", "\n\n")
    with pytest.raises(BadInputError, match="empty"):
        sources.read_raw(spark, empty, "csv")
