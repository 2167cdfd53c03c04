"""Which tables ``prepare`` reads and how: the input path, its format and columns, the checks of
it that run before Spark starts, the reading of the input (and of the validation table of a
given split) and the id types the run must keep.

Everything here receives the ``input`` section (:class:`recspark.core.config.InputConfig`) and the
plain values it needs, not the whole config; :mod:`recspark.commands.prepare` picks them out.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.config import InputConfig
from recspark.core.constants import ITEM_ID, RATING, TIMESTAMP, USER_ID, WEIGHT
from recspark.core.errors import BadInputError, MissingInputError
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.data import columns as column_names
from recspark.data.checks import infer_id_types
from recspark.data.reading import read_raw
from recspark.data.sniffing import DELIMITERS, PARQUET_FORMATS, detect_format, inspect_input

SOURCE = "source"  # in the quarantine: "input", "validation" or "test" (input.*_path)
# split.method: given: the extra tables, by the ``source`` they get.
GIVEN_TABLES = (("validation", "validation_path"), ("test", "test_path"))
INTEGER_ID_FORMATS = ("movielens-100k", "movielens-1m")

# A URI with a scheme other than file: (s3a://, hdfs://): the local checks do not apply to it.
_REMOTE = re.compile(r"^(?!file:)[A-Za-z][A-Za-z0-9+.-]+:")

NO_VALIDATION_PATH = (
    "split.method is 'given' but input.validation_path is not set, nor input.test_path: point "
    "input.test_path at the test table (e.g. ml-100k/u1.test with u1.base as input.path; "
    "validation is then drawn from the input) or input.validation_path at the validation table"
)
NO_TIMESTAMP = (
    "split.method is 'chronological' but the input has no timestamp column: set "
    "input.columns.timestamp or choose another split.method"
)


class RawInputs(NamedTuple):
    """:func:`read_inputs`' rows, and the delimiters of their text formats."""

    raw: DataFrame  # read_raw rows of the input (and validation table) with ``source``
    delimiters: tuple[str, ...]  # for recspark.data.checks.cast_ids


def ratings_path(settings: InputConfig, root: str) -> str:
    """The ratings input: ``input.path``, or the generated table for ``format: synthetic``.

    Parameters
    ----------
    settings
        The ``input`` section.
    root
        ``paths.root``, under which ``generate`` writes the synthetic table.
    """
    if settings.path:
        return settings.path
    if settings.format == "synthetic":
        return str(Layout(root).ratings)
    raise BadInputError("input.path is not set: point it at a ratings file or folder")


def header_setting(header: str | bool) -> bool | None:
    """``input.header`` as :func:`recspark.data.reading.read_raw` takes it: None for ``auto``."""
    return None if header == "auto" else bool(header)


def wanted_columns(settings: InputConfig) -> dict[str, str]:
    """Standard name -> configured input name (``input.columns``; no rating for implicit input)."""
    columns = settings.columns
    return column_names.wanted_columns(
        columns.user,
        columns.item,
        None if settings.implicit else columns.rating,
        columns.timestamp,
        columns.weight,
    )


