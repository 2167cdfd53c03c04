"""JVM-free checks of the data room's listing, sniffing and column modules (no Spark session)."""

from __future__ import annotations

import gzip

import pytest

from recspark.core.errors import BadInputError, MissingInputError
from recspark.data import columns, listing, sniffing

WANTED = columns.wanted_columns("user_id", "item_id", "rating", "timestamp", None)


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_head_lines_skip_blank_lines_and_the_byte_order_mark(tmp_path):
    path = write(tmp_path / "r.csv", "\ufeffa,b\n\n  \n1,2\n3,4\n")
    assert listing.head_lines(path, 2) == ["a,b", "1,2"]
    assert listing.first_line(path) == "a,b"


def test_head_lines_read_gzip_as_spark_does(tmp_path):
    path = tmp_path / "r.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,3,4\n"))
    assert listing.head_lines(str(path), 5) == ["1,2,3,4"]


def test_data_entries_leave_out_spark_and_hidden_files(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write(folder / "part-0.csv", "1,2\n")
    write(folder / "_SUCCESS", "x")
    write(folder / ".part-0.csv.crc", "x")
    write(folder / "empty.csv", "")
    names = [
        entry.location.name for entry in listing.data_entries(listing.existing_input(str(folder)))
    ]
    assert names == ["part-0.csv"]


def test_a_missing_input_says_which_key_to_set(tmp_path):
    with pytest.raises(MissingInputError, match=r"input\.path"):
        listing.existing_input(str(tmp_path / "absent"))


def test_the_fingerprint_changes_with_the_files_not_with_hidden_ones(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.csv", "1,2\n")
    before = listing.fingerprint([str(folder), None])
    write(folder / "_SUCCESS", "")
    assert listing.fingerprint([str(folder)]) == before
    write(folder / "b.csv", "3,4\n")
    assert listing.fingerprint([str(folder)]) != before
    assert listing.fingerprint([str(tmp_path / "nope")]) != before


def test_detect_format_from_the_first_line_and_the_name(tmp_path):
    assert sniffing.detect_format(write(tmp_path / "u.data", "1\t2\t3\t4\n")) == "movielens-100k"
    assert sniffing.detect_format(write(tmp_path / "x.tsv", "1\t2\n")) == "tsv"
    assert sniffing.detect_format(write(tmp_path / "r.dat", "1::2::3::4\n")) == "movielens-1m"
    assert sniffing.detect_format(write(tmp_path / "r.csv", "1,2,3\n")) == "csv"
    with pytest.raises(BadInputError, match=r"input\.format"):
        sniffing.detect_format(write(tmp_path / "odd.txt", "1;2;3\n"))


def test_text_layout_reads_a_header_or_positions(tmp_path):
    with_header = write(tmp_path / "h.csv", "movieId,userId,rating\n1,2,3\n")
    layout = sniffing.text_layout(with_header, "csv", WANTED)
    assert layout.header == "movieId,userId,rating"
    assert layout.positions == {"user_id": 1, "item_id": 0, "rating": 2}
    plain = write(tmp_path / "p.csv", "1,2,3,4\n5,6,7,8\n1,2\n")
    layout = sniffing.text_layout(plain, "csv", WANTED)
    assert layout.header is None and layout.field_count == 4
    assert layout.positions == {"user_id": 0, "item_id": 1, "rating": 2, "timestamp": 3}


def test_text_layout_names_the_format_a_first_line_points_to(tmp_path):
    tsv = write(tmp_path / "r.csv", "1\t2\t3\n")
    with pytest.raises(BadInputError, match=r"input\.format: tsv"):
        sniffing.text_layout(tsv, "csv", WANTED)


def test_inspect_input_returns_the_format_and_the_columns_found(tmp_path):
    path = write(tmp_path / "r.csv", "userId,movieId,rating\n1,2,3\n")
    assert sniffing.inspect_input(path, "auto", WANTED) == ("csv", ["user_id", "item_id", "rating"])
    with pytest.raises(BadInputError, match="unknown input format"):
        sniffing.inspect_input(path, "xml", WANTED)


def test_columns_resolve_aliases_and_name_what_is_missing():
    assert columns.resolve_columns(["userId", "movieId", "rating"], WANTED, "x") == {
        "user_id": "userId",
        "item_id": "movieId",
        "rating": "rating",
    }
    with pytest.raises(BadInputError, match=r"lacks column\(s\) \['user_id'"):
        columns.resolve_columns(["u", "i", "rating"], WANTED, "x")
    assert columns.split_header('\ufeff"a",b,,', ",") == ["a", "b"]
    assert columns.is_number(' "1e3" ') and columns.is_number("NaN")
    assert not columns.is_number("x7")
    assert columns.looks_like_header(["customer", "product"], WANTED)
    assert not columns.looks_like_header(["u1", "i1", "4"], WANTED)
