"""Reading every input format and checking every kind of bad row, with known answers. The tests
that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_sources.py.
"""

from __future__ import annotations

import pandas as pd
import pytest

from recspark.core.errors import BadInputError, MissingInputError
from recspark.data import sources
from recspark.data.columns import resolve_columns, split_header, wanted_columns


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_detect_format_from_the_files(tmp_path):
    assert sources.detect_format(write(tmp_path / "u.data", "1\t2\t3\t4\n")) == "movielens-100k"
    assert sources.detect_format(write(tmp_path / "u1.base", "1\t2\t3\t4\n")) == "movielens-100k"
    assert sources.detect_format(write(tmp_path / "x.tsv", "a\tb\n")) == "tsv"
    assert sources.detect_format(write(tmp_path / "r.dat", "1::2::3::4\n")) == "movielens-1m"
    assert sources.detect_format(write(tmp_path / "r.csv", "\ufeffuserId,movieId\n")) == "csv"
    (tmp_path / "pq").mkdir()
    pd.DataFrame({"user_id": [1]}).to_parquet(tmp_path / "pq" / "part-0")  # no suffix: magic bytes
    assert sources.detect_format(str(tmp_path / "pq")) == "parquet"
    with pytest.raises(BadInputError, match="cannot tell the format"):
        sources.detect_format(write(tmp_path / "odd.txt", "1;2;3\n"))
    with pytest.raises(MissingInputError, match="does not exist"):
        sources.detect_format(str(tmp_path / "absent.csv"))


def test_header_and_column_resolution():
    assert split_header('\ufeff"userId",movieId,rating,timestamp,,', ",") == [
        "userId",
        "movieId",
        "rating",
        "timestamp",
    ]
    wanted = wanted_columns("user_id", "item_id", "rating", "timestamp", None)
    found = resolve_columns(["userId", "movieId", "rating", "timestamp"], wanted, "x")
    assert found == {
        "user_id": "userId",
        "item_id": "movieId",
        "rating": "rating",
        "timestamp": "timestamp",
    }
    with pytest.raises(BadInputError, match=r"lacks column\(s\) \['stars'\]"):
        resolve_columns(["u", "i", "r"], {"user_id": "u", "item_id": "i", "rating": "stars"}, "x")
