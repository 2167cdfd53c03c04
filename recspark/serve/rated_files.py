"""Scoring tasks that read ``prepare``'s ``rated/`` files themselves, with pyarrow.

When the model's user table is broadcast (it fits ``score.broadcast_users_mb``), the score job
needs nothing from Spark's SQL engine on the way in: ``rated/`` already holds one row per user
with every item it rated. Read by Spark, those rows would be decoded into the JVM's row format and
encoded again as Arrow for the Python workers, array element by array element: at 100 rated items
per user that is most of the JVM's share of a scoring task. Here the driver lists the files' row
groups (their footers, checked by :mod:`recspark.core.parquet_safety`), cuts them into one slice
per task (or more, for large groups), and each task opens its slices with pyarrow (through
:mod:`recspark.core.location`, so on any store) and hands the Arrow batches straight to the
kernel. Spark schedules the tasks (one ``range`` partition each, no shuffle) and writes what they
return.

The lists are those of :func:`~recspark.serve.scoring.recommend_all` over the same users: the same
kernel over the same rows (``tests/e2e/test_scoring.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_type
from pyspark.sql.types import StructField, StructType

from recspark.core import location, parquet_safety
from recspark.core.constants import ITEMS, USER_IDX
from recspark.core.location import Location
from recspark.core.storage import parquet_files
from recspark.serve.kernel import UserTable
from recspark.serve.scoring import (
    ScoringPlan,
    TaskInputs,
    output_schema,
    score_partition,
)

#: Input rows per Arrow batch handed to the kernel (Spark's own default for Arrow batches).
BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Slice:
    """Rows ``[start, stop)`` of row group ``group`` of file ``uri``."""

    uri: str
    group: int
    start: int
    stop: int


def slices(folder: Location, tasks: int) -> list[Slice]:
    """Every row of the Parquet files under ``folder`` as slices of row groups, at most about
    ``1 / tasks`` of the rows each, so that every task has work. Footers are checked first."""
    groups: list[tuple[str, int, int]] = []
    files = parquet_files(folder)
    parquet_safety.check_parquet_files(files)
    for file in files:
        with file.open("rb") as handle:
            meta = pq.ParquetFile(handle).metadata
        groups += [(file.uri, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    total = sum(rows for _, _, rows in groups)
    most = max(1, -(-total // max(1, tasks)))
    return [
        Slice(uri, group, start, min(start + most, rows))
        for uri, group, rows in groups
        for start in range(0, rows, most)
    ]


@dataclass(frozen=True, eq=False)
class RatedTasks:
    """The scoring tasks over ``rated/``'s files, planned once by the driver: ``count`` tasks
    share out the slices numbered ``0 .. slices - 1``; in a task, ``score(chosen)`` gives the
    top-N batches of the slices numbered ``chosen``, rows as ``schema``
    (:func:`~recspark.serve.scoring.output_schema`)."""

    count: int
    slices: int
    score: Callable[[Iterable[int]], Iterator[pa.RecordBatch]]
    schema: StructType


def rated_tasks(
    spark: SparkSession,
    folder: Location,
    user_table: UserTable,
    plan: ScoringPlan,
    *,
    carry: tuple[str, ...] = (),
    item_ids: pa.Array | None = None,
    exclude_seen: bool = True,
) -> RatedTasks:
    """Plan the scoring tasks over the ``(user_idx, items, *carry)`` Parquet files under
    ``folder`` (``prepare``'s ``rated/``): footers checked, rows cut into slices, the inputs
    broadcast. ``plan.partitions`` (else the session's default parallelism) is the number of
    tasks; other parameters as in :func:`recommend_rated_files`."""
    files = parquet_files(folder)
    if not files:
        raise FileNotFoundError(f"no Parquet files in {folder}")
    schema = parquet_safety.read_schema(files[0])
    missing = [c for c in (USER_IDX, ITEMS, *carry) if c not in schema.names]
    if missing:
        raise ValueError(f"{folder} lacks column(s) {missing}; it has {schema.names}")
    count = plan.tasks(spark)
    cut = slices(folder, count)
    carried = [StructField(name, from_arrow_type(schema.field(name).type)) for name in carry]
    inputs = TaskInputs(
        plan.payload,
        plan.top_n,
        plan.users_per_block,
        plan.device,
        tuple(carry),
        item_ids,
        user_table,
        None if plan.eligible is None else np.asarray(plan.eligible, dtype=bool),
    )
    shared = spark.sparkContext.broadcast((inputs, cut, location.settings(), exclude_seen))
    counters = plan.counters

    def score(chosen: Iterable[int]) -> Iterator[pa.RecordBatch]:
        # A closure, pickled by value: it calls score_partition as this module holds it.
        task_inputs, task_slices, storage, exclude = shared.value
        rows = read_slices([task_slices[i] for i in chosen], task_inputs.carry, storage, exclude)
        return score_partition(rows, task_inputs, counters)

    tasks = max(1, min(count, len(cut)))
    return RatedTasks(tasks, len(cut), score, output_schema(carried, item_ids))


def recommend_rated_files(
    spark: SparkSession,
    folder: Location,
    user_table: UserTable,
    plan: ScoringPlan,
    *,
    carry: tuple[str, ...] = (),
    item_ids: pa.Array | None = None,
    exclude_seen: bool = True,
) -> DataFrame:
    """Top-N ``(user_idx, *carry, item_idx, [item_id,] rank, score)`` for every row of the
    ``(user_idx, items, *carry)`` Parquet files under ``folder`` (``prepare``'s ``rated/``),
    read by the scoring tasks. ``exclude_seen`` False ignores ``items``. Other parameters as in
    :func:`recspark.serve.scoring.recommend_all`; ``plan.partitions`` (else the session's default
    parallelism) is the number of tasks the rows are cut into."""
    tasks = rated_tasks(
        spark,
        folder,
        user_table,
        plan,
        carry=carry,
        item_ids=item_ids,
        exclude_seen=exclude_seen,
    )

    def score(batches: Iterable[pa.RecordBatch]) -> Iterable[pa.RecordBatch]:
        return tasks.score(int(i) for batch in batches for i in batch.column(0).to_pylist())

    units = spark.range(0, tasks.slices, 1, numPartitions=tasks.count)
    return units.mapInArrow(score, tasks.schema)


def read_slices(
    chosen: list[Slice], carry: tuple[str, ...], storage: dict[str, str], exclude_seen: bool
) -> Iterator[pa.RecordBatch]:
    """The ``(user_idx, items, *carry)`` batches of ``chosen``, read in order, a footer once per
    file; ``items`` all null when ``exclude_seen`` is False."""
    location.configure(storage)
    columns = [USER_IDX, ITEMS, *carry] if exclude_seen else [USER_IDX, *carry]
    for uri, pieces in groupby(chosen, key=lambda piece: piece.uri):
        with Location(uri).open("rb") as handle:
            parquet = pq.ParquetFile(handle)
            for piece in pieces:
                group = parquet.read_row_group(piece.group, columns=columns)
                group = group.slice(piece.start, piece.stop - piece.start)
                if not exclude_seen:
                    nulls = pa.nulls(group.num_rows, pa.list_(pa.int32()))
                    group = group.append_column(ITEMS, nulls)
                yield from group.to_batches(max_chunksize=BATCH_ROWS)