def input_format(path: str, configured: str) -> str:
    """``input.format``, with ``auto`` resolved from the files of ``path``."""
    return detect_format(path) if configured == "auto" else configured


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URI of another filesystem than the local one (``s3a://``...)."""
    return bool(_REMOTE.match(path))


def precheck_input(
    path: str,
    input_format: str,
    wanted: dict[str, str],
    *,
    header: bool | None = None,
    validation_path: str | None = None,
    split_method: str = "random",
    test_path: str | None = None,
) -> None:
    """The checks of the input that need no Spark, so that a bad input fails in a second.

    The input (and ``validation_path`` and ``test_path`` for ``split.method: given``) exists and
    holds data, its format is known and matches the files, a text file's first line has the
    format's delimiter, the header or Parquet schema has the configured columns, all inputs have
    the same columns,
    and a chronological split has a timestamp. Run before the Spark session starts (the CLI
    calls the command's ``precheck``); :func:`recspark.data.reading.read_raw` makes the same
    checks again.
    A URI of another filesystem (``s3a://``...) skips the file checks.

    Parameters
    ----------
    path, validation_path, test_path
        ``input.path``, ``input.validation_path`` and ``input.test_path``.
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
    if given and not (validation_path or test_path):
        raise BadInputError(NO_VALIDATION_PATH)
    if given and validation_path and validation_path == test_path:
        raise BadInputError(
            f"input.validation_path and input.test_path are both {test_path}: a table is one "
            "split or the other (unset input.validation_path to draw validation from input.path)"
        )
    if input_format == "synthetic" and not is_remote(path) and not Location(path).exists():
        raise MissingInputError(
            f"input {path} does not exist: run `recspark generate` with the same paths.root "
            "first, or set input.path"
        )
    found: dict[str, list[str]] = {}
    extra = {"validation_path": validation_path, "test_path": test_path} if given else {}
    for where in [path, *extra.values()]:
        if where is not None and not is_remote(where):
            found[where] = inspect_input(where, input_format, wanted, header)[1]
    for key, where in extra.items():
        if path in found and where in found and set(found[path]) != set(found[where]):
            raise BadInputError(
                f"input.path has columns {found[path]} but input.{key} has {found[where]}: give "
                "both the same columns"
            )
    if split_method == "chronological" and path in found and TIMESTAMP not in found[path]:
        raise BadInputError(NO_TIMESTAMP)


def read_input(spark: SparkSession, settings: InputConfig, path: str, fmt: str) -> DataFrame:
    """Read one input table with the configured columns into ``read_raw`` form."""
    columns = wanted_columns(settings)
    return read_raw(
        spark,
        path,
        fmt,
        user_col=columns[USER_ID],
        item_col=columns[ITEM_ID],
        rating_col=columns.get(RATING),
        timestamp_col=columns.get(TIMESTAMP),
        weight_col=columns.get(WEIGHT),
        header=header_setting(settings.header),
    )


def read_inputs(
    spark: SparkSession, settings: InputConfig, split_method: str, path: str, fmt: str
) -> RawInputs:
    """The input with a ``source`` column, and the validation and test tables under it for a given
    split (those of ``input.validation_path`` and ``input.test_path`` that are set).

    Returns
    -------
    RawInputs
        The ``read_raw`` rows of all with ``source`` (``input``, ``validation`` or ``test``), and
        the delimiters of their text formats (for :func:`recspark.data.checks.cast_ids`).

    Raises
    ------
    BadInputError
        When the two have different columns, or a chronological split has no timestamp.
    """
    raw = read_input(spark, settings, path, fmt).withColumn(SOURCE, F.lit("input"))
    formats = [fmt]
    if split_method == "given":
        if not (settings.validation_path or settings.test_path):
            raise BadInputError(NO_VALIDATION_PATH)
        for source, key in GIVEN_TABLES:
            where = getattr(settings, key)
            if not where:
                continue
            where_fmt = input_format(where, settings.format)
            formats.append(where_fmt)
            table = read_input(spark, settings, where, where_fmt)
            if set(table.columns) != set(raw.columns) - {SOURCE}:
                raise BadInputError(
                    f"input.path has columns {raw.columns[:-1]} but input.{key} has "
                    f"{table.columns}: give both the same columns"
                )
            raw = raw.unionByName(table.withColumn(SOURCE, F.lit(source)))
    if split_method == "chronological" and TIMESTAMP not in raw.columns:
        raise BadInputError(NO_TIMESTAMP)
    delimiters = tuple(sorted({DELIMITERS[f] for f in formats if f in DELIMITERS}))
    return RawInputs(raw, delimiters)


def id_types(
    id_type: str, fmt: str, checked: DataFrame, previous: dict[str, DataFrame]
) -> dict[str, T.DataType]:
    """Raw id types: ``input.id_type`` when set, else the previous maps', else the format's.

    MovieLens ids are integers; Parquet ids keep their type, but float ids become integers;
    CSV/TSV ids are integers (``12.0`` included) when most are
    (:func:`recspark.data.checks.infer_id_types`), else strings.
    """
    if id_type == "integer":
        return {USER_ID: T.LongType(), ITEM_ID: T.LongType()}
    if id_type == "string":
        return {USER_ID: T.StringType(), ITEM_ID: T.StringType()}
    if previous:
        return {column: previous[column].schema[column].dataType for column in (USER_ID, ITEM_ID)}
    if fmt in INTEGER_ID_FORMATS:
        return {USER_ID: T.LongType(), ITEM_ID: T.LongType()}
    if fmt in PARQUET_FORMATS:
        # Typed input: ids keep the input's type, but float ids are integers written as floats
        # (pandas writes an integer column with a gap as float64): longs, so that 2.5, -1.0, NaN
        # and inf are quarantined (checks.cast_ids) instead of becoming users.
        return {
            column: T.LongType() if isinstance(kind, T.FractionalType) else kind
            for column in (USER_ID, ITEM_ID)
            for kind in [checked.schema[column].dataType]
        }
    return infer_id_types(checked)
