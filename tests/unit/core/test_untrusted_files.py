"""No code from any file (issue 28): a Parquet file whose schema holds an extension type is
refused. The tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_untrusted_files.py.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recspark.core import parquet_safety
from recspark.core.errors import BadInputError

CRAFTED = Path(__file__).parents[2] / "fixtures" / "crafted_extension.parquet"


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
        [sys.executable, "-W", "ignore", "-c", script],
        capture_output=True,
        text=True,
        env={"RECSPARK_PICKLE_MARKER": str(marker), "PATH": "/usr/bin:/bin"},
        timeout=120,
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
    assert parquet_safety.extension_columns(pq.read_schema(path)) == [("info.tag", "example.label")]
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
