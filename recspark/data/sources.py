"""Reading ratings and interaction tables, and checking every row of them.

:func:`read_raw` turns any supported input (MovieLens ``u.data`` and ``ratings.dat``, CSV or TSV
with or without a header, Parquet, the synthetic table) into one DataFrame whose columns carry the
standard names (``user_id``, ``item_id``, ``rating``, ``timestamp``, ``weight``; only those the
input has) with the values as read, plus ``raw_line`` and ``reason``. :func:`check_rows` checks
each row and casts the good ones to the standard types; ``reason`` stays null for a good row and
otherwise says why the row is unusable. :func:`mark_duplicates` (explicit ratings) and
:func:`mark_repeated_events` (implicit interactions) then deal with rows that repeat a (user, item)
pair, and :func:`split_valid` separates good rows from the quarantine.

Ids are checked before their type is decided: an id that is not valid UTF-8, longer than
``max_id_length`` or blank (any whitespace) is quarantined with its own reason and has no say in
whether the column holds integers. The type is then decided from the good rows by
:func:`infer_id_types` (integers when most ids are), so one odd id cannot turn a table of integer
ids into text; :func:`cast_ids` quarantines the ids that do not fit the decided type.

Text formats are read as lines and split here rather than by Spark's CSV reader, so that a short or
malformed line is kept and quarantined with its reason instead of being dropped or nulled silently.
Every cast is a ``try_cast``: Spark 4 runs with ANSI SQL on, where a plain cast of ``"abc"`` to a
number fails the whole job instead of flagging one row.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from recspark.core import parquet_safety
from recspark.core.choices import INPUT_FORMATS
from recspark.core.constants import ITEM_ID, RATING, REASON, TIMESTAMP, USER_ID, WEIGHT
from recspark.core.errors import BadInputError, MissingInputError
from recspark.core.location import FileEntry, Location, shown
from recspark.data.compressed import open_text

FORMATS = INPUT_FORMATS
DELIMITERS = {"movielens-100k": "\t", "tsv": "\t", "movielens-1m": "::", "csv": ","}
# MovieLens files have no header and exactly these fields: user, item, rating, timestamp.
FIXED_FIELD_COUNT = {"movielens-100k": 4, "movielens-1m": 4}
HEADER_FORMATS = ("csv", "tsv")
RAW_LINE = "raw_line"
STANDARD_COLUMNS = (USER_ID, ITEM_ID, RATING, TIMESTAMP, WEIGHT)
# When a column is configured under its default name and the header lacks it, these names are
# tried in turn: MovieLens's own ratings.csv says userId/movieId.
COLUMN_ALIASES = {
    USER_ID: ("userId", "user", "userID"),
    ITEM_ID: ("movieId", "itemId", "item", "movie_id", "itemID"),
}
# The form of an integer id, whatever its size. A zero fraction is allowed: a spreadsheet or
# pandas writes 12 as ``12.0`` (a column of integers with a missing value is a float column), and
# ``12.0`` on one day and ``12`` on the next must be the same user, not two.
_INTEGER = r"^[+-]?[0-9]+(\.0*)?$"
_ZERO_FRACTION = r"\.0*$"
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)",
                     re.IGNORECASE)
# Spark's trim strips spaces only: a tab or a no-break space around an id would survive it.
_WHITESPACE = r"(?U)^\s+|\s+$"
_BOM = "\ufeff"
# What a text line's invalid UTF-8 bytes read as once Spark decodes the line.
_REPLACEMENT = "\ufffd"
MAX_ID_LENGTH = 256  # input.max_id_length

# Reasons a row is quarantined, in the order they are checked; a row gets the first that applies.
WRONG_FIELD_COUNT = "wrong_field_count"
MISSING_USER = "missing_user"  # null, or empty after trimming any whitespace
MISSING_ITEM = "missing_item"
NON_UTF8_USER = "non_utf8_user"  # the id's bytes are not valid UTF-8
NON_UTF8_ITEM = "non_utf8_item"
USER_TOO_LONG = "user_too_long"  # longer than max_id_length characters
ITEM_TOO_LONG = "item_too_long"
# A quoted id holding the delimiter ("106,106") in a column of integer ids: fields run together.
QUOTED_DELIMITER_USER = "quoted_delimiter_user"
QUOTED_DELIMITER_ITEM = "quoted_delimiter_item"
NON_NUMERIC_USER = "non_numeric_user"  # not an integer in a column of integer ids
NON_NUMERIC_ITEM = "non_numeric_item"
USER_OUT_OF_RANGE = "user_out_of_range"  # an integer id below 0 or above a long's largest
ITEM_OUT_OF_RANGE = "item_out_of_range"
MISSING_RATING = "missing_rating"
NON_NUMERIC_RATING = "non_numeric_rating"
RATING_OUT_OF_RANGE = "rating_out_of_range"
MISSING_TIMESTAMP = "missing_timestamp"
INVALID_TIMESTAMP = "invalid_timestamp"
MISSING_WEIGHT = "missing_weight"
NON_NUMERIC_WEIGHT = "non_numeric_weight"
WEIGHT_OUT_OF_RANGE = "weight_out_of_range"
DUPLICATE_ROW = "duplicate_row"
REPEATED_PAIR = "repeated_pair"
REASONS = (
    WRONG_FIELD_COUNT,
    MISSING_USER,
    MISSING_ITEM,
    NON_UTF8_USER,
    NON_UTF8_ITEM,
    USER_TOO_LONG,
    ITEM_TOO_LONG,
    QUOTED_DELIMITER_USER,
    QUOTED_DELIMITER_ITEM,
    NON_NUMERIC_USER,
    NON_NUMERIC_ITEM,
    USER_OUT_OF_RANGE,
    ITEM_OUT_OF_RANGE,
    MISSING_RATING,
    NON_NUMERIC_RATING,
    RATING_OUT_OF_RANGE,
    MISSING_TIMESTAMP,
    INVALID_TIMESTAMP,
    MISSING_WEIGHT,
    NON_NUMERIC_WEIGHT,
    WEIGHT_OUT_OF_RANGE,
    DUPLICATE_ROW,
    REPEATED_PAIR,
)


def data_entries(path: Location) -> list[FileEntry]:
    """The non-empty data files of a file or folder, skipping Spark's ``_*`` and ``.*`` files."""
    entries = path.listing()
    if len(entries) == 1 and entries[0].location == path:
        return entries
    return [
        entry
        for entry in entries
        if entry.size and not any(part.startswith(("_", ".")) for part in entry.relative.split("/"))
    ]


