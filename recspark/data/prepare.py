"""The steps of the prepare job: which input to read and how (and the checks of it that run
before Spark starts), the id types it must keep, the gate on bad rows and where a rejected run's
quarantine goes, the split flags, the feed Petastorm reads, the previous run's id maps that keep
indices stable, and the manifest. ``recspark.commands.prepare`` calls them in order."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.config import Config
from recspark.core.constants import (
    ITEM_ID,
    ITEM_IDX,
    RATING,
    REASON,
    TIMESTAMP,
    USER_ID,
    USER_IDX,
    WEIGHT,
)
from recspark.core.errors import BadInputError, MissingInputError
from recspark.core.location import Location
from recspark.core.storage import Layout, latest_date, staged
from recspark.data import sources
from recspark.data.indexing import check_index
from recspark.data.prepared import PreparedInput, PreparedRun, RatingStats, TableFacts
from recspark.data.splitting import (
    COLD_START_FLAG,
    VALIDATION_FLAG,
    flag_cold_start,
    flag_validation,
)

log = logging.getLogger(__name__)

FEED_COLUMNS = [USER_IDX, ITEM_IDX, RATING, TIMESTAMP]


SOURCE = "source"  # in the quarantine: "input" or "validation" (input.validation_path)


TABLES = ("train", "validation", "cold_start")


INDEXES = ("user_index", "item_index")


INTEGER_ID_FORMATS = ("movielens-100k", "movielens-1m")


QUARANTINE = "quarantine"
# prepared/_rejected/D/quarantine: the bad rows of a run stopped by input.max_bad_fraction. The
# leading underscore keeps it out of the run dates (and out of what Spark reads under prepared/).
REJECTED = "_rejected"

# A URI with a scheme other than file: (s3a://, hdfs://): the local checks do not apply to it.
_REMOTE = re.compile(r"^(?!file:)[A-Za-z][A-Za-z0-9+.-]+:")

NO_VALIDATION_PATH = (
    "split.method is 'given' but input.validation_path is not set: point it at the validation "
    "table (e.g. ml-100k/u1.test with u1.base as input.path)"
)
NO_TIMESTAMP = (
    "split.method is 'chronological' but the input has no timestamp column: set "
    "input.columns.timestamp or choose another split.method"
)


def input_path(config: Config) -> str:
    """The ratings input: ``input.path``, or the generated table for ``format: synthetic``."""
    if config.input.path:
        return config.input.path
    if config.input.format == "synthetic":
        return str(Layout(config.paths.root).ratings)
    raise BadInputError("input.path is not set: point it at a ratings file or folder")


def header_setting(header: str | bool) -> bool | None:
    """``input.header`` as :func:`sources.read_raw` takes it: None for ``auto``."""
    return None if header == "auto" else bool(header)


def wanted_columns(config: Config) -> dict[str, str]:
    """Standard name -> configured input name (``input.columns``; no rating for implicit input)."""
    columns = config.input.columns
    return sources.wanted_columns(
        columns.user,
        columns.item,
        None if config.input.implicit else columns.rating,
        columns.timestamp,
        columns.weight,
    )


def input_format(path: str, configured: str) -> str:
    """``input.format``, with ``auto`` resolved from the files of ``path``."""
    return sources.detect_format(path) if configured == "auto" else configured


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URI of another filesystem than the local one (``s3a://``...)."""
    return bool(_REMOTE.match(path))


