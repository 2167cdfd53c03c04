"""Side information for the models: user and item features aligned with the prepared id maps.

``model.side_info`` names a MovieLens folder; this module reads its user and film tables and turns
them into feature-weight matrices, one row per ``user_idx`` / ``item_idx`` of the prepared run:

- users (``u.user`` / ``users.dat``): one-hot age band (MovieLens 1M's seven bands: under 18,
  18-24, 25-34, 35-44, 45-49, 50-55, 56+), gender, occupation and zip region (the zip code's
  first digit; ``other`` for codes that do not start with one); a row sums four embeddings.
- items (``u.item`` / ``movies.dat``): the film's genres, each weighted ``1/n`` for ``n`` genres,
  plus a one-hot release-year band (before 1960, the 1960s, 70s, 80s, 1990-94, then single years
  to 1998 and later, where MovieLens' films crowd); a film of unknown date has no year feature.

:func:`item_genre_flags` gives evaluate the films' genres alone, as binary flags (from these tables
or from a titles table), for the diversity of the recommended lists.

An id with no row in the side table (a user or film the metadata does not know) gets an all-zero
row: it is represented by its own embedding alone. The tables are small (one row per user or
film), so they are read with pandas on the driver; the ratings never are.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recspark.core import parquet_safety
from recspark.core.choices import SIDE_INFO_FORMATS
from recspark.core.constants import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.core.errors import BadInputError
from recspark.core.location import Location, shown
from recspark.core.storage import read_parquet
from recspark.data.titles import GENRES, ML100K_GENRES, read_titles

log = logging.getLogger(__name__)


# MovieLens 1M's age codes are the lower bounds of these bands; 100K's exact ages fall into them.
AGE_BANDS = (1, 18, 25, 35, 45, 50, 56)
AGE_NAMES = ("under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
GENDERS = ("F", "M")
ZIP_REGIONS = (*(str(d) for d in range(10)), "other")
YEAR_BANDS = (1960, 1970, 1980, 1990, 1995, 1996, 1997, 1998)
YEAR_NAMES = (
    "before 1960",
    "1960s",
    "1970s",
    "1980s",
    "1990-94",
    "1995",
    "1996",
    "1997",
    "1998 and later",
)
# ratings.dat's genre names: MovieLens 100K's without its "unknown".
ML1M_GENRES = ML100K_GENRES[1:]
ML1M_OCCUPATIONS = 21  # codes 0..20 in users.dat


@dataclass(frozen=True)
class FeatureTable:
    """Feature weights of every id of one side: ``ids`` (raw, as text) x ``names``."""

    ids: list[str]
    weights: np.ndarray
    names: tuple[str, ...]


@dataclass(frozen=True)
class SideFeatures:
    """Feature matrices aligned with the id maps; None for a side without features."""

    user: np.ndarray | None
    item: np.ndarray | None
    user_names: tuple[str, ...] = ()
    item_names: tuple[str, ...] = ()

    def spec(self) -> dict[str, int]:
        """The :func:`recspark.model.registry.build_model` arguments that size the feature
        tables."""
        return {
            "user_features": 0 if self.user is None else int(self.user.shape[1]),
            "item_features": 0 if self.item is None else int(self.item.shape[1]),
        }


def _one_hot(codes: np.ndarray, width: int) -> np.ndarray:
    matrix = np.zeros((len(codes), width), dtype=np.float32)
    matrix[np.arange(len(codes)), codes] = 1.0
    return matrix


def _user_weights(
    ages: np.ndarray,
    genders: pd.Series,
    occupations: np.ndarray,
    n_occupations: int,
    zips: pd.Series,
) -> np.ndarray:
    first = zips.fillna("").astype(str).str.strip().str[:1]
    zip_codes = np.where(first.str.isdigit(), pd.to_numeric(first, errors="coerce").fillna(10), 10)
    age_codes = np.searchsorted(AGE_BANDS, ages, side="right") - 1
    gender_codes = genders.str.upper().map({g: k for k, g in enumerate(GENDERS)})
    if gender_codes.isna().any():
        raise BadInputError(f"unknown gender codes {sorted(set(genders[gender_codes.isna()]))}")
    return np.hstack(
        [
            _one_hot(np.clip(age_codes, 0, len(AGE_BANDS) - 1), len(AGE_BANDS)),
            _one_hot(gender_codes.to_numpy(dtype=np.int64), len(GENDERS)),
            _one_hot(occupations, n_occupations),
            _one_hot(zip_codes.astype(np.int64), len(ZIP_REGIONS)),
        ]
    )


def _item_weights(flags: np.ndarray, years: np.ndarray) -> np.ndarray:
    """Genres weighted ``1/n`` beside a one-hot year band (no band where the year is NaN)."""
    known = ~np.isnan(years)
    bands = np.zeros((len(years), len(YEAR_NAMES)), dtype=np.float32)
    codes = np.searchsorted(YEAR_BANDS, years[known], side="right")
    bands[np.flatnonzero(known), codes] = 1.0
    return np.hstack([_genre_weights(flags), bands])


def _genre_weights(flags: np.ndarray) -> np.ndarray:
    counts = flags.sum(axis=1, keepdims=True)
    return (flags / np.maximum(counts, 1)).astype(np.float32)


def _require(path: Location) -> io.BytesIO:
    """The file's bytes (on any store), or a clear error when it is missing or is not text.

    A Parquet file is refused unread; its footer is checked first, so that one whose schema
    holds an extension type is named as such (:mod:`recspark.core.parquet_safety`).
    """
    if not path.is_file():
        raise BadInputError(
            f"side information file {path} not found: point model.side_info.path at the folder "
            "holding the MovieLens user and film tables"
        )
    data = path.read_bytes()
    if data[:4] == b"PAR1":
        parquet_safety.check_parquet(path)
        raise BadInputError(
            f"side information file {shown(str(path))} is Parquet: model.side_info reads "
            "MovieLens's text tables (u.user, u.item or users.dat, movies.dat)"
        )
    return io.BytesIO(data)


def read_movielens_100k(path: str | Path) -> tuple[FeatureTable, FeatureTable]:
    """(users, items) feature tables from ``u.user``, ``u.occupation`` and ``u.item``."""
    folder = Location(path)
    users = pd.read_csv(
        _require(folder / "u.user"),
        sep="|",
        header=None,
        dtype=str,
        names=["id", "age", "gender", "occupation", "zip"],
    )
    occupation_file = folder / "u.occupation"
    if occupation_file.is_file():
        vocabulary = [
            line.strip() for line in occupation_file.read_text().splitlines() if line.strip()
        ]
    else:
        vocabulary = sorted(users["occupation"].unique())
    position = {name: k for k, name in enumerate(vocabulary)}
    unknown = sorted(set(users["occupation"]) - set(position))
    if unknown:
        raise BadInputError(f"occupations {unknown} are not listed in {occupation_file}")
    user_weights = _user_weights(
        users["age"].astype(int).to_numpy(),
        users["gender"],
        users["occupation"].map(position).to_numpy(dtype=np.int64),
        len(vocabulary),
        users["zip"],
    )
    user_names = (
        tuple(f"age {a}" for a in AGE_NAMES)
        + tuple(f"gender {g}" for g in GENDERS)
        + tuple(f"occupation {o}" for o in vocabulary)
        + tuple(f"zip {z}" for z in ZIP_REGIONS)
    )
    items = pd.read_csv(
        _require(folder / "u.item"), sep="|", header=None, encoding="latin-1", dtype=str
    )
    genre_file = folder / "u.genre"
    flags = items.iloc[:, 5:].astype(int).to_numpy()
    genre_names = (
        [
            line.split("|")[0]
            for line in genre_file.read_text("latin-1").splitlines()
            if line.strip()
        ]
        if genre_file.is_file()
        else [f"genre {k}" for k in range(flags.shape[1])]
    )
    if len(genre_names) != flags.shape[1]:
        raise BadInputError(
            f"{genre_file} lists {len(genre_names)} genres, u.item has {flags.shape[1]}"
        )
    years = pd.to_datetime(items[2], format="%d-%b-%Y", errors="coerce").dt.year
    return (
        FeatureTable(list(users["id"].str.strip()), user_weights, user_names),
        FeatureTable(
            list(items[0].str.strip()),
            _item_weights(flags.astype(np.float32), years.to_numpy(dtype=np.float64)),
            tuple(f"genre {g}" for g in genre_names) + tuple(f"year {y}" for y in YEAR_NAMES),
        ),
    )


def read_movielens_1m(path: str | Path) -> tuple[FeatureTable, FeatureTable]:
    """(users, items) feature tables from ``users.dat`` and ``movies.dat``."""
    folder = Location(path)
    users = pd.read_csv(
        _require(folder / "users.dat"),
        sep="::",
        header=None,
        engine="python",
        dtype=str,
        names=["id", "gender", "age", "occupation", "zip"],
    )
    occupations = users["occupation"].astype(int).to_numpy()
    if occupations.min() < 0 or occupations.max() >= ML1M_OCCUPATIONS:
        raise BadInputError(f"occupation codes in users.dat must lie in 0..{ML1M_OCCUPATIONS - 1}")
    user_weights = _user_weights(
        users["age"].astype(int).to_numpy(),
        users["gender"],
        occupations,
        ML1M_OCCUPATIONS,
        users["zip"],
    )
    user_names = (
        tuple(f"age {a}" for a in AGE_NAMES)
        + tuple(f"gender {g}" for g in GENDERS)
        + tuple(f"occupation {k}" for k in range(ML1M_OCCUPATIONS))
        + tuple(f"zip {z}" for z in ZIP_REGIONS)
    )
    movies = pd.read_csv(
        _require(folder / "movies.dat"),
        sep="::",
        header=None,
        engine="python",
        encoding="latin-1",
        dtype=str,
        names=["id", "title", "genres"],
    )
    position = {g: k for k, g in enumerate(ML1M_GENRES)}
    flags = np.zeros((len(movies), len(ML1M_GENRES)), dtype=np.float32)
    for row, genres in enumerate(movies["genres"].fillna("")):
        for genre in filter(None, genres.split("|")):
            if genre in position:
                flags[row, position[genre]] = 1.0
    years = pd.to_numeric(movies["title"].str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")
    return (
        FeatureTable(list(users["id"].str.strip()), user_weights, user_names),
        FeatureTable(
            list(movies["id"].str.strip()),
            _item_weights(flags, years.to_numpy(dtype=np.float64)),
            tuple(f"genre {g}" for g in ML1M_GENRES) + tuple(f"year {y}" for y in YEAR_NAMES),
        ),
    )


READERS = {"movielens-100k": read_movielens_100k, "movielens-1m": read_movielens_1m}


def align(
    table: FeatureTable, index: pd.DataFrame, id_col: str, idx_col: str, rows: int
) -> np.ndarray:
    """``rows x features`` weights in index order; ids the table lacks get zero rows.

    Raw ids are matched as text, so an id map with integer ids matches the files' digits.
    """
    position = {raw: k for k, raw in enumerate(table.ids)}
    raw_ids = index[id_col].astype(str).str.strip().to_numpy()
    idx = index[idx_col].to_numpy(dtype=np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= rows):
        raise BadInputError(
            f"{idx_col} outside [0, {rows}): the id map does not match the manifest"
        )
    source = np.array([position.get(raw, -1) for raw in raw_ids], dtype=np.int64)
    weights = np.zeros((rows, table.weights.shape[1]), dtype=np.float32)
    known = source >= 0
    weights[idx[known]] = table.weights[source[known]]
    missing = int((~known).sum())
    if missing:
        log.warning(
            "side information: %d of %d ids in %s have no features", missing, len(idx), idx_col
        )
    return weights


def load_side_features(
    format: str,
    path: str | Path,
    prepared: str | Path | Location,
    *,
    n_users: int,
    n_items: int,
    users: bool = True,
    items: bool = True,
) -> SideFeatures:
    """Feature matrices for the id maps of the prepared run in ``prepared``.

    Parameters
    ----------
    format
        One of :data:`SIDE_INFO_FORMATS`.
    path
        The folder holding the MovieLens user and film tables.
    prepared
        The prepared run's folder (its ``user_index`` and ``item_index`` Parquet tables).
    n_users, n_items
        Table sizes from the manifest.
    users, items
        Which sides get features.
    """
    if format not in READERS:
        raise BadInputError(f"model.side_info.format {format!r}: choose one of {SIDE_INFO_FORMATS}")
    user_table, item_table = READERS[format](path)
    prepared_run = Location(prepared)
    user = item = None
    if users:
        index = read_parquet(prepared_run / "user_index", columns=[USER_ID, USER_IDX]).to_pandas()
        user = align(user_table, index, USER_ID, USER_IDX, n_users)
    if items:
        index = read_parquet(prepared_run / "item_index", columns=[ITEM_ID, ITEM_IDX]).to_pandas()
        item = align(item_table, index, ITEM_ID, ITEM_IDX, n_items)
    return SideFeatures(
        user=user,
        item=item,
        user_names=user_table.names if users else (),
        item_names=item_table.names if items else (),
    )


def item_genre_flags(
    prepared: str | Path,
    n_items: int,
    side_info_format: str | None = None,
    side_info_path: str | Path | None = None,
    titles_path: str | None = None,
) -> np.ndarray | None:
    """Binary ``n_items x genres`` flags in item index order, or None when nothing gives genres.

    Parameters
    ----------
    prepared
        The prepared run's folder (its ``item_index``).
    n_items
        Rows of the result (the manifest's item count); items without a known genre get zeros.
    side_info_format, side_info_path
        ``model.side_info``: the MovieLens film table's genre flags (its year bands are left out).
    titles_path
        ``recommend.titles_path``, used when there is no side information: the titles table's
        ``|``-joined genres (ML-1M's ``(no genres listed)`` is no genre).
    """
    if side_info_path is not None:
        format = side_info_format or "movielens-100k"
        if format not in READERS:
            raise BadInputError(
                f"side information format {format!r}: choose one of {SIDE_INFO_FORMATS}"
            )
        _, items = READERS[format](side_info_path)
        columns = [k for k, name in enumerate(items.names) if name.startswith("genre ")]
        table = FeatureTable(
            items.ids,
            (items.weights[:, columns] > 0).astype(np.float32),
            tuple(items.names[k] for k in columns),
        )
    elif titles_path is not None:
        titles = read_titles(titles_path)
        lists = titles[GENRES].fillna("").astype(str).str.split("|")
        names = sorted({g.strip() for row in lists for g in row} - {"", "(no genres listed)"})
        position = {name: k for k, name in enumerate(names)}
        flags = np.zeros((len(titles), len(names)), dtype=np.float32)
        for row, genres in enumerate(lists):
            for genre in genres:
                if genre.strip() in position:
                    flags[row, position[genre.strip()]] = 1.0
        table = FeatureTable([str(i).strip() for i in titles[ITEM_ID]], flags, tuple(names))
    else:
        return None
    if not table.names:
        return None
    index = read_parquet(Location(prepared) / "item_index", columns=[ITEM_ID, ITEM_IDX]).to_pandas()
    return align(table, index, ITEM_ID, ITEM_IDX, n_items)
