"""How Spark writes a table into a staging folder, so that an object store costs few requests.

Every table recspark writes goes into a fresh ``_staging/`` folder that nobody reads until
:func:`recspark.core.storage.publish` moves it into place, and a failed job throws the folder away.
Spark's default commit (``FileOutputCommitter`` algorithm 1) makes each file visible atomically
at job commit by renaming it twice, task attempt to task folder and task folder to the table:
on a local disk or HDFS a rename is one metadata call, on an object store (S3A) it is a listing,
a copy, a delete and a few HEADs per file, twice. Inside a staging folder the job-level
atomicity is not needed (the publish gives it), so on an object store the writers use algorithm
2, which moves each task's files once, at task commit. Local disks and HDFS keep Spark's default.

Written with Spark's writer options (they reach the write job's Hadoop configuration), so the
session is not changed and other writes keep their own commit.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, DataFrameWriter

from recspark.core.location import HDFS_SCHEMES, Location

_ALGORITHM = "mapreduce.fileoutputcommitter.algorithm.version"


def renames_are_copies(path: str | Location) -> bool:
    """Whether ``path`` lies on an object store, where a rename copies every file."""
    location = Location(path)
    return not location.is_local and location.scheme not in HDFS_SCHEMES


def staging_writer(frame: DataFrame, path: str | Location) -> DataFrameWriter:
    """``frame.write`` for a table written at ``path`` inside a staging folder.

    On an object store its files are committed once (algorithm 2, see the module docstring);
    elsewhere it is ``frame.write`` unchanged.
    """
    writer = frame.write
    if renames_are_copies(path):
        writer = writer.option(_ALGORITHM, "2")
    return writer