def precheck_input(
    path: str,
    input_format: str,
    wanted: dict[str, str],
    header: bool | None = None,
    validation_path: str | None = None,
    split_method: str = "random",
) -> None:
    """The checks of the input that need no Spark, so that a bad input fails in a second.

    The input (and ``validation_path`` for ``split.method: given``) exists and holds data, its
    format is known and matches the files, a text file's first line has the format's delimiter,
    the header or Parquet schema has the configured columns, both inputs have the same columns,
    and a chronological split has a timestamp. Run before the Spark session starts (the CLI
    calls the command's ``precheck``); :func:`sources.read_raw` makes the same checks again.
    A URI of another filesystem (``s3a://``...) skips the file checks.

    Parameters
    ----------
    path, validation_path
        ``input.path`` and ``input.validation_path``.
    input_format
        ``input.format`` (``auto`` allowed).
    wanted
        Standard name -> configured input name (:func:`wanted_columns`).
    header
        ``input.header``: None for ``auto``.
    split_method
        ``split.method``.

    Raises
    ------
    MissingInputError
        When an input does not exist.
    BadInputError
        For any of the problems above, saying which key to set.
    """
    given = split_method == "given"
    if given and not validation_path:
        raise BadInputError(NO_VALIDATION_PATH)
    if input_format == "synthetic" and not is_remote(path) and not Location(path).exists():
        raise MissingInputError(
            f"input {path} does not exist: run `recspark generate` with the same paths.root "
            "first, or set input.path"
        )
    found = {}
    for where in [path, validation_path] if given else [path]:
        if not is_remote(where):
            found[where] = sources.inspect_input(where, input_format, wanted, header)[1]
    if path in found and validation_path in found and set(found[path]) != set(
        found[validation_path]
    ):
        raise BadInputError(
            f"input.path has columns {found[path]} but input.validation_path has "
            f"{found[validation_path]}: give both the same columns"
        )
    if split_method == "chronological" and path in found and TIMESTAMP not in found[path]:
        raise BadInputError(NO_TIMESTAMP)


def read_input(spark: SparkSession, config: Config, path: str, fmt: str) -> DataFrame:
    """Read one input table with the configured columns into :func:`sources.read_raw` form."""
    columns = wanted_columns(config)
    return sources.read_raw(
        spark,
        path,
        fmt,
        user_col=columns[USER_ID],
        item_col=columns[ITEM_ID],
        rating_col=columns.get(RATING),
        timestamp_col=columns.get(TIMESTAMP),
        weight_col=columns.get(WEIGHT),
        header=header_setting(config.input.header),
    )


def read_inputs(
    spark: SparkSession, config: Config, path: str, fmt: str
) -> tuple[DataFrame, tuple[str, ...]]:
    """The input with a ``source`` column, and the validation table under it for a given split.

    Returns
    -------
    tuple
        The :func:`sources.read_raw` rows of both with ``source`` (``input`` or ``validation``),
        and the delimiters of their text formats (for :func:`sources.cast_ids`).

    Raises
    ------
    BadInputError
        When the two have different columns, or a chronological split has no timestamp.
    """
    raw = read_input(spark, config, path, fmt).withColumn(SOURCE, F.lit("input"))
    formats = [fmt]
    if config.split.method == "given":
        validation_path = config.input.validation_path
        if not validation_path:
            raise BadInputError(NO_VALIDATION_PATH)
        validation_fmt = input_format(validation_path, config.input.format)
        formats.append(validation_fmt)
        validation_raw = read_input(spark, config, validation_path, validation_fmt)
        if set(validation_raw.columns) != set(raw.columns) - {SOURCE}:
            raise BadInputError(
                f"input.path has columns {raw.columns[:-1]} but input.validation_path has "
                f"{validation_raw.columns}: give both the same columns"
            )
        raw = raw.unionByName(validation_raw.withColumn(SOURCE, F.lit("validation")))
    if config.split.method == "chronological" and TIMESTAMP not in raw.columns:
        raise BadInputError(NO_TIMESTAMP)
    delimiters = tuple(sorted({sources.DELIMITERS[f] for f in formats if f in sources.DELIMITERS}))
    return raw, delimiters


