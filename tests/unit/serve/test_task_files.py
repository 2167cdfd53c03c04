"""One scoring task's Parquet file (:func:`recspark.serve.task_files.write_task_file`), no Spark:
the published columns and types, the model version, row groups gathered from small batches."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from recspark.core.location import Location
from recspark.serve import task_files
from tests.conftest import REPO


def kernel_batch(users: list[int], items: list[int]) -> pa.RecordBatch:
    """Rows as the kernel gives them: user_idx, the carried user_id, item_idx, item_id, rank,
    score (rank as int64 here, to see it cast to the published int32)."""
    return pa.RecordBatch.from_pydict(
        {
            "user_idx": pa.array(users, pa.int32()),
            "user_id": pa.array([100 + u for u in users], pa.int64()),
            "item_idx": pa.array(items, pa.int32()),
            "item_id": pa.array([f"i{i}" for i in items]),
            "rank": pa.array(range(1, len(users) + 1), pa.int64()),
            "score": pa.array([0.5] * len(users), pa.float32()),
        }
    )


SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64()),
        pa.field("item_id", pa.string()),
        pa.field("rank", pa.int32()),
        pa.field("score", pa.float32()),
        pa.field("model_version", pa.string()),
    ]
)


def test_a_task_file_holds_the_published_columns_and_the_model_version(tmp_path, monkeypatch):
    monkeypatch.setattr(task_files, "GROUP_ROWS", 4)
    batches = [kernel_batch([1, 1, 1], [5, 6, 7]), kernel_batch([2, 2, 2], [5, 7, 8])]
    batches.append(kernel_batch([3], [9]))
    name, rows = task_files.write_task_file(Location(tmp_path), 3, batches, SCHEMA, "v7")
    assert name.startswith("part-00003-") and name.endswith(".snappy.parquet")
    assert rows == 7
    parquet = pq.ParquetFile(tmp_path / name)
    # Batches are gathered until there are GROUP_ROWS rows (3 + 3), written in groups of at most
    # GROUP_ROWS rows (4 + 2), then the rest (1): not one group per batch.
    groups = parquet.metadata.num_row_groups
    assert [parquet.metadata.row_group(g).num_rows for g in range(groups)] == [4, 2, 1]
    table = parquet.read()
    assert table.schema.equals(SCHEMA)
    assert table.column("user_id").to_pylist() == [101, 101, 101, 102, 102, 102, 103]
    assert table.column("item_id").to_pylist() == ["i5", "i6", "i7", "i5", "i7", "i8", "i9"]
    assert table.column("rank").to_pylist() == [1, 2, 3, 1, 2, 3, 1]
    assert set(table.column("model_version").to_pylist()) == {"v7"}


def test_a_task_without_users_writes_an_empty_file(tmp_path):
    name, rows = task_files.write_task_file(Location(tmp_path), 0, [], SCHEMA, "v1")
    assert rows == 0
    table = pq.read_table(tmp_path / name)
    assert table.num_rows == 0 and table.schema.equals(SCHEMA)


def test_a_scoring_task_imports_neither_pandas_nor_pydantic():
    """What a Python worker imports to run a scoring task (the modules its closures and broadcast
    unpickle from) leaves pandas and pydantic out: in a fresh process each worker pays for every
    import before its first user (half a second for those two, beside torch's 1.7)."""
    code = (
        "import sys\nimport pyspark.daemon, pyspark.worker\n"
        "import recspark.serve.task_files, recspark.serve.rated_files, recspark.serve.scoring\n"
        "import recspark.serve.kernel\n"
        "loaded = sorted({'pandas', 'pydantic'} & set(sys.modules))\n"
        "assert not loaded, f'a scoring task imports {loaded}'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