def data_files(path: Location) -> list[Location]:
    """:func:`data_entries`' locations."""
    return [entry.location for entry in data_entries(path)]


def _existing(path: str) -> Location:
    target = Location(path)
    if not target.exists():
        raise MissingInputError(
            f"input {path} does not exist: set input.path to a ratings file or folder"
        )
    return target


def _is_parquet(file: Location) -> bool:
    with file.open("rb") as handle:
        return handle.read(4) == b"PAR1"


def head_lines(path: str, count: int) -> list[str]:
    """The first ``count`` non-blank lines of the first data file, without a byte-order mark.

    A ``.gz`` or ``.bz2`` file is decompressed, as Spark decompresses it; another compressed
    file is refused (:func:`recspark.data.compressed.open_text`).
    """
    files = data_files(_existing(path))
    lines: list[str] = []
    if not files:
        return lines
    with open_text(files[0]) as handle:
        for line in handle:
            line = line.lstrip(_BOM).rstrip("\r\n")
            if line.strip():
                lines.append(line)
                if len(lines) == count:
                    break
    return lines


def first_line(path: str) -> str | None:
    """The first non-blank line of the first data file, without a byte-order mark."""
    lines = head_lines(path, 1)
    return lines[0] if lines else None


def detect_format(path: str) -> str:
    """Guess the format of ``path`` from its files (``input.format: auto``).

    Parquet is recognised by its magic bytes; otherwise the first line decides: ``::`` is
    MovieLens 1M, a tab is MovieLens 100K for ``u*.data|base|test`` files and TSV for others, a
    comma is CSV.

    Raises
    ------
    MissingInputError
        When ``path`` does not exist.
    BadInputError
        When it holds no data or no known delimiter.
    """
    target = _existing(path)
    files = data_files(target)
    if not files:
        raise BadInputError(f"input {path} holds no data files")
    if any(f.name.endswith(".parquet") for f in files) or _is_parquet(files[0]):
        return "parquet"
    line = first_line(path)
    if line is None:
        raise BadInputError(f"input {path} is empty")
    if "::" in line:
        return "movielens-1m"
    if "\t" in line:
        first = files[0]
        movielens = first.name.startswith("u") and first.name.endswith((".data", ".base", ".test"))
        return "movielens-100k" if movielens else "tsv"
    if "," in line:
        return "csv"
    raise BadInputError(
        f"cannot tell the format of {files[0]}: set input.format to one of movielens-100k, "
        "movielens-1m, csv, tsv or parquet"
    )


def fingerprint(paths: Iterable[str | None]) -> str:
    """A short digest of the inputs' file names, sizes and modification times (not their bytes).

    Cheap at any size (no file is read), and it changes whenever a file is replaced, edited or
    touched. Spark's ``_*`` and hidden ``.*`` files under a folder are left out; a path that does
    not exist counts as missing, None is skipped. ``prepare`` keeps it in the manifest, and
    ``nightly`` in its history records to tell a date already published from the same files.
    """
    digest = hashlib.sha256()
    for text in paths:
        if not text:
            continue
        base = Location(text)
        entries = base.listing()
        for entry in entries:
            relative = entry.relative if entry.location == base else f"{base.name}/{entry.relative}"
            if any(part.startswith((".", "_")) for part in relative.split("/")[1:]):
                continue
            digest.update(f"{relative}|{entry.size}|{entry.mtime_ns}\n".encode())
        if not entries:
            digest.update(f"{text}|missing\n".encode())
    return digest.hexdigest()[:16]


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    return text


def split_header(line: str, delimiter: str) -> list[str]:
    """Field names of a header line, unquoted, with empty trailing names dropped.

    Real copies of MovieLens's ``ratings.csv`` end their lines with empty columns (``,,``).
    """
    names = [_unquote(name) for name in line.lstrip(_BOM).split(delimiter)]
    while names and names[-1] == "":
        names.pop()
    return names


