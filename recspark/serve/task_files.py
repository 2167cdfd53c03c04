"""Scoring tasks that write the published Parquet files themselves, with pyarrow.

When the tasks read ``rated/`` themselves (:mod:`recspark.serve.rated_files`), the kernel's Arrow
batches are already the published rows but for two columns' order and the model version. Handed
back to Spark, every row would be converted into the JVM's row format and encoded again by Spark's
Parquet writer: in a fresh JVM, before its JIT has compiled that path, that and planning the query
are seconds of a 100k-user score. Here each task writes its rows to one Parquet file in the
staging folder (any store, through :mod:`recspark.core.location`) and returns its name and row
count; Spark only schedules the tasks (one RDD job, no SQL).

The commit is the driver's: a task writes under a name of its own attempt, and once the job has
ended every file in the staging folder that no successful task reported (an attempt that failed
midway, a speculative copy) is deleted before the folder is counted and published
(:func:`recspark.core.storage.staged`). The files are what Spark would have written: the same
columns and types (the schema is checked against the published table's as before), snappy pages,
one file per task.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import TaskContext
from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StringType, StructField, StructType

from recspark.core import location
from recspark.core.constants import ITEM_ID, MODEL_VERSION, RANK, SCORE, USER_ID
from recspark.core.location import Location
from recspark.serve.rated_files import RatedTasks

log = logging.getLogger(__name__)

#: The published table's columns, in order (``model_version`` is added by the task).
PUBLISHED = (USER_ID, ITEM_ID, RANK, SCORE)

#: Rows per Parquet row group: the kernel's batches (a few thousand users each) are gathered up
#: to about this many rows first, so that readers do not meet thousands of tiny groups.
GROUP_ROWS = 1 << 20


@dataclass(frozen=True)
class TaskFiles:
    """The published rows of one score, written by the scoring tasks: :meth:`write` runs the job
    into a staging folder; ``schema`` is the rows' Spark schema (as Spark reads the files)."""

    spark: SparkSession
    tasks: RatedTasks
    model_version: str

    @property
    def schema(self) -> StructType:
        fields = {field.name: field for field in self.tasks.schema.fields}
        return StructType(
            [fields[name] for name in PUBLISHED] + [StructField(MODEL_VERSION, StringType())]
        )

    def write(self, staging: Location) -> int:
        """Score every user into Parquet files under ``staging``; return the rows written."""
        arrow_schema = to_arrow_schema(self.schema)
        tasks, version, storage = self.tasks, self.model_version, location.settings()
        folder = staging.uri

        def run(index: int, chosen: Iterable[int]) -> Iterator[tuple[str, int]]:
            location.configure(storage)
            batches = tasks.score(chosen)
            yield write_task_file(Location(folder), index, batches, arrow_schema, version)

        written = (
            self.spark.sparkContext.parallelize(range(tasks.slices), tasks.count)
            .mapPartitionsWithIndex(run)
            .collect()  # one (file, rows) per task: bounded by the tasks, not the data
        )
        keep = {name for name, _ in written}
        for stray in staging.glob("*.parquet"):
            if stray.name not in keep:
                log.info("removed %s, written by a task attempt that did not succeed", stray)
                stray.unlink()
        return sum(rows for _, rows in written)


def write_task_file(
    folder: Location,
    index: int,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    model_version: str,
) -> tuple[str, int]:
    """Write one task's top-N batches as the published rows (``schema``'s columns, the
    ``model_version`` column added) to a file of this attempt under ``folder``; return the file's
    name and its rows. A task without users writes a file with no rows (as Spark would)."""
    context = TaskContext.get()
    attempt = context.taskAttemptId() if context else 0
    name = f"part-{index:05d}-t{attempt}-{uuid.uuid4().hex[:8]}.snappy.parquet"
    rows, pending, pending_rows = 0, [], 0
    with (folder / name).open("wb") as handle:
        with pq.ParquetWriter(handle, schema, compression="snappy") as writer:
            for batch in batches:
                pending.append(_published(batch, schema, model_version))
                pending_rows += batch.num_rows
                if pending_rows >= GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(pending), row_group_size=GROUP_ROWS)
                    rows, pending, pending_rows = rows + pending_rows, [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=GROUP_ROWS)
                rows += pending_rows
    return name, rows


def _published(batch: pa.RecordBatch, schema: pa.Schema, model_version: str) -> pa.RecordBatch:
    """The kernel's ``(user_idx, user_id, item_idx, item_id, rank, score)`` batch as the published
    columns, with the model version."""
    columns = [batch.column(name).cast(schema.field(name).type) for name in PUBLISHED]
    columns.append(pa.array([model_version] * batch.num_rows, type=pa.string()))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
