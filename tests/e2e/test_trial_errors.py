"""Failures of a new-user trial that ended in "unexpected failure" or a misleading message.

1. A stale Hadoop ``.crc`` beside a part file (the file edited after Spark wrote it) names both
   files and says to delete the ``.crc``.
2. A ``spark.conf`` value Spark refuses is a config error (exit 2) naming ``spark.conf`` and
   the key.
3. A titles table in Windows-1252 says so, naming the file; one saved with a UTF-8 byte-order mark
   (as spreadsheets save it) is read.
4. A ``paths.root`` that cannot be written says so, naming the root, before Spark starts.
5. A gzip-compressed input: read when its name ends in ``.gz`` (Spark decompresses it), refused
   naming gzip when it does not.

Every message is one line that names the file or key and says what to do.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recspark.cli import main
from recspark.data.listing import head_lines
from tests.conftest import tiny_overrides
from tests.e2e.test_input_hardening import run_cli
from tests.unit.core.test_trial_errors import (
    HEADER,
    ROWS,
    assert_one_clear_line,
    csv_text,
    prepare_settings,
)

REPO = Path(__file__).resolve().parents[2]


# -- 1. a stale .crc ---------------------------------------------------------------------------


def spark_written(spark, folder: Path, fmt: str) -> Path:
    """A one-file table written by Spark (so with its ``.crc``); returns the part file."""
    frame = spark.createDataFrame(ROWS, "user_id long, item_id long, rating double, timestamp long")
    writer = frame.coalesce(1).write.mode("overwrite")
    if fmt == "csv":
        writer.option("header", True).csv(str(folder))
    else:
        writer.parquet(str(folder))
    (part,) = folder.glob(f"part-*.{fmt}")
    assert (folder / f".{part.name}.crc").is_file()
    return part


def edit_after_spark(part: Path) -> None:
    """Change one rating the way a person would: a text editor, or pandas for Parquet."""
    if part.suffix == ".csv":
        lines = part.read_text().splitlines()
        lines[1] = lines[1].rsplit(",", 2)[0] + ",1.0," + lines[1].rsplit(",", 1)[1]
        part.write_text("\n".join(lines) + "\n")
    else:
        table = pd.read_parquet(part)
        table.loc[0, "rating"] = 1.0
        table.to_parquet(part, index=False)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_stale_crc_names_the_file_and_its_crc_and_deleting_it_works(spark, tmp_path, capsys, fmt):
    part = spark_written(spark, tmp_path / "ratings", fmt)
    edit_after_spark(part)
    crc = part.parent / f".{part.name}.crc"
    settings = prepare_settings(tmp_path / "root", part.parent)

    status, summary = run_cli("prepare", settings, capsys)

    assert status == 1, summary
    assert_one_clear_line(summary, str(part), str(crc), "delete")
    crc.unlink()  # what the message says to do
    status, summary = run_cli("prepare", settings, capsys)
    assert status == 0, summary
    assert summary["counts"]["input_rows"] == len(ROWS)


# -- 2. a spark.conf value Spark refuses -------------------------------------------------------


def test_a_refused_spark_setting_is_a_config_error_naming_the_key(spark, tmp_path, capsys):
    before = spark.conf.get("spark.sql.shuffle.partitions")
    settings = {"paths.root": tmp_path, "spark.conf": '{"spark.sql.shuffle.partitions": "0"}'}

    status, summary = run_cli("generate", settings, capsys)

    assert status == 2, summary
    assert_one_clear_line(summary, "spark.conf", "spark.sql.shuffle.partitions", "'0'")
    assert spark.conf.get("spark.sql.shuffle.partitions") == before
    assert not (tmp_path / "data").exists()


def test_a_refused_spark_setting_fails_when_a_new_session_starts(tmp_path):
    """The path of a real first run: a fresh JVM, where Spark checks the value lazily."""
    command = [
        sys.executable,
        "-m",
        "recspark.cli",
        "generate",
        "--set",
        f"paths.root={tmp_path / 'root'}",
        "--set",
        "spark.master=local[1]",
        "--set",
        'spark.conf={"spark.sql.shuffle.partitions": "0", "spark.ui.enabled": "false"}',
    ]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 2, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert_one_clear_line(summary, "spark.conf", "spark.sql.shuffle.partitions")
    assert not (tmp_path / "root" / "data").exists()


# -- 3. titles tables in other encodings -------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_trained):
    root, _ = tiny_trained
    return root, tiny_overrides(root)


def titles_for(root: Path) -> str:
    index = pd.read_parquet(root / "prepared" / "2026-01-15" / "item_index")
    return "movieId,title,genres\n" + "".join(
        f"{raw},Café ’{raw}’,Drama\n" for raw in index["item_id"]
    )


def recommend_with_titles(trained, titles: Path, encoding: str, capsys) -> tuple[int, dict]:
    """``recommend`` for user 1 of the trained fixture, with a titles CSV in ``encoding``."""
    root, overrides = trained
    titles.write_bytes(titles_for(root).encode(encoding))
    sets = [*overrides, "recommend.user=1", f"recommend.titles_path={titles}"]
    status = main(["recommend", *[part for item in sets for part in ("--set", item)]])
    return status, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_recommend_reads_a_titles_csv_with_a_byte_order_mark(trained, tmp_path, capsys):
    status, summary = recommend_with_titles(trained, tmp_path / "movies.csv", "utf-8-sig", capsys)
    assert status == 0, summary
    assert all(row["title"].startswith("Café ’") for row in summary["recommendations"])


def test_recommend_with_a_windows_1252_titles_csv_says_so(trained, tmp_path, capsys):
    titles = tmp_path / "movies.csv"
    status, summary = recommend_with_titles(trained, titles, "cp1252", capsys)
    assert status == 1, summary
    assert_one_clear_line(summary, str(titles), "Windows-1252", "UTF-8")


# -- 4. a read-only paths.root -----------------------------------------------------------------


# -- 5. a gzip-compressed input ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["auto", "csv"])
def test_a_gzip_csv_named_gz_is_read(spark, tmp_path, capsys, fmt):
    data = tmp_path / "ratings.csv.gz"
    data.write_bytes(gzip.compress(csv_text().encode()))
    assert head_lines(str(data), 2) == [HEADER, "1,1,3.0,1011"]

    status, summary = run_cli("prepare", prepare_settings(tmp_path / "root", data, fmt), capsys)

    assert status == 0, summary
    assert summary["counts"]["input_rows"] == len(ROWS)
    assert summary["counts"]["quarantined"] == 0