def resolve_columns(available: list[str], wanted: dict[str, str], where: str) -> dict[str, str]:
    """Map each standard name in ``wanted`` to the input column that holds it.

    Parameters
    ----------
    available
        The input's column names (a header or a Parquet schema).
    wanted
        Standard name -> configured input name (``input.columns.*``).
    where
        The input, for the error message.

    Returns
    -------
    dict
        Standard name -> input column; a ``timestamp`` left at its default name and absent from
        the input is left out (the input has no timestamps).

    Raises
    ------
    BadInputError
        Naming every configured column the input lacks, and the columns it has.
    """
    found, missing = {}, []
    for standard, name in wanted.items():
        candidates = [name]
        if name == standard:
            candidates += list(COLUMN_ALIASES.get(standard, ()))
        match = next((c for c in candidates if c in available), None)
        if match is None and standard == TIMESTAMP and name == TIMESTAMP:
            continue  # the default timestamp column is optional; a configured one is not
        if match is None:
            missing.append(name)
        else:
            found[standard] = match
    if missing:
        raise BadInputError(
            f"{where} lacks column(s) {missing}: expected {list(wanted.values())}, found "
            f"{available}. Map them with input.columns.user/item/rating/timestamp/weight"
        )
    return found


def is_number(text: str) -> bool:
    """Whether a field reads as a number (``NaN`` and ``inf`` included), quotes and spaces aside."""
    return _NUMBER.fullmatch(_unquote(text)) is not None


def looks_like_header(fields: list[str], wanted: dict[str, str]) -> bool:
    """Whether a first line is a header (``input.header: auto``).

    It is when one of its fields names a configured column (or an alias of a default name), or
    when none of its fields is a number: a line of ratings holds at least its rating or timestamp.
    A header of other names is then still a header, and reading it fails naming them, rather than
    being read as a row and its columns taken by position.
    """
    names = set()
    for standard, name in wanted.items():
        names.add(name)
        if name == standard:
            names.update(COLUMN_ALIASES.get(standard, ()))
    return any(field in names for field in fields) or not any(is_number(f) for f in fields)


# The format a first line's delimiter points to when the configured one is absent from it.
_OTHER_DELIMITERS = (("::", "movielens-1m"), ("\t", "tsv"), (",", "csv"))
_HEAD_LINES = 20  # lines looked at for the delimiter


def check_delimiter(lines: list[str], fmt: str, where: str) -> None:
    """Fail when none of a text input's first lines has its format's delimiter and the first
    holds another format's.

    A TSV file read as ``csv`` would otherwise be one field per line, and the error would be about
    the field count rather than the format. Several lines are looked at so that one malformed
    first line is quarantined like any other rather than failing the job.

    Raises
    ------
    BadInputError
        Naming the ``input.format`` the first line points to.
    """
    delimiter = DELIMITERS[fmt]
    if not lines or any(delimiter in line for line in lines):
        return
    for other, suggestion in _OTHER_DELIMITERS:
        if other in lines[0]:
            raise BadInputError(
                f"{where} is read as {fmt} (fields split on {delimiter!r}) but its first line "
                f"holds {other!r} and no {delimiter!r}: set input.format: {suggestion} (or auto)"
            )


@dataclass(frozen=True)
class TextLayout:
    """How the lines of a text input are split, and which field holds which column."""

    delimiter: str
    header: str | None  # the header line as the files hold it; None for a file without one
    positions: dict[str, int]  # standard name -> field position, for the columns the input has
    field_count: int


def text_layout(
    path: str, fmt: str, wanted: dict[str, str], header: bool | None = None
) -> TextLayout:
    """Decide from a text input's first line (read here, without Spark) how its lines are read.

    Parameters
    ----------
    path
        A file or folder of a text format (MovieLens, CSV, TSV).
    fmt
        Its format, not ``auto``.
    wanted
        Standard name -> configured input name (:func:`wanted_columns`).
    header
        ``input.header``: True, the first line names the columns; False, there is no header and
        fields are read by position (user, item, rating or weight, timestamp); None (``auto``),
        :func:`looks_like_header` decides. Only CSV and TSV files have a header.

    Raises
    ------
    BadInputError
        When the input holds no line, its first line holds another format's delimiter, a header
        lacks a configured column (naming the expected and the found names), or a file without a
        header has too few fields.
    """
    delimiter = DELIMITERS[fmt]
    head = head_lines(path, _HEAD_LINES)
    if not head:
        raise BadInputError(f"input {path} is empty")
    first = head[0]
    check_delimiter(head, fmt, str(path))
    if header and fmt not in HEADER_FORMATS:
        raise BadInputError(
            f"input.header is true but {fmt} files have no header: set input.format to csv or tsv"
        )
    fields = split_header(first, delimiter)
    has_header = looks_like_header(fields, wanted) if header is None else header
    if fmt in HEADER_FORMATS and has_header:
        try:
            columns = resolve_columns(fields, wanted, f"the header of {path}")
        except BadInputError as error:
            raise BadInputError(
                f"{error}, or set input.header: false if the first line is a row, not a header"
            ) from None
        positions = {standard: fields.index(name) for standard, name in columns.items()}
        return TextLayout(delimiter, first, positions, len(fields))
    # Without a header the usual field count of the first lines is every line's: one malformed
    # first line is then quarantined like any other instead of deciding how the rest are read.
    usual = Counter(len(split_header(line, delimiter)) for line in head).most_common(1)[0][0]
    field_count = FIXED_FIELD_COUNT.get(fmt, usual)
    return TextLayout(delimiter, None, _positional(wanted, field_count, str(path)), field_count)


def _positional(wanted: dict[str, str], field_count: int, where: str) -> dict[str, int]:
    """Field positions of a file without a header: user, item, rating (or weight), timestamp."""
    third = RATING if RATING in wanted else WEIGHT if WEIGHT in wanted else None
    slots = [USER_ID, ITEM_ID, third, TIMESTAMP if TIMESTAMP in wanted else None]
    positions = {name: i for i, name in enumerate(slots) if name is not None and i < field_count}
    needed = [name for name in (USER_ID, ITEM_ID, RATING) if name in wanted]
    if WEIGHT in wanted and RATING not in wanted:
        needed.append(WEIGHT)
    if any(name not in positions for name in needed):
        raise BadInputError(
            f"{where} has no header and {field_count} field(s) per line; without a header the "
            f"fields are read as user, item, rating (or weight), timestamp and {needed} are needed"
        )
    return positions


