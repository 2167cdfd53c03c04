"""No code from any file (issue 28): a Parquet file whose schema holds an extension type is refused.

``tests/fixtures/crafted_extension.parquet`` was written once with pyarrow 12.0.1 in a scratch venv
(``tests/fixtures/make_crafted_parquet.py`` says how): its ``item_id`` column is an
``arrow.py_extension_type`` whose pickle runs ``touch "$RECSPARK_PICKLE_MARKER"``, which a pyarrow
before 14.0.1 runs as soon as it reads the schema (CVE-2023-47248). The pinned pyarrow may no
longer write such a type, so the file is kept. Each test points a place recspark reads at it,
expects a one-line refusal that names the file and the column (exit 1, not an "unexpected
failure"), nothing published, and the marker never created.
"""

from __future__ import annotations

import json
import shutil
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recspark.cli import main
from tests.unit.core.test_untrusted_files import CRAFTED

RUN_DATE = "2026-03-01"


def run_cli(command: str, settings: dict) -> tuple[int, dict, str]:
    buffer = StringIO()
    args = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    with redirect_stdout(buffer):
        status = main([command, *args])
    lines = buffer.getvalue().strip().splitlines()
    return status, json.loads(lines[-1]), lines[-1]


def assert_refused(status: int, summary: dict, line: str, file_name: str) -> None:
    assert status == 1, summary
    error = summary["error"]
    assert "unexpected failure" not in error
    assert file_name in error and "'item_id'" in error and "extension type" in error, error
    assert "\n" not in line


def ratings_csv(path: Path, users: int = 12, items: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        f"{u},{i},{1 + (u * 3 + i) % 5},{1000 + u * 10 + i}"
        for u in range(1, users + 1)
        for i in range(1, items + 1)
    ]
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
    return path


def crafted_copy(folder: Path, name: str = "part-00000.parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(CRAFTED, folder / name))


# -- the check itself -----------------------------------------------------------------------


# -- every place recspark opens a file it did not write ---------------------------------------


def test_a_crafted_ratings_input_is_refused_before_any_row(spark, tmp_path, marker):
    folder = tmp_path / "input"
    ratings_csv(tmp_path / "unused.csv")
    crafted_copy(folder)
    root = tmp_path / "root"
    for fmt in ("parquet", "auto"):
        status, summary, line = run_cli(
            "prepare",
            {
                "paths.root": root,
                "run_date": RUN_DATE,
                "input.path": folder,
                "input.format": fmt,
            },
        )
        assert_refused(status, summary, line, "part-00000.parquet")
    assert not (root / "prepared" / RUN_DATE).exists()


def test_a_crafted_part_among_good_ones_is_refused(spark, tmp_path, marker):
    folder = tmp_path / "input"
    folder.mkdir()
    pq.write_table(
        pa.table({"user_id": [1, 2], "item_id": [3, 4], "rating": [4.0, 5.0]}),
        folder / "part-00000.parquet",
    )
    crafted_copy(folder, "part-00001.parquet")
    status, summary, line = run_cli(
        "prepare",
        {
            "paths.root": tmp_path / "root",
            "run_date": RUN_DATE,
            "input.path": folder,
            "input.format": "auto",
        },
    )
    assert_refused(status, summary, line, "part-00001.parquet")


def test_a_crafted_validation_input_is_refused(spark, tmp_path, marker):
    train = ratings_csv(tmp_path / "train.csv")
    validation = crafted_copy(tmp_path / "validation")
    root = tmp_path / "root"
    status, summary, line = run_cli(
        "prepare",
        {
            "paths.root": root,
            "run_date": RUN_DATE,
            "input.path": train,
            "split.method": "given",
            "input.validation_path": validation,
            "input.format": "auto",
        },
    )
    assert_refused(status, summary, line, "part-00000.parquet")
    assert not (root / "prepared" / RUN_DATE).exists()


@pytest.fixture(scope="module")
def prepared_root(spark, tmp_path_factory) -> Path:
    """A small prepared run that the train tests below tamper with (each on its own copy)."""
    base = tmp_path_factory.mktemp("untrusted")
    root = base / "root"
    status, summary, _ = run_cli(
        "prepare",
        {
            "paths.root": root,
            "run_date": RUN_DATE,
            "input.path": ratings_csv(base / "r.csv"),
            "input.format": "auto",
        },
    )
    assert status == 0, summary
    return root


def test_a_crafted_side_information_table_is_refused(prepared_root, tmp_path, marker):
    root = Path(shutil.copytree(prepared_root, tmp_path / "root"))
    side = tmp_path / "side"
    crafted_copy(side, "users.dat")
    crafted_copy(side, "movies.dat")
    status, summary, line = run_cli(
        "train",
        {
            "paths.root": root,
            "run_date": RUN_DATE,
            "train.epochs": 1,
            "model.side_info": json.dumps({"format": "movielens-1m", "path": str(side)}),
        },
    )
    assert_refused(status, summary, line, ".dat")
    assert not (root / "models" / RUN_DATE).exists()


def test_a_crafted_file_in_a_prepared_table_under_the_root_is_refused(
    prepared_root, tmp_path, marker
):
    root = Path(shutil.copytree(prepared_root, tmp_path / "root"))
    crafted_copy(root / "prepared" / RUN_DATE / "train", "part-99999-planted.parquet")
    status, summary, line = run_cli(
        "train",
        {
            "paths.root": root,
            "run_date": RUN_DATE,
            "train.epochs": 1,
        },
    )
    assert_refused(status, summary, line, "part-99999-planted.parquet")
    assert not (root / "models" / RUN_DATE).exists()
