"""Telling an input's format and layout from its first bytes and lines, without Spark.

:func:`detect_format` recognises Parquet by its magic bytes and the text formats (MovieLens
``u.data`` and ``ratings.dat``, CSV, TSV) by their first line's delimiter; :func:`text_layout`
decides how a text input's lines are split and which field holds which column (a header, or
positions); :func:`inspect_input` makes every check that needs no row read, so the command's
precheck fails a bad input in a second, before the JVM starts. A ``.gz`` or ``.bz2`` file is
sniffed decompressed, as Spark reads it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from recspark.core import parquet_safety
from recspark.core.choices import INPUT_FORMATS
from recspark.core.constants import ITEM_ID, RATING, TIMESTAMP, USER_ID, WEIGHT
from recspark.core.errors import BadInputError
from recspark.core.location import FileEntry, Location, shown
from recspark.data.columns import (
    COLUMN_ALIASES,
    looks_like_header,
    resolve_columns,
    split_header,
    wanted_columns,
)
from recspark.data.listing import (
    data_entries,
    data_files,
    existing_input,
    first_line,
    head_lines,
    is_parquet,
)

FORMATS = INPUT_FORMATS
DELIMITERS = {"movielens-100k": "\t", "tsv": "\t", "movielens-1m": "::", "csv": ","}
# MovieLens files have no header and exactly these fields: user, item, rating, timestamp.
FIXED_FIELD_COUNT = {"movielens-100k": 4, "movielens-1m": 4}
HEADER_FORMATS = ("csv", "tsv")
# The formats read through Spark's Parquet reader.
PARQUET_FORMATS = ("parquet", "synthetic")


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
    target = existing_input(path)
    files = data_files(target)
    if not files:
        raise BadInputError(f"input {path} holds no data files")
    if any(f.name.endswith(".parquet") for f in files) or is_parquet(files[0]):
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
    first = layout.header
    if first is None:  # no header: every file is read by position, as the first is
        return [(layout, [file.uri for file in files])]
    groups: dict[str, tuple[TextLayout, list[str]]] = {first: (layout, [])}
    for file in files:
        line = next(iter(head_lines(str(file), 1)), None) if len(files) > 1 else first
        fields = split_header(line, layout.delimiter) if line is not None else []
        if line is None or line == first or not looks_like_header(fields, wanted):
            groups[first][1].append(file.uri)
            continue
        if line not in groups:
            columns = resolve_columns(fields, wanted, f"the header of {shown(file.uri)}")
            positions = {standard: fields.index(name) for standard, name in columns.items()}
            groups[line] = (TextLayout(layout.delimiter, line, positions, len(fields)), [])
        groups[line][1].append(file.uri)
    return [group for group in groups.values() if group[1]]


def parquet_names(entries: list[FileEntry], wanted: dict[str, str], where: str) -> list[str]:
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
    target = existing_input(path)
    fmt = detect_format(path) if input_format == "auto" else input_format
    if fmt not in FORMATS:
        raise BadInputError(f"unknown input format {fmt!r}: use auto or one of {list(FORMATS)}")
    if fmt not in PARQUET_FORMATS:
        return fmt, list(text_layout(path, fmt, wanted, header).positions)
    entries = data_entries(target)
    if not entries or not is_parquet(entries[0].location):
        raise BadInputError(
            f"input {path} is not Parquet but input.format is {fmt}: set input.format to "
            "auto or to the file's format"
        )
    names = parquet_names(entries, wanted, str(path))
    return fmt, list(resolve_columns(names, wanted, str(path)))
