"""prepare's input hardening (issue 18): each failure a tester reproduced, and a fuzz of u.data.

2. Bad ids: not UTF-8, too long, blank, a quoted delimiter, too large for a long, negative or
   fractional ids are quarantined with their own reason, and never turn a column of integer ids
   into text.
3. A header is matched by name: unknown names fail naming the expected and found columns.
7. Over ``input.max_bad_fraction`` the quarantine is still published, to ``prepared/_rejected/D``.
8. A TSV file read as CSV (and the mirror case) names the ``input.format`` to set.
12. The cheap input checks run before Spark starts.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from recspark.core.errors import BadInputError
from recspark.core.location import Location
from recspark.data import sources
from recspark.data.reasons import REASONS
from recspark.data.sniffing import inspect_input
from tests.e2e.test_prepare import load_udata, prepare, prepared_ratings, read
from tests.e2e.test_sources import rows, write
from tests.unit.data.test_input_hardening import CSV_HEADER, run_cli


def ratings_lines(users: int = 6, items: int = 5) -> list[str]:
    """Every user rates every item: integer ids from 1, a rating and a time that vary."""
    return [
        f"{u},{i},{1 + (u + i) % 5},{1000 + 10 * u + i}"
        for u in range(1, users + 1)
        for i in range(1, items + 1)
    ]


def write_bytes(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def checked_ids(spark, path: str, fmt: str = "csv", max_id_length: int = 256):
    """read_raw -> check_rows -> infer_id_types -> cast_ids, as prepare runs them."""
    raw = sources.read_raw(spark, path, fmt)
    checked = sources.check_rows(raw, max_id_length=max_id_length)
    types = sources.infer_id_types(checked)
    return sources.cast_ids(checked, types, (sources.DELIMITERS[fmt],)), types


# -- 2. bad ids ------------------------------------------------------------------------------


def test_every_kind_of_bad_id_gets_its_own_reason_and_the_ids_stay_integers(spark, tmp_path):
    good = [line.encode() for line in ratings_lines(3, 2)]
    bad = {
        b"12\xff\xfe,1,4,100": "non_utf8_user",
        b"1,7\xe9,4,100": "non_utf8_item",
        b"9" * 5000 + b",1,4,100": "user_too_long",
        b"1," + b"8" * 300 + b",4,100": "item_too_long",
        b"\t\xc2\xa0 ,1,4,100": "missing_user",  # a tab and a no-break space: blank
        b'"106,106",1,4,100': "quoted_delimiter_user",
        b'1,"2,3",4,100': "quoted_delimiter_item",
        b"x7,1,4,100": "non_numeric_user",
        b"1,2.5,4,100": "non_numeric_item",
        b"NaN,1,4,100": "non_numeric_user",
        b"99999999999999999999,1,4,100": "user_out_of_range",  # 20 digits: above a long
        b"-3,1,4,100": "user_out_of_range",
        b"1,-2,4,100": "item_out_of_range",
        b"x7,1,9,100": "non_numeric_user",  # an id's reason comes before the rating's
    }
    largest = b"9223372036854775807,1,4,100"  # the largest long is a good id
    path = write_bytes(tmp_path / "r.csv", [CSV_HEADER.encode(), *good, *bad, largest])
    checked, types = checked_ids(spark, str(path))
    assert types == {"user_id": T.LongType(), "item_id": T.LongType()}
    assert checked.schema["user_id"].dataType == T.LongType()
    found = {line: reason for line, reason in rows(checked, "raw_line", "reason")}
    expected = {line.decode("utf-8", "replace"): reason for line, reason in bad.items()}
    assert {line: found[line] for line in expected} == expected
    good_ids = sorted(
        (u, i) for u, i, r in rows(checked, "user_id", "item_id", "reason") if r is None
    )
    assert good_ids == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (9223372036854775807, 1)]
    assert set(bad.values()) <= set(REASONS)


def test_max_id_length_is_configurable(spark, tmp_path):
    path = write(tmp_path / "r.csv", "user_id,item_id,rating\nabc,x,4\nabcd,x,4\n")
    checked, types = checked_ids(spark, path, max_id_length=3)
    assert types["user_id"] == T.StringType()
    assert rows(checked, "user_id", "reason") == [("abc", None), ("abcd", "user_too_long")]


def test_one_bad_row_never_flips_the_id_type_and_text_ids_stay_text(spark, tmp_path):
    # One odd id among integers is quarantined; a few integers among names stay names.
    numbers = write(tmp_path / "n.csv", "user_id,item_id,rating\n1,5,4\n2,5,4\nx7,5,4\n")
    checked, types = checked_ids(spark, numbers)
    assert types["user_id"] == T.LongType()
    assert rows(checked, "user_id", "reason") == [(1, None), (2, None), (None, "non_numeric_user")]
    names = write(tmp_path / "s.csv", "user_id,item_id,rating\nann,5,4\nbob,5,4\n42,5,4\n")
    checked, types = checked_ids(spark, names)
    assert types["user_id"] == T.StringType()
    assert rows(checked, "user_id", "reason") == [("42", None), ("ann", None), ("bob", None)]
    # A quoted comma in a column of text ids is an id like any other.
    text = write(tmp_path / "t.csv", 'user_id,item_id,rating\nann,"lamp, red",4\nbob,mug,4\n')
    checked, _ = checked_ids(spark, text)
    assert rows(checked, "item_id", "reason") == [("lamp, red", None), ("mug", None)]


def test_parquet_ids_out_of_range_or_not_whole_are_quarantined(spark, tmp_path):
    frame = spark.createDataFrame(
        [(1.0, 1, 4.0), (2.5, 1, 4.0), (float("nan"), 1, 4.0), (1e30, 1, 4.0), (3.0, -1, 4.0)],
        "user_id double, item_id long, rating double",
    )
    frame.coalesce(1).write.parquet(str(tmp_path / "pq"))
    raw = sources.read_raw(spark, str(tmp_path / "pq"), "parquet", timestamp_col=None)
    checked = sources.cast_ids(
        sources.check_rows(raw), {"user_id": T.LongType(), "item_id": T.LongType()}
    )
    assert sorted(r for _, r in rows(checked, "user_id", "reason") if r) == [
        "item_out_of_range",
        "non_numeric_user",
        "non_numeric_user",
        "user_out_of_range",
    ]
    assert [u for u, r in rows(checked, "user_id", "reason") if r is None] == [1]
    # A quarantined Parquet row keeps its values as read, before the cast; its id is null, not
    # truncated to another user's.
    lines = dict(rows(checked, "raw_line", "reason"))
    assert lines['{"user_id":1.0E30,"item_id":1,"rating":4.0,"timestamp":0}'] == "user_out_of_range"
    assert lines['{"user_id":2.5,"item_id":1,"rating":4.0,"timestamp":0}'] == "non_numeric_user"
    assert rows(checked.where("reason = 'non_numeric_user'"), "user_id", "rating") == [
        (None, None),
        (None, None),
    ]


def test_prepare_quarantines_a_non_utf8_id_and_keeps_the_clean_split(spark, tmp_path):
    lines = [line.encode() for line in ratings_lines(8, 6)]
    clean = write_bytes(tmp_path / "clean" / "r.csv", [CSV_HEADER.encode(), *lines])
    dirty = write_bytes(
        tmp_path / "dirty" / "r.csv",
        [CSV_HEADER.encode(), *lines[:20], b"12\xff\xfe,3,4,100", *lines[20:]],
    )
    settings = {"input.format": "csv", "input.max_bad_fraction": 0.05}
    one = prepare(spark, tmp_path / "a", **settings, **{"input.path": clean})
    two = prepare(spark, tmp_path / "b", **settings, **{"input.path": dirty})
    assert two["counts"]["quarantined"] == 1
    assert two["counts"]["quarantined_by_reason"]["non_utf8_user"] == 1
    assert set(two["counts"]["quarantined_by_reason"]) == set(REASONS)
    manifest = json.loads(Location(two["outputs"]["manifest"]).read_text())
    assert manifest["input"]["id_types"] == {"user_id": "bigint", "item_id": "bigint"}
    assert read(two, "user_index")["user_id"].dtype == np.int64
    for name in ("user_index", "item_index", "train", "validation", "cold_start"):
        left = read(one, name).sort_values(list(read(one, name).columns)).reset_index(drop=True)
        right = read(two, name).sort_values(list(left.columns)).reset_index(drop=True)
        pd.testing.assert_frame_equal(left, right)
    assert list(read(two, "quarantine")["reason"]) == ["non_utf8_user"]


# -- 3. headers are matched by name ------------------------------------------------------------


def test_a_header_of_unknown_names_fails_and_the_earlier_date_stays(
    spark, tmp_path, capsys, monkeypatch
):
    root = tmp_path / "root"
    base = {
        "paths.root": root,
        "run_date": "2026-03-01",
        "spark.conf": "{}",
        "input.format": "csv",
        "input.max_bad_fraction": 0.1,
    }
    good = write(tmp_path / "good.csv", CSV_HEADER + "\n" + "\n".join(ratings_lines()) + "\n")
    status, summary = run_cli("prepare", {**base, "input.path": good}, capsys)
    assert status == 0, summary
    date = root / "prepared" / "2026-03-01"
    manifest = (date / "manifest.json").read_text()
    before = sorted(p.name for p in date.iterdir())

    def refuse(*args, **kwargs):
        raise AssertionError("Spark must not start for a header that names no known column")

    monkeypatch.setattr("recspark.core.spark.get_spark", refuse)
    body = "\n".join(ratings_lines()) + "\n"
    unknown = write(tmp_path / "unknown.csv", "customer,product,stars,ts\n" + body)
    status, summary = run_cli("prepare", {**base, "input.path": unknown}, capsys)
    assert status == 1 and summary["status"] == "error"
    assert "expected ['user_id', 'item_id', 'rating', 'timestamp']" in summary["error"]
    assert "found ['customer', 'product', 'stars', 'ts']" in summary["error"]
    assert "input.header: false" in summary["error"]
    # Names given in input.columns and missing from the header fail the same way.
    named = {
        **base,
        "input.path": unknown,
        "input.columns.user": "cust",
        "input.columns.item": "product",
        "input.columns.rating": "stars",
        "input.columns.timestamp": "ts",
    }
    status, summary = run_cli("prepare", named, capsys)
    assert status == 1 and "lacks column(s) ['cust']" in summary["error"]
    assert "found ['customer', 'product', 'stars', 'ts']" in summary["error"]
    assert (date / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in date.iterdir()) == before
    assert sorted(p.name for p in (root / "prepared").iterdir()) == ["2026-03-01"]


def test_reading_by_position_happens_only_without_a_header_or_when_asked(spark, tmp_path):
    # Text ids and no number: a header as far as auto can tell, so it must be said.
    plays = write(tmp_path / "plays.csv", "ann,song1\nbob,song2\nann,song2\n")
    with pytest.raises(BadInputError, match=re.escape("input.header: false")):
        sources.read_raw(spark, plays, "csv", rating_col=None, timestamp_col=None)
    frame = sources.read_raw(spark, plays, "csv", rating_col=None, timestamp_col=None, header=False)
    assert rows(frame, "user_id", "item_id", "reason") == [
        ("ann", "song1", None),
        ("ann", "song2", None),
        ("bob", "song2", None),
    ]
    # header: true on a file whose first line is a row names what it found.
    numbers = write(tmp_path / "n.csv", "1,2,3\n4,5,3\n")
    with pytest.raises(BadInputError, match=r"found \['1', '2', '3'\]"):
        sources.read_raw(spark, numbers, "csv", header=True)
    with pytest.raises(BadInputError, match="movielens-100k files have no header"):
        inspect_input(write(tmp_path / "u.data", "1\t2\t3\t4\n"), "movielens-100k", header=True)


# -- 7. over the threshold, the quarantine is kept ------------------------------------------------


def test_over_max_bad_fraction_only_the_quarantine_is_published(spark, tmp_path, capsys):
    root = tmp_path / "root"
    base = {"paths.root": root, "run_date": "2026-03-02", "spark.conf": "{}", "input.format": "csv"}
    lines = ratings_lines()
    good = write(tmp_path / "good.csv", CSV_HEADER + "\n" + "\n".join(lines) + "\n")
    status, summary = run_cli("prepare", {**base, "input.path": good}, capsys)
    assert status == 0, summary
    date = root / "prepared" / "2026-03-02"
    manifest = (date / "manifest.json").read_text()
    bad_lines = {
        "1,1,9,100": "rating_out_of_range",
        "x,1,4,100": "non_numeric_user",
        "2,2,4": "wrong_field_count",
    }
    broken = write(
        tmp_path / "broken.csv", CSV_HEADER + "\n" + "\n".join([*lines, *bad_lines]) + "\n"
    )
    status, summary = run_cli("prepare", {**base, "input.path": broken}, capsys)
    rejected = root / "prepared" / "_rejected" / "2026-03-02"
    assert status == 1 and f"3 of {len(lines) + 3} rows are bad" in summary["error"]
    assert str(rejected / "quarantine") in summary["error"]
    assert "input.id_type: string" in summary["error"]  # a non-numeric id among integers
    quarantine = pd.read_parquet(rejected / "quarantine")
    assert dict(zip(quarantine.raw_line, quarantine.reason, strict=True)) == bad_lines
    assert (rejected / "_SUCCESS").exists()
    # Nothing else of the date was written: the earlier run stays, whole.
    assert (date / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in (root / "prepared").iterdir()) == ["2026-03-02", "_rejected"]
    assert list((root / "_staging").iterdir()) == []


# -- 8. TSV read as CSV, and the mirror -----------------------------------------------------------


# -- 12. cheap checks before Spark --------------------------------------------------------------


# -- fuzz: malformed lines mixed into u.data ------------------------------------------------------


def malformed_lines(good: list[bytes], count: int, seed: int) -> list[bytes]:
    """``count`` lines that are each bad in one random way, built from random good lines."""
    draw = random.Random(seed)
    specials = ["NaN", "nan", "inf", "-inf", "Infinity"]

    def random_bytes() -> bytes:
        allowed = [b for b in range(256) if b not in (0x0A, 0x0D)]  # no line break in a line
        body = bytearray(draw.choice(allowed) for _ in range(draw.randint(1, 40)))
        body.insert(draw.randint(0, len(body)), 0xFF)  # never valid UTF-8
        return bytes(body)

    def with_field(fields: list[str], position: int, value: str) -> bytes:
        fields = list(fields)
        fields[position] = value
        return "\t".join(fields).encode()

    def field_count(fields: list[str]) -> bytes:
        size = draw.choice([1, 2, 3, 5, 6, 7])
        extra = [str(draw.randint(1, 99)) for _ in range(max(0, size - 4))]
        return "\t".join((fields + extra)[:size]).encode()

    def quote(fields: list[str]) -> bytes:
        position = draw.randint(0, 2)
        value = fields[position]
        cut = draw.randint(0, len(value))
        broken = draw.choice(
            [
                '"' + value,
                value + '"',
                value[:cut] + '"' + value[cut:] + '"' if cut else value + '""',
                # a tab inside quotes: no quoting here
                '"' + value + "\t" + fields[position + 1] + '"',
            ]
        )
        if broken.startswith('"') and broken.endswith('"') and "\t" not in broken:
            broken = broken[1:]  # a whole quoted field would be a good one
        return with_field(fields, position, broken)

    def huge(fields: list[str]) -> bytes:
        position = draw.randint(0, 3)
        digits = draw.choice([draw.randint(20, 40), draw.randint(300, 600)])
        value = str(draw.randint(1, 9)) + "".join(str(draw.randint(0, 9)) for _ in range(digits))
        return with_field(fields, position, value)

    def special(fields: list[str]) -> bytes:
        return with_field(fields, draw.randint(0, 3), draw.choice(specials))

    def negative(fields: list[str]) -> bytes:
        return with_field(fields, draw.randint(0, 1), f"-{draw.randint(1, 5000)}")

    def fractional(fields: list[str]) -> bytes:
        # A fraction that is not zero (12.0 is the id 12).
        return with_field(
            fields, draw.randint(0, 1), f"{draw.randint(1, 2000)}.{draw.randint(1, 9)}"
        )

    def undecodable(fields: list[str]) -> bytes:
        position = draw.randint(0, 1)
        encoded = [field.encode() for field in fields]
        cut = draw.randint(0, len(encoded[position]))
        invalid = draw.choice([b"\xff", b"\xfe\xff", b"\xc3", b"\xe9", b"\x80"])
        encoded[position] = encoded[position][:cut] + invalid + encoded[position][cut:]
        return b"\t".join(encoded)

    makers = [field_count, quote, huge, special, negative, fractional, undecodable]
    lines = []
    for _ in range(count):
        if draw.random() < 0.2:
            lines.append(random_bytes())
        else:
            fields = draw.choice(good).decode().split("\t")
            lines.append(draw.choice(makers)(fields))
    return lines


def replaced(text: str) -> str:
    return re.sub("\ufffd+", "\ufffd", text)


def test_fuzz_malformed_lines_in_ml100k_are_all_quarantined(spark, ml100k, tmp_path):
    good = (ml100k / "u.data").read_bytes().rstrip(b"\n").split(b"\n")
    assert len(good) == 100_000
    bad = malformed_lines(good, 1000, seed=18)
    draw = random.Random(7)
    lines = list(good)
    for line in bad:
        lines.insert(draw.randint(1, len(lines)), line)  # the first line stays a good one
    path = write_bytes(tmp_path / "input" / "u.data", lines)
    summary = prepare(
        spark,
        tmp_path / "root",
        **{"input.path": path, "input.format": "auto", "input.max_bad_fraction": 0.02},
    )
    counts = summary["counts"]
    assert counts["input_rows"] == 101_000
    assert counts["quarantined"] == 1000 == sum(counts["quarantined_by_reason"].values())
    assert counts["train"] + counts["validation"] + counts["cold_start"] == 100_000
    assert counts["input_rows"] == (
        counts["train"] + counts["validation"] + counts["cold_start"] + counts["quarantined"]
    )
    # Every bad line is in the quarantine with a reason; none of the good lines is.
    quarantine = read(summary, "quarantine")
    assert quarantine["reason"].isin(REASONS).all()
    assert {
        "wrong_field_count",
        "non_utf8_user",
        "non_utf8_item",
        "user_too_long",
        "item_too_long",
        "non_numeric_user",
        "non_numeric_item",
        "user_out_of_range",
        "item_out_of_range",
        "non_numeric_rating",
        "rating_out_of_range",
        "invalid_timestamp",
    } <= set(quarantine["reason"])
    # Java and Python may replace a run of invalid bytes by a different number of U+FFFD.
    assert sorted(map(replaced, quarantine["raw_line"])) == sorted(
        replaced(line.decode("utf-8", "replace")) for line in bad
    )
    # Every good line is kept, as it was: u.data has no repeated pair.
    truth = load_udata(ml100k / "u.data").sort_values(["user_id", "item_id"])
    got = prepared_ratings(summary)
    assert (counts["users"], counts["items"]) == (943, 1682)
    np.testing.assert_array_equal(
        got[["user_id", "item_id", "rating", "timestamp"]].to_numpy(),
        truth[["user_id", "item_id", "rating", "timestamp"]].to_numpy(),
    )
    manifest = json.loads(Location(summary["outputs"]["manifest"]).read_text())
    assert manifest["input"]["id_types"] == {"user_id": "bigint", "item_id": "bigint"}
