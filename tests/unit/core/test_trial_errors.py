"""Failures of a new-user trial that ended in "unexpected failure" or a misleading message. The
tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_trial_errors.py.
"""

from __future__ import annotations

import bz2
import gzip
import os
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from recspark.core import spark_errors
from recspark.core.errors import BadInputError, ConfigError
from recspark.core.output_root import check_writable
from recspark.data.listing import head_lines
from recspark.data.titles import read_titles
from tests.e2e.test_input_hardening import run_cli

HEADER = "user_id,item_id,rating,timestamp"


ROWS = [(u, i, float(1 + (u + i) % 5), 1000 + 10 * u + i) for u in range(1, 7) for i in range(1, 6)]


def assert_one_clear_line(summary: dict, *words: str) -> str:
    message = summary["error"]
    assert summary["status"] == "error"
    assert "unexpected failure" not in message and "\n" not in message
    for word in words:
        assert word in message, (word, message)
    return message


def csv_text() -> str:
    return "\n".join([HEADER, *(",".join(str(v) for v in row) for row in ROWS)]) + "\n"


def prepare_settings(root: Path, input_path: Path, fmt: str = "auto") -> dict:
    return {
        "paths.root": root,
        "run_date": "2026-02-01",
        "input.path": input_path,
        "input.format": fmt,
        "spark.conf": "{}",
    }


class FakeThrowable:
    """Enough of a py4j JVM throwable for :func:`spark_errors.java_chain`."""

    def __init__(self, name: str, message: str, cause: FakeThrowable | None = None):
        self.name, self.message, self.cause = name, message, cause

    def getClass(self):
        return self

    def getName(self):
        return self.name

    def getMessage(self):
        return self.message

    def getCause(self):
        return self.cause


def jvm_failure(*chain: tuple[str, str]) -> Exception:
    cause = None
    for name, message in reversed(chain):
        cause = FakeThrowable(name, message, cause)
    error = Exception("An error occurred while calling o42.collectToPython.")
    error.java_exception = cause
    return error


@pytest.mark.parametrize(
    "key, message",
    [
        (
            "spark.default.parallelism",
            'Illegal value for config key spark.default.parallelism: For input string: "x"',
        ),
        ("spark.sql.adaptive.enabled", "spark.sql.adaptive.enabled should be boolean, but was x"),
    ],
)
def test_the_other_ways_spark_refuses_a_setting_name_the_key(key, message):
    error = jvm_failure(
        ("org.apache.spark.SparkException", "Job aborted due to stage failure"),
        ("java.lang.NumberFormatException", message),
    )
    known = spark_errors.translate(error, {key: "x", "spark.ui.enabled": "false"})
    assert isinstance(known, ConfigError)
    assert f"spark.conf {key}" in str(known) and "spark.ui.enabled" not in str(known)


def test_a_spark_failure_that_merely_mentions_a_set_key_is_left_alone():
    error = jvm_failure(
        (
            "org.apache.spark.SparkNumberFormatException",
            "[CAST_INVALID_INPUT] The value 'x' cannot be cast. "
            "Set spark.sql.ansi.enabled to false",
        ),
    )
    assert spark_errors.translate(error, {"spark.sql.ansi.enabled": "true"}) is None
    assert spark_errors.translate(ValueError("not from the JVM"), {}) is None


MOVIES_CSV = 'movieId,title,genres\n1,"Amélie’s Café, Le (2001)",Comedy\n2,Heat (1995),Action\n'


GENRE_FLAGS = "|".join(["0"] * 18 + ["1"])


U_ITEM = f"1|Amélie (2001)|01-Jan-2001||http://x|{GENRE_FLAGS}\n"


def test_a_titles_csv_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "movies.csv"
    path.write_bytes(MOVIES_CSV.encode("utf-8-sig"))
    frame = read_titles(str(path))
    assert frame["item_id"].tolist() == [1, 2]
    assert frame["title"].tolist() == ["Amélie’s Café, Le (2001)", "Heat (1995)"]