def id_types(
    config: Config, fmt: str, checked: DataFrame, previous: dict[str, DataFrame]
) -> dict[str, T.DataType]:
    """Raw id types: ``input.id_type`` when set, else the previous maps', else the format's.

    MovieLens ids are integers; Parquet ids keep their type, but float ids become integers;
    CSV/TSV ids are integers (``12.0`` included) when most are (:func:`sources.infer_id_types`),
    else strings.
    """
    if config.input.id_type == "integer":
        return {USER_ID: T.LongType(), ITEM_ID: T.LongType()}
    if config.input.id_type == "string":
        return {USER_ID: T.StringType(), ITEM_ID: T.StringType()}
    if previous:
        return {column: previous[column].schema[column].dataType for column in (USER_ID, ITEM_ID)}
    if fmt in INTEGER_ID_FORMATS:
        return {USER_ID: T.LongType(), ITEM_ID: T.LongType()}
    if fmt in ("parquet", "synthetic"):
        # Typed input: ids keep the input's type, but float ids are integers written as floats
        # (pandas writes an integer column with a gap as float64): longs, so that 2.5, -1.0, NaN
        # and inf are quarantined (sources.cast_ids) instead of becoming users.
        return {
            column: T.LongType() if isinstance(kind, T.FractionalType) else kind
            for column in (USER_ID, ITEM_ID)
            for kind in [checked.schema[column].dataType]
        }
    return sources.infer_id_types(checked)


def mark_repeats(checked: DataFrame, implicit: bool, has_timestamp: bool) -> DataFrame:
    """Quarantine repeated rows: re-delivered events (implicit) or older ratings of a pair."""
    if implicit:
        return sources.mark_repeated_events(checked, has_timestamp)
    return sources.mark_duplicates(checked)


@dataclass(frozen=True)
class RowCounts:
    """How many input rows are good, and how many were quarantined for each reason."""

    good: int
    by_reason: dict[str, int]  # every reason of sources.REASONS, zeros included

    @property
    def bad(self) -> int:
        return sum(self.by_reason.values())

    @property
    def total(self) -> int:
        return self.good + self.bad


def count_rows(checked: DataFrame) -> RowCounts:
    """Count the rows of ``checked`` by ``reason`` (one small aggregate).

    Raises
    ------
    BadInputError
        When a row carries a reason that is not one of :data:`sources.REASONS`.
    """
    counted = {row[REASON]: row["count"] for row in checked.groupBy(REASON).count().collect()}
    good = counted.pop(None, 0)
    unknown = set(counted) - set(sources.REASONS)
    if unknown:
        raise BadInputError(f"rows quarantined for unknown reasons {sorted(unknown)}")
    return RowCounts(good, {reason: counted.get(reason, 0) for reason in sources.REASONS})


def rejected_folder(layout: Layout, run_date) -> Location:
    """``prepared/_rejected/D``: where a run stopped by its bad rows leaves its quarantine."""
    return layout.root / "prepared" / REJECTED / str(run_date)


def write_quarantine(bad: DataFrame, folder: Location, rows: int, rows_per_file: int) -> None:
    """The quarantined rows, with their raw line and parsed fields beside the reason."""
    files = max(1, math.ceil(rows / rows_per_file))
    bad.coalesce(files).write.parquet(str(folder / QUARANTINE))


def _bad_rows_message(counts: RowCounts, max_bad_fraction: float, where: Location) -> str:
    found = {reason: n for reason, n in counts.by_reason.items() if n}
    hints = []
    if found.get(sources.NON_NUMERIC_USER) or found.get(sources.NON_NUMERIC_ITEM):
        hints.append("ids were read as integers because most are: set input.id_type: string "
                     "if they are text")
    if found.get(sources.NON_UTF8_USER) or found.get(sources.NON_UTF8_ITEM):
        hints.append("ids that are not UTF-8: convert the input to UTF-8")
    return (
        f"{counts.bad} of {counts.total} rows are bad ({counts.bad / counts.total:.2%}, above "
        f"input.max_bad_fraction={max_bad_fraction}): {found}. "
        + "".join(f"({hint}) " for hint in hints)
        + f"Nothing was published for this run date; the bad rows are in {where / QUARANTINE} "
        "with their reasons. Fix the input or raise input.max_bad_fraction"
    )


