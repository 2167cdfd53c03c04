"""Compressed input files: which compressions Spark reads, and the text of one for a look at its
head.

Spark reads a compressed text file through Hadoop's codecs, chosen by the file's name: ``.gz``
(gzip) and ``.bz2`` (bzip2) are decompressed as they are read. The first lines that recspark reads
without Spark, to tell the format and the header, must be decompressed the same way, so
:func:`open_text` looks at the file's first bytes. A compressed file whose name lacks the
extension would be read by Spark as compressed bytes, every line garbage, and a zip archive (a
folder of files in one) cannot be read by Spark at all: both are refused naming the compression
and what to do. The standard library's ``gzip`` and ``bz2`` do the decompressing.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, cast

from recspark.core.errors import BadInputError
from recspark.core.location import Location, shown


@dataclass(frozen=True)
class Compression:
    """A compression recognised by its magic bytes."""

    name: str
    magic: re.Pattern[bytes]  # the file's first bytes
    suffix: str | None  # the name ending Spark decompresses by; None: Spark cannot read it
    undo: str  # the command that decompresses a file
    opener: Callable[[IO[bytes]], IO[bytes]] | None  # the decompressed stream of a file's bytes


def _gunzip(raw: IO[bytes]) -> IO[bytes]:
    return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))


def _bunzip2(raw: IO[bytes]) -> IO[bytes]:
    return bz2.BZ2File(raw, mode="rb")


COMPRESSIONS = (
    Compression("gzip", re.compile(b"\x1f\x8b"), ".gz", "gunzip", _gunzip),
    Compression("bzip2", re.compile(b"BZh[1-9]"), ".bz2", "bunzip2", _bunzip2),
    Compression("zip", re.compile(b"PK\x03\x04"), None, "unzip", None),
)


def compression_of(head: bytes) -> Compression | None:
    """The compression of a file that starts with ``head``; None for a plain file."""
    return next((c for c in COMPRESSIONS if c.magic.match(head)), None)


@contextlib.contextmanager
def open_text(file: Location) -> Iterator[IO[str]]:
    """``file``'s text as Spark reads it: decompressed when its name says so, bad UTF-8 replaced.

    Raises
    ------
    BadInputError
        For a zip archive, a compressed file whose name does not end in its compression's
        extension (Spark would read its compressed bytes as text), or a damaged one.
    """
    where = shown(str(file))
    with file.open("rb") as raw:
        compression = compression_of(raw.read(4))
        raw.seek(0)
        if compression is None:
            yield io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
            return
        if compression.suffix is None:
            raise BadInputError(
                f"{where} is a {compression.name} archive, which Spark cannot read: "
                f"{compression.undo} it and set input.path to the ratings file (or folder) inside"
            )
        if not file.name.endswith(compression.suffix):
            raise BadInputError(
                f"{where} is {compression.name}-compressed but its name does not end in "
                f"{compression.suffix}, so Spark would read its compressed bytes as text: rename "
                f"it to {file.name}{compression.suffix}, which Spark decompresses as it reads (or "
                f"rename it and {compression.undo} it)"
            )
        assert compression.opener is not None
        try:
            with compression.opener(raw) as data:
                yield io.TextIOWrapper(data, encoding="utf-8", errors="replace")
        except (OSError, EOFError) as error:
            raise BadInputError(
                f"{where} is not a whole {compression.name} file ({error}): compress it again"
            ) from None