def _strip(value: Column) -> Column:
    """``value`` without leading and trailing whitespace of any kind (tabs, no-break spaces)."""
    return F.regexp_replace(value, _WHITESPACE, "")


def _clean_field(value: Column) -> Column:
    """Trim a text field and undo CSV quoting: a doubled quote inside quotes is one quote."""
    value = _strip(value)
    quoted = value.startswith('"') & value.endswith('"') & (F.length(value) >= 2)
    inner = F.regexp_replace(F.regexp_extract(value, '^"(.*)"$', 1), '""', '"')
    return F.when(quoted, _strip(inner)).otherwise(value)


def _split_line(line: Column, delimiter: str) -> Column:
    plain = F.split(line, re.escape(delimiter))
    if delimiter != ",":
        return plain
    # A comma inside double quotes is not a delimiter; the lookahead is costly, so use it only on
    # lines that hold a quote at all.
    quoted = F.split(line, ',(?=(?:[^"]*"[^"]*")*[^"]*$)')
    return F.when(line.contains('"'), quoted).otherwise(plain)


def header_groups(
    path: str, layout: TextLayout, wanted: dict[str, str]
) -> list[tuple[TextLayout, list[str]]]:
    """The files of a text input with a header, grouped by the header each starts with.

    Files written by different tools need not list the columns in one order (``user,item,...``
    in one part, ``item,user,...`` in the next), and each file's own header says which field is
    which. The first line of every file is read (on the driver, one short read per file); a file
    whose first line is not a header (its rows start at once) is read as the first file is.

    Returns
    -------
    list
        ``(layout, file URIs)`` per distinct header, the first file's group first.

    Raises
    ------
    BadInputError
        When a file's header lacks a configured column, naming that file.
    """
    files = data_files(Location(path))
    groups: dict[str, tuple[TextLayout, list[str]]] = {layout.header: (layout, [])}
    for file in files:
        line = next(iter(head_lines(str(file), 1)), None) if len(files) > 1 else layout.header
        fields = split_header(line, layout.delimiter) if line is not None else []
        if line is None or line == layout.header or not looks_like_header(fields, wanted):
            groups[layout.header][1].append(file.uri)
            continue
        if line not in groups:
            columns = resolve_columns(fields, wanted, f"the header of {shown(file.uri)}")
            positions = {standard: fields.index(name) for standard, name in columns.items()}
            groups[line] = (TextLayout(layout.delimiter, line, positions, len(fields)), [])
        groups[line][1].append(file.uri)
    return [group for group in groups.values() if group[1]]


def _read_text(
    spark: SparkSession, path: str, fmt: str, wanted: dict[str, str], header: bool | None = None
) -> DataFrame:
    """Lines split on the format's delimiter; a line with the wrong number of fields says so.

    With a header, each file is read by its own header (:func:`header_groups`).
    """
    layout = text_layout(path, fmt, wanted, header)
    if layout.header is None:
        return _split_lines(spark.read.text(str(Location(path))), layout)
    frames = [
        _split_lines(spark.read.text(files), group_layout)
        for group_layout, files in header_groups(path, layout, wanted)
    ]
    return functools.reduce(DataFrame.unionByName, frames)


def _split_lines(text: DataFrame, layout: TextLayout) -> DataFrame:
    """:func:`_read_text` for files that share one layout: Spark's ``value`` lines, split."""
    field_count = layout.field_count
    lines = text.select(F.regexp_replace("value", "^" + _BOM, "").alias(RAW_LINE))
    # Blank lines (a trailing newline, a gap between files) hold no row.
    lines = lines.where(F.trim(F.col(RAW_LINE)) != "")
    if layout.header is not None:
        # The files of this group start with this header line.
        lines = lines.where(F.col(RAW_LINE) != layout.header)
    parts = _split_line(F.col(RAW_LINE), layout.delimiter)
    size = F.size(parts)
    # Empty trailing fields (``1,2,3.5,1112486027,,``) are allowed: real ratings.csv has them.
    extra_empty = F.forall(F.slice(parts, field_count + 1, 1 << 20), lambda x: F.trim(x) == "")
    count_ok = (size == field_count) | ((size > field_count) & extra_empty)
    selected = [
        F.when(count_ok, _clean_field(F.try_element_at(parts, F.lit(position + 1)))).alias(name)
        for name, position in layout.positions.items()
    ]
    reason = F.when(~count_ok, F.lit(WRONG_FIELD_COUNT)).otherwise(F.lit(None).cast("string"))
    return lines.select(F.col(RAW_LINE), *selected, reason.alias(REASON))


def _read_parquet(spark: SparkSession, path: str, wanted: dict[str, str]) -> DataFrame:
    frame = spark.read.parquet(str(Location(path)))
    columns = resolve_columns(frame.columns, wanted, str(path))
    return frame.select(
        F.lit(None).cast("string").alias(RAW_LINE),
        *[F.col(name).alias(standard) for standard, name in columns.items()],
        F.lit(None).cast("string").alias(REASON),
    )


