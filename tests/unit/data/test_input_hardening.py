"""prepare's input hardening (issue 18): each failure a tester reproduced, and a fuzz of u.data.
The tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_input_hardening.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from recspark.cli import main
from recspark.core.errors import BadInputError, MissingInputError
from recspark.data.columns import looks_like_header, wanted_columns
from recspark.data.inputs import precheck_input
from recspark.data.sniffing import inspect_input
from tests.e2e.test_sources import write

CSV_HEADER = "user_id,item_id,rating,timestamp"


def run_cli(command: str, settings: dict, capsys) -> tuple[int, dict]:
    args = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    status = main([command, *args])
    return status, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_looks_like_header():
    wanted = wanted_columns("user_id", "item_id", "rating", "timestamp", None)
    assert looks_like_header(["userId", "movieId", "rating"], wanted)
    assert looks_like_header(["customer", "product", "stars", "ts"], wanted)
    assert not looks_like_header(["u1", "i1", "4"], wanted)
    assert not looks_like_header(["1", "2", "NaN"], wanted)


def test_a_tsv_file_read_as_csv_names_the_format_to_set(tmp_path, capsys, no_spark):
    tsv = write(tmp_path / "r.csv", "user_id\titem_id\trating\n1\t2\t3\n")
    with pytest.raises(BadInputError, match=re.escape("set input.format: tsv")):
        inspect_input(tsv, "csv")
    status, summary = run_cli(
        "prepare",
        {"input.path": tsv, "input.format": "csv", "paths.root": tmp_path / "root"},
        capsys,
    )
    assert status == 1 and "input.format: tsv" in summary["error"]
    csv = write(tmp_path / "r.tsv", "user_id,item_id,rating\n1,2,3\n")
    with pytest.raises(BadInputError, match=re.escape("set input.format: csv")):
        inspect_input(csv, "tsv")
    dat = write(tmp_path / "ratings.dat", "1::2::3::4\n")
    with pytest.raises(BadInputError, match=re.escape("set input.format: movielens-1m")):
        inspect_input(dat, "csv")
    # One malformed first line does not decide the format: the lines after it have the delimiter.
    mixed = write(tmp_path / "m.csv", "1\t2\t3\n1,2,3\n2,2,3\n")
    assert inspect_input(mixed, "csv", header=False)[0] == "csv"


def precheck_cases(tmp_path: Path) -> list[tuple[dict, str]]:
    csv = write(tmp_path / "in" / "r.csv", CSV_HEADER + "\n1,2,3,4\n")
    no_time = write(tmp_path / "in" / "nt.csv", "user_id,item_id,rating\n1,2,3\n")
    empty = write(tmp_path / "in" / "empty.csv", "\n\n")
    (tmp_path / "in" / "folder").mkdir()
    return [
        ({"input.path": tmp_path / "absent.csv"}, "does not exist"),
        ({"input.path": empty}, "is empty"),
        ({"input.path": tmp_path / "in" / "folder"}, "holds no data files"),
        ({"input.path": csv, "input.format": "parquet"}, "is not Parquet"),
        ({"input.path": csv, "input.columns.rating": "stars"}, "lacks column(s) ['stars']"),
        ({"input.path": csv, "split.method": "given"}, "input.validation_path is not set"),
        (
            {
                "input.path": csv,
                "split.method": "given",
                "input.validation_path": tmp_path / "absent.csv",
            },
            "does not exist",
        ),
        (
            {"input.path": csv, "split.method": "given", "input.validation_path": no_time},
            "give both the same columns",
        ),
        ({"input.path": no_time, "split.method": "chronological"}, "no timestamp column"),
        ({"input.format": "synthetic"}, "does not exist"),
    ]


@pytest.mark.parametrize("command", ["prepare", "nightly"])
def test_input_errors_are_reported_before_spark_starts(command, tmp_path, capsys, no_spark):
    for settings, words in precheck_cases(tmp_path):
        settings = {"paths.root": tmp_path / "root", "input.format": "auto", **settings}
        status, summary = run_cli(command, settings, capsys)
        assert status == 1, (settings, summary)
        assert summary["status"] == "error" and words in summary["error"], (settings, summary)
    assert not (tmp_path / "root" / "_nightly").exists()  # nightly took no lock, recovered nothing


def test_nightly_leaves_a_held_lock_or_a_crashed_run_to_the_run_itself(tmp_path):
    """A run in progress is reported by the lock (naming its holder), a crashed one recovered
    first: the input check waits for them."""
    from recspark.commands import nightly
    from recspark.core.config import load_config
    from recspark.ops.locking import RunLock

    root = tmp_path / "root"
    config = load_config(
        None, [f"paths.root={root}", f"input.path={tmp_path / 'absent.csv'}", "input.format=csv"]
    )
    with pytest.raises(MissingInputError):
        nightly.precheck(config)
    with RunLock(root / "_nightly" / "lock", "2026-03-03"):
        nightly.precheck(config)  # the run will say who holds the lock
    with pytest.raises(MissingInputError):
        nightly.precheck(config)  # released cleanly: the record is empty
    (root / "_nightly" / "inflight.json").write_text("{}")
    nightly.precheck(config)  # a crashed run's journal: recovery comes first


def test_precheck_input_takes_plain_values_and_skips_remote_inputs(tmp_path):
    wanted = wanted_columns("user_id", "item_id", "rating", "timestamp", None)
    good = write(tmp_path / "r.csv", CSV_HEADER + "\n1,2,3,4\n")
    precheck_input(good, "auto", wanted)
    precheck_input("s3a://bucket/ratings/", "csv", wanted)  # another filesystem: not checked here
    with pytest.raises(MissingInputError):
        precheck_input(str(tmp_path / "nope"), "csv", wanted)
    with pytest.raises(MissingInputError):
        precheck_input("file://" + str(tmp_path / "nope"), "csv", wanted)