def gate_bad_rows(
    counts: RowCounts,
    bad: DataFrame,
    max_bad_fraction: float,
    path: str,
    layout: Layout,
    run_date,
    rows_per_file: int,
) -> None:
    """Stop a run with no rows, too many bad rows, or no good row.

    Above ``max_bad_fraction`` the quarantine is still published, whole, to
    :func:`rejected_folder` (replacing an earlier rejected attempt of the date) and the error
    says where; nothing else of the date is written, so the date's earlier prepared run stays.

    Raises
    ------
    BadInputError
        With the counts by reason.
    """
    if counts.total == 0:
        raise BadInputError(f"input {path} has no rows")
    if counts.bad / counts.total > max_bad_fraction:
        where = rejected_folder(layout, run_date)
        with staged(layout, where, f"rejected-{run_date}") as folder:
            write_quarantine(bad, folder, counts.bad, rows_per_file)
        raise BadInputError(_bad_rows_message(counts, max_bad_fraction, where))
    if counts.good == 0:
        raise BadInputError(f"input {path} has no good rows: {counts.by_reason}")


def flag_split(
    indexed: DataFrame,
    given: bool,
    method: str,
    validation_fraction: float,
    seed: int,
    columns: list[str],
) -> DataFrame:
    """``columns`` of the indexed good rows with the validation and cold-start flags.

    A given split keeps each row where it came from (``source``); the others draw from a hash
    of the raw ids, so a rating's side of the split does not depend on the id maps.
    """
    if given:
        flagged = indexed.withColumn(VALIDATION_FLAG, F.col(SOURCE) == "validation")
    else:
        flagged = flag_validation(
            indexed, method, validation_fraction, seed, user_col=USER_ID, item_col=ITEM_ID
        )
    return flag_cold_start(flagged.select(*columns, VALIDATION_FLAG))


def split_tables(flagged: DataFrame) -> dict[str, DataFrame]:
    """train, validation and cold_start as filters of :func:`flag_split`'s rows."""
    validation_rows = F.col(VALIDATION_FLAG) & ~F.col(COLD_START_FLAG)
    return {
        "train": flagged.where(~F.col(VALIDATION_FLAG)),
        "validation": flagged.where(validation_rows),
        "cold_start": flagged.where(F.col(COLD_START_FLAG)),
    }


