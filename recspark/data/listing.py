"""Finding an input's data files and reading their first lines, without Spark.

An input is a file or a folder of parts (Spark's ``_SUCCESS`` and hidden files left out).
:func:`data_entries` lists it, :func:`head_lines` reads the first lines of its first file (what
the format and header are sniffed from, :mod:`recspark.data.sniffing`), and :func:`fingerprint`
digests the listing so that ``prepare`` and ``nightly`` can tell whether the files changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from recspark.core.errors import MissingInputError
from recspark.core.location import FileEntry, Location
from recspark.data.compressed import open_text

BOM = "\ufeff"


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


def existing_input(path: str) -> Location:
    """``path`` as a :class:`Location`; a clear error when it does not exist.

    Raises
    ------
    MissingInputError
        Saying to set ``input.path``.
    """
    target = Location(path)
    if not target.exists():
        raise MissingInputError(
            f"input {path} does not exist: set input.path to a ratings file or folder"
        )
    return target


def is_parquet(file: Location) -> bool:
    """Whether a file starts with Parquet's magic bytes."""
    with file.open("rb") as handle:
        return handle.read(4) == b"PAR1"


def head_lines(path: str, count: int) -> list[str]:
    """The first ``count`` non-blank lines of the first data file, without a byte-order mark.

    A ``.gz`` or ``.bz2`` file is decompressed, as Spark decompresses it; another compressed
    file is refused (:func:`recspark.data.compressed.open_text`).
    """
    files = data_files(existing_input(path))
    lines: list[str] = []
    if not files:
        return lines
    with open_text(files[0]) as handle:
        for line in handle:
            line = line.lstrip(BOM).rstrip("\r\n")
            if line.strip():
                lines.append(line)
                if len(lines) == count:
                    break
    return lines


def first_line(path: str) -> str | None:
    """The first non-blank line of the first data file, without a byte-order mark."""
    lines = head_lines(path, 1)
    return lines[0] if lines else None


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