def test_a_u_item_saved_as_utf8_with_or_without_a_byte_order_mark_is_read(tmp_path):
    for encoding in ("utf-8", "utf-8-sig"):
        path = tmp_path / f"{encoding}.item"
        path.write_bytes(U_ITEM.encode(encoding))
        assert read_titles(str(path)).iloc[0].tolist() == [1, "Amélie (2001)", "Western"]
    latin = tmp_path / "u.item"
    latin.write_bytes(U_ITEM.encode("latin-1"))  # MovieLens's own encoding still reads
    assert read_titles(str(latin)).iloc[0]["title"] == "Amélie (2001)"


@pytest.mark.parametrize(
    "name, text", [("movies.csv", MOVIES_CSV), ("u.item", U_ITEM.replace("Amélie", "Amélie’s"))]
)
def test_a_windows_1252_titles_table_names_the_encoding_and_the_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(BadInputError) as refused:
        read_titles(str(path))
    message = str(refused.value)
    assert str(path) in message and "Windows-1252" in message and "UTF-8" in message
    assert "line" in message and "\n" not in message


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write to, not even root (which ignores permission bits): a read-only
    tmpfs mounted over it; for another user, a folder without write permission."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("command", ["generate", "prepare"])
def test_a_read_only_root_is_named_before_spark_starts(
    read_only_folder, tmp_path, capsys, no_spark, command
):
    data = tmp_path / "ratings.csv"
    data.write_text(csv_text())
    for root in (read_only_folder, read_only_folder / "runs" / "default"):
        status, summary = run_cli(command, prepare_settings(root, data), capsys)
        assert status == 1, summary
        assert_one_clear_line(summary, f"paths.root {root}", "cannot be written")


def test_a_root_under_sys_is_named_too(capsys, no_spark):
    root = Path("/sys") / f"recspark-{uuid.uuid4().hex[:8]}"
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this system")
    status, summary = run_cli("generate", {"paths.root": root, "spark.conf": "{}"}, capsys)
    assert status == 1, summary
    assert_one_clear_line(summary, f"paths.root {root}", "cannot be written")
    assert not root.exists()


def test_the_root_check_leaves_no_trace(tmp_path):
    """A root that does not exist yet is not left behind by the check (train, say, then fails
    asking for prepare's output, not leaving an empty root)."""
    check_writable(str(tmp_path / "new" / "root"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old").mkdir()
    check_writable(str(tmp_path / "old"))
    assert list((tmp_path / "old").iterdir()) == []


def test_a_bzip2_head_is_read_and_a_truncated_gzip_is_named(tmp_path):
    data = tmp_path / "ratings.csv.bz2"
    data.write_bytes(bz2.compress(csv_text().encode()))
    assert head_lines(str(data), 2) == [HEADER, "1,1,3.0,1011"]
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(gzip.compress(csv_text().encode())[:20])
    with pytest.raises(BadInputError, match=r"cut\.csv\.gz is not a whole gzip file"):
        head_lines(str(cut), 2)


def test_a_gzip_csv_not_named_gz_is_refused_naming_gzip(tmp_path, capsys, no_spark):
    data = tmp_path / "ratings.csv"
    data.write_bytes(gzip.compress(csv_text().encode()))
    for fmt in ("auto", "csv"):
        status, summary = run_cli("prepare", prepare_settings(tmp_path / "root", data, fmt), capsys)
        assert status == 1, summary
        message = assert_one_clear_line(summary, str(data), "gzip-compressed", ".gz")
        assert "\\x" not in message  # no bytes shown


def test_a_zip_archive_is_refused_saying_unzip(tmp_path, capsys, no_spark):
    data = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("ratings.csv", csv_text())
    status, summary = run_cli("prepare", prepare_settings(tmp_path / "root", data), capsys)
    assert status == 1, summary
    assert_one_clear_line(summary, str(data), "zip", "unzip")
