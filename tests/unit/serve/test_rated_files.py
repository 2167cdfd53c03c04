"""The scoring tasks' own reading of ``rated/``: every row once, cut evenly, read in file order."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from recspark.core.location import Location
from recspark.serve.rated_files import read_slices, slices


def write_rated(folder, sizes: list[int], group_rows: int) -> list[int]:
    """Files of ``sizes`` rows (row groups of ``group_rows``); returns every user index."""
    folder.mkdir()
    users, first = [], 0
    for number, size in enumerate(sizes):
        idx = list(range(first, first + size))
        table = pa.table(
            {
                "user_idx": pa.array(idx, pa.int32()),
                "user_id": pa.array([f"u{i}" for i in idx]),
                "items": pa.array([[i % 7, 7 + i % 5] for i in idx], pa.list_(pa.int32())),
            }
        )
        pq.write_table(table, folder / f"part-{number:05d}.parquet", row_group_size=group_rows)
        users += idx
        first += size
    (folder / "_SUCCESS").touch()
    return users


def test_slices_cover_every_row_once_and_give_every_task_work(tmp_path):
    users = write_rated(tmp_path / "rated", [1000, 10, 333], group_rows=400)
    cut = slices(Location(tmp_path / "rated"), tasks=4)
    assert max(piece.stop - piece.start for piece in cut) <= -(-1343 // 4)
    assert len(cut) >= 4
    read = [
        value
        for batch in read_slices(cut, ("user_id",), {}, exclude_seen=True)
        for value in batch.column("user_idx").to_pylist()
    ]
    assert read == users  # each row once, in file order


def test_without_exclusions_the_items_are_null(tmp_path):
    write_rated(tmp_path / "rated", [5], group_rows=5)
    cut = slices(Location(tmp_path / "rated"), tasks=2)
    batches = list(read_slices(cut, ("user_id",), {}, exclude_seen=False))
    assert sum(batch.num_rows for batch in batches) == 5
    assert all(batch.column("items").null_count == batch.num_rows for batch in batches)
    assert batches[0].column("user_id").to_pylist()[:2] == ["u0", "u1"]
