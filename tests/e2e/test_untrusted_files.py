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

import base64
import json
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recspark.cli import main
from recspark.core import parquet_safety
from recspark.core.errors import BadInputError

CRAFTED = Path(__file__).parents[1] / "fixtures" / "crafted_extension.parquet"
RUN_DATE = "2026-03-01"


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """Where the crafted pickle would write; no test may see it appear."""
    path = tmp_path / "pickle-ran"
    monkeypatch.setenv("RECSPARK_PICKLE_MARKER", str(path))
    yield path
    assert not path.exists(), "the crafted file's pickle ran"


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
    rows = [f"{u},{i},{1 + (u * 3 + i) % 5},{1000 + u * 10 + i}" for u in range(1, users + 1)
            for i in range(1, items + 1)]
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
    return path


def crafted_copy(folder: Path, name: str = "part-00000.parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(CRAFTED, folder / name))


# -- the check itself -----------------------------------------------------------------------


def test_the_fixture_is_what_the_tests_say(marker):
    # The pickle is there, in the Arrow schema the footer keeps (base64), under the type name
    # pyarrow used to unpickle. (Reading the footer is safe: parquet_safety is imported.)
    schema = base64.b64decode(pq.read_metadata(CRAFTED).metadata[b"ARROW:schema"])
    assert b"arrow.py_extension_type" in schema and b"RECSPARK_PICKLE_MARKER" in schema
    with pytest.raises(BadInputError, match=r"crafted_extension\.parquet: column 'item_id'"):
        parquet_safety.check_parquet(str(CRAFTED))


def test_reading_stays_safe_when_pyarrow_would_unpickle_again(tmp_path):
    """pyarrow 14.0.1 to 14.0.2 unpickle again after ``set_auto_load(True)``, as pyarrow < 14.0.1
    always did; the check disarms the type first, so the marker never appears (on a pyarrow
    without ``PyExtensionType`` the type reads as unknown, and is refused all the same)."""
    marker = tmp_path / "ran"
    script = (
        "import pyarrow as pa, pyarrow.parquet as pq\n"
        # pyarrow 15 and later have no PyExtensionType left to turn on
        "if hasattr(pa, 'PyExtensionType'): pa.PyExtensionType.set_auto_load(True)\n"
        "from recspark.core import parquet_safety\n"
        "from recspark.core.errors import BadInputError\n"
        f"try:\n    parquet_safety.check_parquet({str(CRAFTED)!r})\n"
        "except BadInputError as error:\n    print('refused:', error)\n"
        f"print(pq.read_schema({str(CRAFTED)!r}).field('item_id').type)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True,
        env={"RECSPARK_PICKLE_MARKER": str(marker), "PATH": "/usr/bin:/bin"}, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "'item_id'" in done.stdout
    assert not marker.exists()


class _Label(pa.ExtensionType):
    """An extension type pyarrow knows (registered in the writing process): still refused."""

    def __init__(self):
        super().__init__(pa.string(), "example.label")

    def __arrow_ext_serialize__(self):
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


def test_any_extension_type_is_refused_nested_ones_too(tmp_path):
    label = pa.ExtensionArray.from_storage(_Label(), pa.array(["a", "b"]))
    nested = pa.StructArray.from_arrays([pa.array([1, 2]), label], names=["n", "tag"])
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "info": nested}), path)
    assert parquet_safety.extension_columns(pq.read_schema(path)) == [
        ("info.tag", "example.label")]
    # Not registered in the reading process: the name survives in the field's metadata.
    pa.register_extension_type(_Label())
    try:
        with pytest.raises(BadInputError, match=r"'info\.tag' has the Arrow extension type"):
            parquet_safety.check_parquet(str(path))
    finally:
        pa.unregister_extension_type("example.label")
    with pytest.raises(BadInputError, match=r"'info\.tag' has the Arrow extension type"):
        parquet_safety.check_parquet(str(path))
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "tags": [["a"], ["b", "c"]]}), plain)
    parquet_safety.check_parquet(str(plain))  # plain nested types pass


# -- every place recspark opens a file it did not write ---------------------------------------


def test_a_crafted_ratings_input_is_refused_before_any_row(spark, tmp_path, marker):
    folder = tmp_path / "input"
    ratings_csv(tmp_path / "unused.csv")
    crafted_copy(folder)
    root = tmp_path / "root"
    for fmt in ("parquet", "auto"):
        status, summary, line = run_cli("prepare", {
            "paths.root": root, "run_date": RUN_DATE, "input.path": folder, "input.format": fmt,
        })
        assert_refused(status, summary, line, "part-00000.parquet")
    assert not (root / "prepared" / RUN_DATE).exists()


def test_a_crafted_part_among_good_ones_is_refused(spark, tmp_path, marker):
    folder = tmp_path / "input"
    folder.mkdir()
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [3, 4], "rating": [4.0, 5.0]}),
                   folder / "part-00000.parquet")
    crafted_copy(folder, "part-00001.parquet")
    status, summary, line = run_cli("prepare", {
        "paths.root": tmp_path / "root", "run_date": RUN_DATE, "input.path": folder,
        "input.format": "auto",
    })
    assert_refused(status, summary, line, "part-00001.parquet")


def test_a_crafted_validation_input_is_refused(spark, tmp_path, marker):
    train = ratings_csv(tmp_path / "train.csv")
    validation = crafted_copy(tmp_path / "validation")
    root = tmp_path / "root"
    status, summary, line = run_cli("prepare", {
        "paths.root": root, "run_date": RUN_DATE, "input.path": train,
        "split.method": "given", "input.validation_path": validation, "input.format": "auto",
    })
    assert_refused(status, summary, line, "part-00000.parquet")
    assert not (root / "prepared" / RUN_DATE).exists()


@pytest.fixture(scope="module")
def prepared_root(spark, tmp_path_factory) -> Path:
    """A small prepared run that the train tests below tamper with (each on its own copy)."""
    base = tmp_path_factory.mktemp("untrusted")
    root = base / "root"
    status, summary, _ = run_cli("prepare", {
        "paths.root": root, "run_date": RUN_DATE, "input.path": ratings_csv(base / "r.csv"),
        "input.format": "auto",
    })
    assert status == 0, summary
    return root


def test_a_crafted_side_information_table_is_refused(prepared_root, tmp_path, marker):
    root = Path(shutil.copytree(prepared_root, tmp_path / "root"))
    side = tmp_path / "side"
    crafted_copy(side, "users.dat")
    crafted_copy(side, "movies.dat")
    status, summary, line = run_cli("train", {
        "paths.root": root, "run_date": RUN_DATE, "train.epochs": 1,
        "model.side_info": json.dumps({"format": "movielens-1m", "path": str(side)}),
    })
    assert_refused(status, summary, line, ".dat")
    assert not (root / "models" / RUN_DATE).exists()


def test_a_crafted_file_in_a_prepared_table_under_the_root_is_refused(
    prepared_root, tmp_path, marker
):
    root = Path(shutil.copytree(prepared_root, tmp_path / "root"))
    crafted_copy(root / "prepared" / RUN_DATE / "train", "part-99999-planted.parquet")
    status, summary, line = run_cli("train", {
        "paths.root": root, "run_date": RUN_DATE, "train.epochs": 1,
    })
    assert_refused(status, summary, line, "part-99999-planted.parquet")
    assert not (root / "models" / RUN_DATE).exists()
