"""The tables downstream reads, one run date at a time: Parquet folders or a Delta Lake table.

``score.table_format`` chooses how ``recommendations/`` is written:

* ``parquet`` (the default): one folder per date, ``recommendations/run_date=D/``, published
  whole by :func:`recspark.core.storage.publish` with its ``_SUCCESS`` marker last. Any reader
  reads it (Spark, Hive, Trino, pandas); on an object store a re-published date is briefly
  unmarked, so readers must require ``_SUCCESS`` (Spark's own table readers do not check it).
* ``delta``: one Delta table at ``recommendations/``, partitioned by ``run_date``. A date is
  replaced by one commit (``replaceWhere`` on ``run_date``): readers see the old rows or the new,
  on any store, without rename or marker. Retention deletes old dates and ``VACUUM`` removes their
  files once Delta's retention period has passed; ``DESCRIBE HISTORY`` is the publication log.

``score.table: NAME`` registers the table in Spark's catalog (``CREATE TABLE ... LOCATION``) so
``spark.table(NAME)`` and SQL read it. Spark tracks a Parquet table's partitions in the catalog,
so after each publish (and after retention) the job syncs them (``MSCK REPAIR TABLE ... SYNC
PARTITIONS``): readers see each new date without running it themselves.

A date whose id columns have another type than the table's (``user_id`` as text where the table
holds numbers) is refused before anything is written: readers of a Parquet folder would fail on
the mix, and Delta would refuse the commit with a less telling message.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from recspark.core import parquet_safety
from recspark.core.config import ScoreConfig
from recspark.core.constants import RUN_DATE
from recspark.core.errors import BadInputError, ConfigError
from recspark.core.location import Location
from recspark.core.s3_commit import staging_writer

if TYPE_CHECKING:
    from recspark.serve.task_files import TaskFiles

from recspark.core.storage import (
    Layout,
    clean_leftovers,
    parquet_files,
    parquet_rows,
    publish_token,
    staged,
)

log = logging.getLogger(__name__)

DELTA_LOG = "_delta_log"
_COMMIT = re.compile(r"^(\d{20})\.json$")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")


@dataclass(frozen=True)
class Published:
    """What one publish wrote: rows, where, and the table's version after it (Delta only)."""

    rows: int
    location: str
    version: int | None = None