def wanted_columns(
    user_col: str,
    item_col: str,
    rating_col: str | None,
    timestamp_col: str | None,
    weight_col: str | None,
) -> dict[str, str]:
    """Standard name -> configured input name, for the columns that are configured."""
    wanted = {
        USER_ID: user_col,
        ITEM_ID: item_col,
        RATING: rating_col,
        TIMESTAMP: timestamp_col,
        WEIGHT: weight_col,
    }
    return {standard: name for standard, name in wanted.items() if name}


def _parquet_names(entries: list[FileEntry], wanted: dict[str, str], where: str) -> list[str]:
    """The columns of a Parquet input, plus ``key=value`` folders, from every file's footer.

    Only footers are read (no rows). Each is checked for extension types before anything else
    (:mod:`recspark.core.parquet_safety`: a crafted type can run code), and the files must agree
    on the type of each configured column they hold: Spark takes one file's schema and would fail
    mid-job, naming neither file, on a part that differs (``user_id`` text here, integers there).

    Raises
    ------
    BadInputError
        Naming the file and the column, for an extension type or a type that differs from the
        first file's.
    """
    first = entries[0]
    partitions = [part.split("=", 1)[0] for part in first.relative.split("/")[:-1] if "=" in part]
    first_schema = parquet_safety.read_schema(first.location)
    configured = set(wanted.values()) | {
        alias for name in wanted.values() for alias in COLUMN_ALIASES.get(name, ())
    }
    for entry in entries[1:]:
        schema = parquet_safety.read_schema(entry.location)
        for field in schema:
            if field.name not in configured or field.name not in first_schema.names:
                continue
            expected = first_schema.field(field.name).type
            if field.type != expected:
                raise BadInputError(
                    f"input {where}: column {field.name!r} is {field.type} in "
                    f"{shown(str(entry.location))} but {expected} in "
                    f"{shown(str(first.location))}: write every part of a Parquet input with the "
                    "same column types"
                )
    return list(first_schema.names) + partitions


def inspect_input(
    path: str,
    input_format: str = "auto",
    wanted: dict[str, str] | None = None,
    header: bool | None = None,
) -> tuple[str, list[str]]:
    """Check what an input's first file tells without Spark; return its format and columns.

    The checks :func:`read_raw` makes before any row is read, runnable before the JVM starts:
    the path exists and holds data, the format is known (and matches the bytes), the header or
    Parquet schema has the configured columns, a text file's first line has the format's
    delimiter.

    Parameters
    ----------
    wanted
        Standard name -> configured input name (:func:`wanted_columns`); the defaults when None.

    Returns
    -------
    tuple
        The format (``auto`` resolved) and the standard names of the columns the input has.

    Raises
    ------
    MissingInputError
        When ``path`` does not exist.
    BadInputError
        For an unknown format, no data, Parquet expected but not found, or any problem of
        :func:`text_layout` and :func:`resolve_columns`.
    """
    if wanted is None:
        wanted = wanted_columns(USER_ID, ITEM_ID, RATING, TIMESTAMP, None)
    target = _existing(path)
    fmt = detect_format(path) if input_format == "auto" else input_format
    if fmt not in FORMATS:
        raise BadInputError(f"unknown input format {fmt!r}: use auto or one of {list(FORMATS)}")
    if fmt not in {"parquet", "synthetic"}:
        return fmt, list(text_layout(path, fmt, wanted, header).positions)
    entries = data_entries(target)
    if not entries or not _is_parquet(entries[0].location):
        raise BadInputError(
            f"input {path} is not Parquet but input.format is {fmt}: set input.format to "
            "auto or to the file's format"
        )
    names = _parquet_names(entries, wanted, str(path))
    return fmt, list(resolve_columns(names, wanted, str(path)))


def read_raw(
    spark: SparkSession,
    path: str,
    input_format: str = "auto",
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    rating_col: str | None = RATING,
    timestamp_col: str | None = TIMESTAMP,
    weight_col: str | None = None,
    header: bool | None = None,
) -> DataFrame:
    """Read an input into standard column names, values as read, plus ``raw_line`` and ``reason``.

    Parameters
    ----------
    path
        A file or a folder of files of one format.
    input_format
        One of :data:`FORMATS` or ``auto`` (:func:`detect_format`).
    user_col, item_col, rating_col, timestamp_col, weight_col
        Input column names (``input.columns.*``); None leaves the column out (``rating_col`` is
        None for implicit feedback). CSV and TSV files may have a header naming the columns; a
        file without one is read by position: user, item, rating (or weight), timestamp. A
        headerless file with three fields has no timestamp.
    header
        ``input.header`` for CSV and TSV: True, False, or None to decide from the first line
        (see :func:`text_layout`).

    Returns
    -------
    DataFrame
        ``raw_line`` (the text line; null for Parquet), one column per standard name the input
        has (strings for text formats, the input's types for Parquet), and ``reason``
        (``wrong_field_count`` or null).
    """
    wanted = wanted_columns(user_col, item_col, rating_col, timestamp_col, weight_col)
    fmt, _ = inspect_input(path, input_format, wanted, header)
    if fmt in {"parquet", "synthetic"}:
        return _read_parquet(spark, path, wanted)
    return _read_text(spark, path, fmt, wanted, header)


def _blank(column: Column, data_type: T.DataType) -> Column:
    if isinstance(data_type, T.StringType):
        return column.isNull() | (_strip(column) == "")
    return column.isNull()


