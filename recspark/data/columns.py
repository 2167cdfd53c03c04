"""Which input column holds which standard column: configured names, aliases and headers.

The standard names are ``user_id``, ``item_id``, ``rating``, ``timestamp`` and ``weight``;
``input.columns.*`` says what the input calls them (:func:`wanted_columns`).
:func:`resolve_columns` finds them among a header's or a Parquet schema's names, trying
MovieLens's own names (``userId``, ``movieId``) for a column left at its default name, and
:func:`looks_like_header` tells a header line from a line of ratings (``input.header: auto``).
"""

from __future__ import annotations

import re

from recspark.core.constants import ITEM_ID, RATING, TIMESTAMP, USER_ID, WEIGHT
from recspark.core.errors import BadInputError
from recspark.data.listing import BOM

# When a column is configured under its default name and the header lacks it, these names are
# tried in turn: MovieLens's own ratings.csv says userId/movieId.
COLUMN_ALIASES = {
    USER_ID: ("userId", "user", "userID"),
    ITEM_ID: ("movieId", "itemId", "item", "movie_id", "itemID"),
}
_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)",
    re.IGNORECASE,
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


def unquote(text: str) -> str:
    """A field without surrounding spaces and CSV quotes (a doubled quote inside is one)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    return text


def split_header(line: str, delimiter: str) -> list[str]:
    """Field names of a header line, unquoted, with empty trailing names dropped.

    Real copies of MovieLens's ``ratings.csv`` end their lines with empty columns (``,,``).
    """
    names = [unquote(name) for name in line.lstrip(BOM).split(delimiter)]
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
    return _NUMBER.fullmatch(unquote(text)) is not None


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