@dataclass(frozen=True)
class OutputTable:
    """A downstream table under ``paths.root`` (``recommendations``, ``similar_items``).

    Parameters
    ----------
    root
        The table's folder.
    format
        ``parquet`` or ``delta``.
    name
        Catalog name to register it under, or None.
    """

    root: Location
    format: str = "parquet"
    name: str | None = None

    def __post_init__(self):
        if self.format not in ("parquet", "delta"):
            raise ConfigError(f"table format {self.format!r}: choose parquet or delta")
        if self.name is not None and not _TABLE_NAME.match(self.name):
            raise ConfigError(
                f"score.table {self.name!r} is not a table name: use NAME, DATABASE.NAME or "
                "CATALOG.DATABASE.NAME (letters, digits, underscores)"
            )

    @property
    def is_delta(self) -> bool:
        return self.format == "delta"

    def partition(self, run_date) -> Location:
        """A date's folder (for Delta, where its data files lie; not a table of its own)."""
        return self.root / f"{RUN_DATE}={run_date}"

    def exists(self) -> bool:
        if self.is_delta:
            return (self.root / DELTA_LOG).is_dir()
        return self.root.is_dir()

    # -- writing -------------------------------------------------------------------------------
    def publish(
        self,
        spark: SparkSession,
        layout: Layout,
        frame: DataFrame | TaskFiles,
        run_date,
        check=None,
    ) -> Published:
        """Write ``frame`` as the rows of ``run_date``, replacing that date whole (a Parquet table
        may take :class:`~recspark.serve.task_files.TaskFiles`, rows its tasks write themselves).

        ``check(rows)`` runs once the rows are written: for Parquet before they are published
        (counted from the staged files' footers; raising publishes nothing), for Delta after the
        commit (from its metrics; the commit is atomic, so a mismatch can only be reported).
        """
        self.check_format()
        self.check_id_types(spark, frame, run_date)
        if self.is_delta:
            published = self._publish_delta(spark, layout, frame, run_date, check)
        else:
            published = self._publish_parquet(spark, layout, frame, run_date, check)
        self.register(spark)
        return published

    def _publish_parquet(self, spark, layout, frame, run_date, check) -> Published:
        final = self.partition(run_date)
        name = f"{self.root.name}-{run_date}"
        for path in clean_leftovers(layout, final, name):
            log.info("removed %s, left by an earlier run that did not finish", path)
        with staged(layout, final, name) as staging:
            if isinstance(frame, DataFrame):
                # One file per scoring task, committed once on an object store.
                staging_writer(frame, staging).mode("overwrite").parquet(str(staging))
            else:
                frame.write(staging)  # the tasks write their own files
            rows = parquet_rows(staging)
            if check is not None:
                check(rows)
        return Published(rows, str(final))

    def _publish_delta(self, spark, layout, frame, run_date, check) -> Published:
        if isinstance(frame, DataFrame):
            return self._commit_delta(frame, run_date, check)
        # Rows the scoring tasks wrote: staged as Parquet, counted and checked before the
        # commit (a mismatch publishes nothing), then read by Spark's Parquet scan into one
        # Delta commit. The staged files are scratch: Delta writes its own under the table.
        name = f"{self.root.name}-delta-{run_date}"
        for path in (layout.root / "_staging").glob(f"{name}-*"):
            path.rmtree()
            log.info("removed %s, left by an earlier run that did not finish", path)
        staging = layout.staging(name)
        try:
            frame.write(staging)
            rows = parquet_rows(staging)
            if check is not None:
                check(rows)
            staged_rows = spark.read.schema(frame.schema).parquet(str(staging))
            return self._commit_delta(staged_rows, run_date, None)
        finally:
            staging.rmtree()

    def _commit_delta(self, frame: DataFrame, run_date, check) -> Published:
        dated = frame.withColumn(RUN_DATE, F.lit(str(run_date)).cast("date"))
        (
            dated.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"{RUN_DATE} = DATE'{run_date}'")
            .partitionBy(RUN_DATE)
            .save(str(self.root))
        )
        version, commit = self.last_commit()
        rows = int((commit.get("operationMetrics") or {}).get("numOutputRows", 0))
        if check is not None:
            # The commit is atomic, so a mismatch can only be reported, not held back.
            check(rows)
        return Published(rows, str(self.root), version)

    def last_commit(self) -> tuple[int, dict]:
        """The Delta table's newest version and its ``commitInfo`` (operation, metrics), read
        from its log's JSON file: what ``DESCRIBE HISTORY ... LIMIT 1`` gives, without a job."""
        versions = self._versions()
        if not versions:
            raise BadInputError(f"{self.root} has no Delta commit")
        latest = max(versions)
        with (self.root / DELTA_LOG / f"{latest:020d}.json").open("r") as handle:
            actions = [json.loads(line) for line in handle if line.strip()]
        info: dict = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        return latest, info

    def _versions(self) -> list[int]:
        return [
            int(match.group(1))
            for child in (self.root / DELTA_LOG).iterdir()
            if (match := _COMMIT.match(child.name))
        ]

    def register(self, spark: SparkSession) -> None:
        """Create the catalog entry when missing, sync a Parquet table's partitions, refresh."""
        if self.name is None:
            return
        using = "DELTA" if self.is_delta else "PARQUET"
        location = str(self.root).replace("'", "\\'")
        namespace = self.name.rpartition(".")[0]
        if namespace:
            spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {namespace}")
        spark.sql(f"CREATE TABLE IF NOT EXISTS {self.name} USING {using} LOCATION '{location}'")
        registered = _table_location(spark, self.name)
        if registered is not None and Location(registered) != self.root:
            raise ConfigError(
                f"the catalog's table {self.name} is at {registered}, not at {self.root}: another "
                "paths.root publishes under that name. Choose another score.table, or drop the "
                "old table (DROP TABLE leaves an external table's files)"
            )
        if not self.is_delta:
            # Spark registers a table over partition folders with catalog-tracked partitions:
            # add the new dates and drop those retention removed.
            spark.sql(f"MSCK REPAIR TABLE {self.name} SYNC PARTITIONS")
        spark.sql(f"REFRESH TABLE {self.name}")

    def check_format(self) -> None:
        """Refuse to write one format into a table folder that holds the other."""
        delta_log = (self.root / DELTA_LOG).is_dir()
        if self.is_delta and not delta_log and self.root.glob(f"{RUN_DATE}=*"):
            raise ConfigError(
                f"{self.root} holds Parquet run dates, not a Delta table: keep "
                "score.table_format: parquet for this paths.root, or convert it first (Delta's "
                f"CONVERT TO DELTA parquet.`{self.root}` PARTITIONED BY ({RUN_DATE} DATE))"
            )
        if not self.is_delta and delta_log:
            raise ConfigError(
                f"{self.root} is a Delta table: set score.table_format: delta for this paths.root"
            )

    # -- reading -------------------------------------------------------------------------------
    def schema(self, spark: SparkSession):
        """The table's schema as published, or None when nothing is (one footer or the log)."""
        if self.is_delta:
            return spark.read.format("delta").load(str(self.root)).schema if self.exists() else None
        from recspark.core.storage import latest_date

        date = latest_date(self.root)
        if date is None:
            return None
        files = parquet_files(self.partition(date))
        # From the footer, as Spark would read it, without a Spark job.
        return from_arrow_schema(parquet_safety.read_schema(files[0])) if files else None

    def check_id_types(self, spark: SparkSession, frame: DataFrame | TaskFiles, run_date) -> None:
        """Refuse a date whose columns change type from what the table holds."""
        existing = self.schema(spark)
        if existing is None:
            return
        old = {field.name: field.dataType for field in existing.fields}
        for field in frame.schema.fields:
            if field.name in old and old[field.name] != field.dataType:
                raise BadInputError(
                    f"{field.name} of run_date {run_date} is {field.dataType.simpleString()} but "
                    f"the table {self.name or self.root} holds {old[field.name].simpleString()}: "
                    "readers of the table would break on the mix. Keep input.user_col/item_col "
                    "of one type (ids read from text are numbers when every id is), or publish "
                    "to a new table (paths.root or score.table)"
                )

    def dates(self, spark: SparkSession) -> list[str]:
        """Published run dates, oldest first (Delta: one row per date, from the table)."""
        if not self.is_delta:
            from recspark.core.storage import published_dates

            return published_dates(self.root)
        if not self.exists():
            return []
        frame = spark.read.format("delta").load(str(self.root)).select(RUN_DATE).distinct()
        return sorted(str(row[RUN_DATE]) for row in frame.collect())

    def identity(self, run_date) -> str | None:
        """Changes whenever the date is published again: the ``_SUCCESS`` token of its folder,
        or the Delta table's latest version (its commits are this table's only writes)."""
        if not self.is_delta:
            return publish_token(self.partition(run_date))
        versions = self._versions()
        return f"delta-version-{max(versions)}" if versions else None

    def has_date(self, spark: SparkSession, run_date) -> bool:
        """Whether ``run_date`` is published (Parquet: its marked folder)."""
        if not self.is_delta:
            from recspark.core.storage import SUCCESS

            return (self.partition(run_date) / SUCCESS).exists()
        return str(run_date) in self.dates(spark)

    # -- retention -----------------------------------------------------------------------------
    def drop_dates(self, spark: SparkSession, dates: list[str]) -> None:
        """Delta: delete the dates' rows in one commit, then ``VACUUM`` (files older than the
        table's retention, 7 days by default, that no version still needs)."""
        if not self.is_delta or not dates or not self.exists():
            return
        from delta.tables import DeltaTable

        table = DeltaTable.forPath(spark, str(self.root))
        listed = ", ".join(f"DATE'{date}'" for date in dates)
        table.delete(f"{RUN_DATE} IN ({listed})")
        # VACUUM lists the table with one task per spark.sql.sources.parallelPartitionDiscovery
        # .parallelism (10,000 by default): 40 s for a table of a few dates on 2 cores, against
        # 5 s with the cluster's own parallelism.
        key = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
        before = spark.conf.get(key, None)
        spark.conf.set(key, str(spark.sparkContext.defaultParallelism))
        try:
            table.vacuum()
        finally:
            if before is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, before)


def recommendations_table(score: ScoreConfig, layout: Layout) -> OutputTable:
    """``recommendations/`` as ``score.table_format`` and ``score.table`` say."""
    return OutputTable(layout.recommendations, score.table_format, score.table)


def _table_location(spark: SparkSession, name: str) -> str | None:
    """Where the catalog says table ``name`` lies (one row of ``DESCRIBE TABLE EXTENDED``)."""
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {name}").where(F.col("col_name") == "Location")
    found = rows.select("data_type").first()
    return found[0] if found else None