def _id_checks(
    column: Column, data_type: T.DataType, max_id_length: int, reasons: tuple[str, str, str]
) -> list[tuple[Column, str]]:
    """The checks of an id that do not depend on its type: blank, not UTF-8, too long."""
    missing, non_utf8, too_long = reasons
    checks = [(_blank(column, data_type), missing)]
    if isinstance(data_type, T.StringType):
        # Spark decodes a text line's invalid bytes to U+FFFD; a Parquet string keeps its bytes.
        checks += [
            (~F.is_valid_utf8(column) | column.contains(_REPLACEMENT), non_utf8),
            (F.length(column) > max_id_length, too_long),
        ]
    return checks


def _number(column: Column, data_type: T.DataType) -> Column:
    """The value as a double, null when it is not a number."""
    if isinstance(data_type, T.NumericType):
        return column.cast(T.DoubleType())
    return column.try_cast(T.DoubleType())


def _epoch_seconds(column: Column, data_type: T.DataType) -> Column:
    """Unix seconds from a number, a timestamp/date, or a date-time text; null when none of them."""
    if isinstance(data_type, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return F.unix_timestamp(column.cast(T.TimestampType()))
    if isinstance(data_type, T.NumericType):
        return column.try_cast(T.LongType())
    as_number = column.try_cast(T.DoubleType()).try_cast(T.LongType())
    as_date = F.unix_timestamp(F.try_to_timestamp(column))
    return F.coalesce(as_number, as_date)


def check_rows(
    raw: DataFrame,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
    max_id_length: int = MAX_ID_LENGTH,
) -> DataFrame:
    """Check each row of :func:`read_raw`'s output and cast good values to standard types.

    Parameters
    ----------
    raw
        :func:`read_raw`'s output.
    rating_min, rating_max
        The valid rating range, inclusive (``input.rating_min``/``rating_max``).
    max_id_length
        Longer text ids are quarantined (``input.max_id_length``).

    Returns
    -------
    DataFrame
        ``raw_line``, ``user_id``, ``item_id`` (trimmed, type unchanged: see :func:`cast_ids`),
        ``rating`` (float; 1.0 when the input has no rating column), ``timestamp`` (long Unix
        seconds; 0 when the input has none), ``weight`` (float, only when the input has one),
        ``reason``: the first of :data:`REASONS` that applies, or null for a good row; then any
        other column of ``raw`` unchanged.
    """
    schema = {field.name: field.dataType for field in raw.schema.fields}
    checks: list[tuple[Column, str]] = []
    user, item = F.col(USER_ID), F.col(ITEM_ID)
    if isinstance(schema[USER_ID], T.StringType):
        user = _strip(user)
    if isinstance(schema[ITEM_ID], T.StringType):
        item = _strip(item)
    checks += _id_checks(
        user, schema[USER_ID], max_id_length, (MISSING_USER, NON_UTF8_USER, USER_TOO_LONG)
    )
    checks += _id_checks(
        item, schema[ITEM_ID], max_id_length, (MISSING_ITEM, NON_UTF8_ITEM, ITEM_TOO_LONG)
    )
    rating = F.lit(1.0).cast(T.FloatType())
    if RATING in schema:
        value = _number(F.col(RATING), schema[RATING])
        checks += [
            (_blank(F.col(RATING), schema[RATING]), MISSING_RATING),
            (value.isNull() | F.isnan(value), NON_NUMERIC_RATING),
            ((value < rating_min) | (value > rating_max), RATING_OUT_OF_RANGE),
        ]
        rating = value.cast(T.FloatType())
    timestamp = F.lit(0).cast(T.LongType())
    if TIMESTAMP in schema:
        seconds = _epoch_seconds(F.col(TIMESTAMP), schema[TIMESTAMP])
        checks += [
            (_blank(F.col(TIMESTAMP), schema[TIMESTAMP]), MISSING_TIMESTAMP),
            (seconds.isNull(), INVALID_TIMESTAMP),
        ]
        timestamp = seconds
    extra = []
    if WEIGHT in schema:
        weight = _number(F.col(WEIGHT), schema[WEIGHT])
        checks += [
            (_blank(F.col(WEIGHT), schema[WEIGHT]), MISSING_WEIGHT),
            (weight.isNull() | F.isnan(weight), NON_NUMERIC_WEIGHT),
            ((weight <= 0) | (weight == float("inf")), WEIGHT_OUT_OF_RANGE),
        ]
        extra.append(weight.cast(T.FloatType()).alias(WEIGHT))
    checks.sort(key=lambda check: REASONS.index(check[1]))
    reason = F.lit(None).cast("string")
    for condition, name in reversed(checks):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
    # A column of its own before it is used below, so that the checks run once per row.
    raw = raw.withColumn(REASON, F.coalesce(F.col(REASON), reason))
    reason = F.col(REASON)
    # Parquet rows have no text line: keep their values as JSON when they are quarantined.
    present = [c for c in STANDARD_COLUMNS if c in schema]
    raw_line = F.coalesce(
        F.col(RAW_LINE), F.when(reason.isNotNull(), F.to_json(F.struct(*present)))
    )
    good = reason.isNull()
    # Other columns (e.g. which input a row came from) pass through unchanged.
    passed = [c for c in raw.columns if c not in (*STANDARD_COLUMNS, RAW_LINE, REASON)]
    return raw.select(
        raw_line.alias(RAW_LINE),
        user.alias(USER_ID),
        item.alias(ITEM_ID),
        F.when(good, rating).alias(RATING),
        F.when(good, timestamp).alias(TIMESTAMP),
        *[F.when(good, column).alias(WEIGHT) for column in extra],
        reason.alias(REASON),
        *passed,
    )


def infer_id_types(
    frame: DataFrame, columns: tuple[str, ...] = (USER_ID, ITEM_ID)
) -> dict[str, T.DataType]:
    """The type each id column should have: ``long`` for a text column whose ids are mostly
    integers, else the column's own type.

    One small aggregate over the good rows of :func:`check_rows` (an id that is blank, not UTF-8
    or too long has no say). Most, not all: one stray id (``106,106``, ``x7``) in a column of
    integers does not turn it into text; :func:`cast_ids` quarantines it instead. A column of
    text ids with a few that look like numbers (``42`` among names) stays text.
    """
    types = {column: frame.schema[column].dataType for column in columns}
    strings = [c for c in columns if isinstance(types[c], T.StringType)]
    if strings:
        good = frame.where(F.col(REASON).isNull())
        counts = good.agg(
            F.count(F.lit(1)).alias("_rows"),
            *[F.sum(F.col(c).rlike(_INTEGER).cast("long")).alias(c) for c in strings],
        ).first()
        for column in strings:
            if counts["_rows"] and 2 * (counts[column] or 0) > counts["_rows"]:
                types[column] = T.LongType()
    return types


_ID_REASON = "_id_reason"
# Per id column: the reasons of an id that does not fit an integer type, in REASONS order.
_CAST_REASONS = {
    USER_ID: (QUOTED_DELIMITER_USER, NON_NUMERIC_USER, USER_OUT_OF_RANGE),
    ITEM_ID: (QUOTED_DELIMITER_ITEM, NON_NUMERIC_ITEM, ITEM_OUT_OF_RANGE),
}


def _integer_id(
    value: Column, source: T.DataType, target: T.DataType, delimiters: tuple[str, ...],
    reasons: tuple[str, str, str],
) -> tuple[Column, list[tuple[Column, str]]]:
    """``value`` cast to the integral ``target``, and the checks that quarantine what does not fit.

    Integer ids run from 0 to a long's largest: a negative id or one too large for a long is
    out of range (never wrapped or merged with another).
    """
    quoted_delimiter, non_numeric, out_of_range = reasons
    cast = value.try_cast(target) if source != target else value
    checks: list[tuple[Column, str]] = []
    if isinstance(source, T.StringType):
        integer = value.rlike(_INTEGER)
        cast = F.regexp_replace(value, _ZERO_FRACTION, "").try_cast(target)
        if delimiters:
            # A field can hold its delimiter only inside quotes: fields that ran together.
            holds = F.lit(False)
            for delimiter in delimiters:
                holds = holds | value.contains(delimiter)
            checks.append((~integer & holds, quoted_delimiter))
        checks.append((~integer, non_numeric))
        checks.append((integer & cast.isNull(), out_of_range))
    elif isinstance(source, T.FractionalType):
        finite = ~F.isnan(value) & (F.abs(value) != float("inf"))
        whole = finite & (value % 1 == 0)
        checks.append((~whole, non_numeric))
        checks.append((whole & cast.isNull(), out_of_range))
    elif not isinstance(source, T.IntegralType):
        checks.append((value.isNotNull() & cast.isNull(), non_numeric))
    checks.append((cast < 0, out_of_range))
    return cast, checks


def cast_ids(
    frame: DataFrame, types: dict[str, T.DataType], delimiters: tuple[str, ...] = ()
) -> DataFrame:
    """Cast id columns to ``types``, quarantining the ids that do not fit an integer type.

    An id of an integer column is ``quoted_delimiter_*`` when it is text holding one of
    ``delimiters`` (only quotes let a field hold its delimiter), else ``non_numeric_*`` when it
    is not an integer, and ``*_out_of_range`` when it is below 0 or too large for a long. A row
    already quarantined for a reason that comes earlier in :data:`REASONS` keeps it; one
    quarantined for a later reason (a bad rating, say) gets the id's.

    Parameters
    ----------
    types
        ``{"user_id": LongType(), ...}`` from :func:`infer_id_types`, from ``input.id_type``, or
        from the previous run's id maps (so that ids keep their type from run to run).
    delimiters
        The delimiters of the text formats read (``,`` for CSV); none for Parquet.
    """
    checks: list[tuple[Column, str]] = []
    casts, integers = {}, {}
    for column, target in types.items():
        source = frame.schema[column].dataType
        value = F.col(column)
        if isinstance(target, T.IntegralType):
            cast, column_checks = _integer_id(
                value, source, target, delimiters, _CAST_REASONS[column]
            )
            checks += column_checks
            if source != target:
                integers[column] = cast
        elif isinstance(target, T.FractionalType) and isinstance(source, T.NumericType):
            # Float ids kept from an earlier run's map: NaN and infinities name nobody.
            non_numeric = _CAST_REASONS[column][1]
            checks.append((F.isnan(value) | (F.abs(value) == float("inf")), non_numeric))
            if source != target:
                casts[column] = value.cast(target)
        elif source != target:
            casts[column] = value.try_cast(target)
    if checks:
        checks.sort(key=lambda check: REASONS.index(check[1]))
        id_reason = F.lit(None).cast("string")
        for condition, name in reversed(checks):
            id_reason = F.when(condition, F.lit(name)).otherwise(id_reason)
        # A column of its own, so that the checks are computed once per row, not once per use.
        frame = frame.withColumn(_ID_REASON, id_reason)
        found = F.col(_ID_REASON)
        for column, cast in integers.items():
            # An id that does not fit is null, not truncated (2.5 is not user 2).
            casts[column] = F.when(found.isNull() | ~found.isin(*_CAST_REASONS[column]), cast)
        current = F.col(REASON)
        order = F.array(*[F.lit(reason) for reason in REASONS])
        earlier = F.array_position(order, found) < F.array_position(order, current)
        reason = F.when(found.isNotNull() & (current.isNull() | earlier), found).otherwise(current)
        # A Parquet row quarantined here keeps its values as read, before the cast.
        present = [c for c in STANDARD_COLUMNS if c in frame.columns]
        raw_line = F.coalesce(
            F.col(RAW_LINE), F.when(reason.isNotNull(), F.to_json(F.struct(*present)))
        )
        frame = frame.withColumns({RAW_LINE: raw_line, REASON: reason})
        # Values of rows quarantined here are null, as those of check_rows' bad rows are.
        values = [c for c in (RATING, TIMESTAMP, WEIGHT) if c in frame.columns]
        casts.update({c: F.when(F.col(REASON).isNull(), F.col(c)) for c in values})
    return frame.withColumns(casts).drop(_ID_REASON) if casts else frame.drop(_ID_REASON)


def mark_duplicates(frame: DataFrame) -> DataFrame:
    """Quarantine exact duplicates and repeated (user, item) pairs, keeping the latest rating.

    Among the good rows of one user and item, the row with the latest timestamp is kept (ties
    broken by the higher rating, weight and raw line, so the choice is deterministic). Each other
    row is ``duplicate_row`` when its values equal those of the row before it in that order (a
    copy of a row that is kept or quarantined), and ``repeated_pair`` otherwise.
    """
    good = F.col(REASON).isNull()
    values = [TIMESTAMP, RATING] + ([WEIGHT] if WEIGHT in frame.columns else [])
    latest_first = Window.partitionBy(USER_ID, ITEM_ID, good).orderBy(
        *[F.col(c).desc() for c in values], F.col(RAW_LINE).desc_nulls_last()
    )
    current = F.struct(*values)
    reason = (
        F.when(~good, F.col(REASON))
        .when(F.row_number().over(latest_first) == 1, F.lit(None).cast("string"))
        .when(F.lag(current).over(latest_first) == current, F.lit(DUPLICATE_ROW))
        .otherwise(F.lit(REPEATED_PAIR))
    )
    return frame.withColumn(REASON, reason)


def mark_repeated_events(frame: DataFrame, has_timestamp: bool) -> DataFrame:
    """Quarantine re-delivered events of implicit feedback; other repeats are kept to aggregate.

    With a timestamp, two events of the same user, item, time and weight are one event delivered
    twice: all but one are ``duplicate_row``. Without a timestamp every row is an event (a play,
    a click), identical rows included, and nothing is quarantined here.
    """
    if not has_timestamp:
        return frame
    good = F.col(REASON).isNull()
    keys = [USER_ID, ITEM_ID, TIMESTAMP] + ([WEIGHT] if WEIGHT in frame.columns else [])
    same_event = Window.partitionBy(*keys, good).orderBy(F.col(RAW_LINE).asc_nulls_last())
    reason = F.when(good & (F.row_number().over(same_event) > 1), F.lit(DUPLICATE_ROW)).otherwise(
        F.col(REASON)
    )
    return frame.withColumn(REASON, reason)


def aggregate_events(good: DataFrame, by: tuple[str, ...] = ()) -> DataFrame:
    """One row per (user, item) from implicit events.

    Parameters
    ----------
    good
        Good event rows (:func:`split_valid`).
    by
        Further columns to keep apart, e.g. which input a row came from.

    Returns
    -------
    DataFrame
        ``user_id``, ``item_id``, ``rating`` (float: the number of events of the pair),
        ``timestamp`` (the latest event's) and, when the input has a weight, ``weight`` (float:
        the sum of the events' weights, e.g. the play count of a counts table).
    """
    aggregates = [
        F.count(F.lit(1)).cast(T.FloatType()).alias(RATING),
        F.max(TIMESTAMP).alias(TIMESTAMP),
    ]
    if WEIGHT in good.columns:
        aggregates.append(F.sum(WEIGHT).cast(T.FloatType()).alias(WEIGHT))
    return good.groupBy(USER_ID, ITEM_ID, *by).agg(*aggregates)


def split_valid(frame: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(good rows without ``reason``/``raw_line``, quarantined rows with both)."""
    good = frame.where(F.col(REASON).isNull()).drop(REASON, RAW_LINE)
    bad = frame.where(F.col(REASON).isNotNull())
    present = [c for c in STANDARD_COLUMNS if c in frame.columns]
    bad = bad.withColumn(
        RAW_LINE, F.coalesce(F.col(RAW_LINE), F.to_json(F.struct(*present)))
    )
    return good, bad


def read_ratings(
    spark: SparkSession,
    path: str,
    input_format: str = "auto",
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    rating_col: str | None = RATING,
    timestamp_col: str | None = TIMESTAMP,
    weight_col: str | None = None,
    rating_min: float = 1.0,
    rating_max: float = 5.0,
) -> DataFrame:
    """:func:`read_raw` then :func:`check_rows` and :func:`cast_ids` with inferred id types.

    Every row of the input is in the result, good ones with a null ``reason``; duplicates are not
    marked yet (see :func:`mark_duplicates`).
    """
    raw = read_raw(spark, path, input_format, user_col, item_col, rating_col, timestamp_col,
                   weight_col)
    checked = check_rows(raw, rating_min, rating_max)
    fmt = detect_format(path) if input_format == "auto" else input_format
    delimiters = (DELIMITERS[fmt],) if fmt in DELIMITERS else ()
    return cast_ids(checked, infer_id_types(checked), delimiters)
