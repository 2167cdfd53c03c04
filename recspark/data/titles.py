"""Item titles (and genres) for people to read, from the titles tables MovieLens ships.

Three layouts are recognised from the file itself, so ``recommend.titles_path`` needs no format key:

- ML-100K ``u.item``: ``|``-separated, latin-1, no header; id, title, release date, video date,
  IMDb URL, then 19 genre flags named in ``u.genre`` (read from the same folder when present).
- ML-1M ``movies.dat``: ``::``-separated, latin-1, no header; id, title, ``|``-joined genres.
- ML-latest ``movies.csv``: a CSV with the header ``movieId,title,genres`` (UTF-8, titles quoted
  where they hold commas).

A titles table has one row per item, so it is read on the driver with pandas.

Whatever the layout, the text is UTF-8 when the bytes are (a byte-order mark, as spreadsheets
write one, is dropped) and Latin-1 otherwise, as MovieLens ships ``u.item`` and ``movies.dat``.
Latin-1 never uses the bytes 0x80-0x9F, which Windows-1252 uses for curly quotes, dashes and the
euro sign: a file holding them is refused naming the line and asking for UTF-8, rather than read
with control characters in its titles (or, for a CSV, failing inside pandas).
"""

from __future__ import annotations

import csv
import io
import re

import pandas as pd

from recspark.core.constants import ITEM_ID
from recspark.core.errors import BadInputError, MissingInputError
from recspark.core.location import Location

TITLE = "title"
GENRES = "genres"

# u.genre's names, in the column order of u.item's flags (used when u.genre is not beside u.item).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


_BOM = b"\xef\xbb\xbf"
_NOT_LATIN1 = re.compile(rb"[\x80-\x9f]")  # C1 controls in Latin-1; text in Windows-1252


def decode_titles(path: str, data: bytes) -> str:
    """The text of a titles table: UTF-8 (any byte-order mark dropped), else Latin-1.

    Raises
    ------
    BadInputError
        For a byte-order mark before bytes that are not UTF-8, or bytes that are neither UTF-8
        nor Latin-1 text (Windows-1252's 0x80-0x9F), naming the line and saying how to convert.
    """
    bom = data.startswith(_BOM)
    try:
        return data[len(_BOM) :].decode("utf-8") if bom else data.decode("utf-8")
    except UnicodeDecodeError as error:
        if bom:
            line = data[: len(_BOM) + error.start].count(b"\n") + 1
            raise BadInputError(
                f"titles table {path} starts with a UTF-8 byte-order mark but line {line} is "
                "not UTF-8: save the file as UTF-8 (or as Latin-1 without the mark)"
            ) from None
    found = _NOT_LATIN1.search(data)
    if found is not None:
        line = data[: found.start()].count(b"\n") + 1
        raise BadInputError(
            f"titles table {path} is neither UTF-8 nor Latin-1 (MovieLens's encodings): line "
            f"{line} holds byte 0x{data[found.start()]:02X}, a Windows-1252 character (curly "
            "quote, dash, euro sign) as spreadsheets on Windows save them: save the file as UTF-8, "
            "e.g. iconv -f WINDOWS-1252 -t UTF-8"
        )
    return data.decode("latin-1")


def _ml100k_genre_names(folder: Location) -> tuple[str, ...]:
    genre_file = folder / "u.genre"
    if not genre_file.is_file():
        return ML100K_GENRES
    names = [line.split("|")[0] for line in genre_file.read_text(encoding="latin-1").splitlines()]
    names = [name for name in names if name]
    return tuple(names) if len(names) == len(ML100K_GENRES) else ML100K_GENRES


def _read_ml100k(path: Location, text: str) -> pd.DataFrame:
    names = _ml100k_genre_names(path.parent)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 2 + len(names) or not fields[0].strip().isdigit():
            raise BadInputError(
                f"{path} line {number} is not a u.item row "
                f"(id|title|...|{len(names)} genre flags): {line[:80]!r}"
            )
        flags = fields[-len(names) :]
        genres = "|".join(
            name for name, flag in zip(names, flags, strict=True) if flag.strip() == "1"
        )
        rows.append((int(fields[0]), fields[1].strip(), genres))
    return pd.DataFrame(rows, columns=[ITEM_ID, TITLE, GENRES])


def _read_ml1m(path: Location, text: str) -> pd.DataFrame:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("::")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            raise BadInputError(f"{path} line {number} is not a movies.dat row (id::title::genres)")
        rows.append((int(fields[0]), fields[1].strip(), fields[2].strip()))
    return pd.DataFrame(rows, columns=[ITEM_ID, TITLE, GENRES])


def _read_csv(path: Location, text: str, header: list[str]) -> pd.DataFrame:
    lowered = [name.strip().lower() for name in header]
    id_column = next(
        (i for i, name in enumerate(lowered) if name in ("movieid", "item_id", "itemid")), None
    )
    if id_column is None or "title" not in lowered:
        raise BadInputError(
            f"{path}: a CSV titles table needs a header with movieId (or item_id) and title; "
            f"found {header}"
        )
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    frame.columns = [name.strip().lower() for name in frame.columns]
    ids = frame.iloc[:, id_column].str.strip()
    numeric = pd.to_numeric(ids, errors="coerce")
    out = pd.DataFrame(
        {
            ITEM_ID: numeric.astype("int64") if numeric.notna().all() else ids,
            TITLE: frame["title"].str.strip(),
            GENRES: frame["genres"].str.strip() if "genres" in frame else "",
        }
    )
    return out


def read_titles(path: str) -> pd.DataFrame:
    """The titles table at ``path`` as ``(item_id, title, genres)``, one row per item.

    Parameters
    ----------
    path
        ML-100K ``u.item``, ML-1M ``movies.dat`` or a ``movies.csv`` with a ``movieId,title``
        header. Numeric ids become ``int64``, matching the ids ``prepare`` reads from text ratings.

    Raises
    ------
    MissingInputError
        When the file does not exist.
    BadInputError
        When its layout is none of the three, a row is malformed, or its text is neither UTF-8
        nor Latin-1 (:func:`decode_titles`).
    """
    target = Location(path)
    if not target.is_file():
        raise MissingInputError(
            f"recommend.titles_path {path} does not exist: point it at u.item, movies.dat or "
            "movies.csv, or leave it unset"
        )
    text = decode_titles(path, target.read_bytes())
    first = text.split("\n", 1)[0].rstrip("\r")
    if "::" in first:
        frame = _read_ml1m(target, text)
    elif first.count("|") >= 5:
        frame = _read_ml100k(target, text)
    elif "," in first:
        frame = _read_csv(target, text, next(csv.reader(io.StringIO(first))))
    else:
        raise BadInputError(
            f"cannot tell the layout of titles table {path}: expected u.item (|), movies.dat (::) "
            "or a CSV with a movieId,title header"
        )
    if frame.empty:
        raise BadInputError(f"titles table {path} has no rows")
    return frame.drop_duplicates(ITEM_ID, keep="first").reset_index(drop=True)