def feed_files(good_rows: int, rows_per_file: int) -> dict[str, int]:
    """How many Parquet files each split table is written as."""
    files = max(4, math.ceil(good_rows / rows_per_file))
    return {"train": files, "validation": max(2, files // 4), "cold_start": 1}


def check_split(rows: dict[str, int]) -> None:
    """Fail when the split left train or validation empty."""
    if rows["train"] == 0 or rows["validation"] == 0:
        raise BadInputError(
            f"the split left train with {rows['train']} and validation with "
            f"{rows['validation']} rows (and {rows['cold_start']} cold-start rows): give "
            "more data or change split.*"
        )


def prepared_counts(
    rows: dict[str, int], counts: RowCounts, previous_sizes: dict[str, int], implicit: bool
) -> dict[str, Any]:
    """The summary's (and the manifest's) ``counts`` from the written tables' row counts."""
    users, items = rows["user_index"], rows["item_index"]
    summary: dict[str, Any] = {
        "users": users,
        "items": items,
        "new_users": users - previous_sizes.get(USER_ID, 0),
        "new_items": items - previous_sizes.get(ITEM_ID, 0),
        "input_rows": counts.total,
        "train": rows["train"],
        "validation": rows["validation"],
        "cold_start": rows["cold_start"],
        "quarantined": counts.bad,
        "quarantined_by_reason": counts.by_reason,
    }
    if implicit:
        summary["aggregated_events"] = counts.good - sum(rows[name] for name in TABLES)
    return summary


def rating_range(
    implicit: bool, train_stats: dict[str, float], rating_min: float, rating_max: float
) -> list[float]:
    """The scale predictions are bounded to: the input's range, or 1..max count for implicit."""
    if implicit:
        return [1.0, float(train_stats["max"])]
    return [rating_min, rating_max]


def build_manifest(
    config: Config,
    path: str,
    fmt: str,
    has_timestamp: bool,
    has_weight: bool,
    types: dict[str, T.DataType],
    previous_date: str | None,
    counts: dict[str, Any],
    rows: dict[str, int],
    train_stats: dict[str, float],
    feed_columns: list[str],
) -> PreparedRun:
    """The prepared run's ``manifest.json``: what was read, how, and what was written."""
    given = config.split.method == "given"
    validation_path = config.input.validation_path if given else None
    return PreparedRun(
        run_date=str(config.run_date),
        input=PreparedInput(
            path=path,
            format=fmt,
            validation_path=validation_path,
            fingerprint=sources.fingerprint([path, validation_path]),
            implicit=config.input.implicit,
            columns=config.input.columns.model_dump(),
            has_timestamp=has_timestamp,
            has_weight=has_weight,
            id_types={column: t.simpleString() for column, t in types.items()},
            max_bad_fraction=config.input.max_bad_fraction,
        ),
        split=config.split.model_dump(),
        previous_index_date=previous_date,
        users=rows["user_index"],
        items=rows["item_index"],
        counts=counts,
        rating=RatingStats(**train_stats),
        rating_range=rating_range(
            config.input.implicit, train_stats, config.input.rating_min, config.input.rating_max
        ),
        columns=feed_columns,
        tables={name: TableFacts(rows=rows[name]) for name in TABLES},
        row_group_mb=config.prepare.row_group_mb,
    )


def write_feed(
    frame: DataFrame, path: str, files: int, row_group_mb: int, seed: int, columns: list[str]
) -> None:
    """Parquet that petastorm's ``make_batch_reader`` reads: flat numeric columns, sized row groups.

    Rows are laid out in an order fixed by a hash of (user, item, seed): the same data gives the
    same files, and a row group holds a mix of users and items rather than one user's block, so
    shuffling row groups plus a small buffer is enough for SGD.
    """
    order = F.xxhash64(F.col(USER_IDX), F.col(ITEM_IDX), F.lit(seed))
    (
        frame.select(*columns)
        .withColumn("_order", order)
        .repartition(files, "_order")
        .sortWithinPartitions("_order", USER_IDX, ITEM_IDX)
        .drop("_order")
        .write.option("parquet.block.size", row_group_mb << 20)
        .parquet(path)
    )


def rating_stats(spark: SparkSession, path: str) -> dict[str, float]:
    """Rating min/max/mean of a written table (one small aggregate)."""
    row = (
        spark.read.parquet(path)
        .agg(F.min(RATING).alias("min"), F.max(RATING).alias("max"), F.mean(RATING).alias("mean"))
        .first()
    )
    return {key: row[key] for key in ("min", "max", "mean")}


def previous_maps(
    spark: SparkSession, layout: Layout, run_date
) -> tuple[str | None, dict[str, DataFrame], dict[str, int]]:
    """The latest published id maps before ``run_date``, checked, and their sizes."""
    date = latest_date(layout.root / "prepared", before=run_date)
    if date is None:
        return None, {}, {}
    base = layout.prepared(date)
    maps, sizes = {}, {}
    names = ((USER_ID, USER_IDX, "user_index"), (ITEM_ID, ITEM_IDX, "item_index"))
    for id_col, idx_col, name in names:
        if not (base / name).exists():
            raise BadInputError(
                f"the prepared run {date} under {layout.root} has no {name}: remove that run or "
                "start a new paths.root"
            )
        frame = spark.read.parquet(str(base / name))
        sizes[id_col] = check_index(frame, id_col, idx_col, f"{name} of {date}")
        maps[id_col] = frame
    log.info("extending the id maps of %s", date)
    return date, maps, sizes
