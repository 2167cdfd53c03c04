"""Where every run's outputs live under ``paths.root``, and how they are published safely.

Layout (``D`` is the run date)::

    data/ratings/                 generate: the synthetic ratings table
    data/truth/                   generate: planted factors and biases
    prepared/D/                   prepare: train, validation, cold_start, quarantine,
                                  user_index, item_index, manifest.json
    models/D/                     train: model.pt, user_factors/, item_factors/, metrics.json, ...
    recommendations/run_date=D/   score: the table downstream reads (Parquet; or a Delta table)
    evaluation/D/                 evaluate: evaluation.json and plots

``paths.root`` is a local folder or a URI on a cluster's storage (see
:mod:`recspark.core.location`); every path here is a :class:`~recspark.core.location.Location`.
Everything is first written under ``_staging/`` on the same filesystem and then moved into place
(:func:`publish`), the folder's ``_SUCCESS`` marker last: a job killed midway leaves the previous
output whole and no half output visible, and re-running a date replaces its output whole. On a
local disk or HDFS the move is a rename. Object stores have no rename: the move copies the files
server-side (several at a time), the marker after all the others, so a reader that requires
``_SUCCESS`` (as recspark's readers do, and as downstream Parquet readers must) never sees a part;
a publish killed in that window is rolled back by :func:`clean_leftovers` at the next run. What
keeps that cheap is few files, each costing a handful of requests to write, commit and copy:
tables are written as few, large files, and Spark commits them once on an object store
(:mod:`recspark.core.s3_commit`). A Delta table (``score.table_format: delta``) needs none of
this: its log commits a date atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from recspark.core import parquet_safety
from recspark.core.location import Location

SUCCESS = "_SUCCESS"
_DATE_DIR = re.compile(r"^(?:run_date=)?(\d{4}-\d{2}-\d{2})$")

Where = str | os.PathLike | Location


class Layout:
    """Paths of one root; a stage asks here rather than joining strings itself."""

    def __init__(self, root: Where):
        self.root = Location(root)

    @property
    def ratings(self) -> Location:
        return self.root / "data" / "ratings"

    @property
    def truth(self) -> Location:
        return self.root / "data" / "truth"

    def prepared(self, run_date: dt.date | str) -> Location:
        return self.root / "prepared" / str(run_date)

    def model(self, run_date: dt.date | str) -> Location:
        return self.root / "models" / str(run_date)

    @property
    def recommendations(self) -> Location:
        return self.root / "recommendations"

    def recommendations_partition(self, run_date: dt.date | str) -> Location:
        return self.recommendations / f"run_date={run_date}"

    def evaluation(self, run_date: dt.date | str) -> Location:
        return self.root / "evaluation" / str(run_date)

    @property
    def checkpoints(self) -> Location:
        return self.root / "_checkpoints"

    def staging(self, name: str) -> Location:
        """A fresh folder under ``_staging`` on the same filesystem as the outputs."""
        path = self.root / "_staging" / f"{name}-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path


def published_dates(folder: Where) -> list[str]:
    """Run dates with a complete (``_SUCCESS``-marked) output under ``folder``, oldest first."""
    dates = []
    for child in Location(folder).iterdir():
        match = _DATE_DIR.match(child.name)
        if match and (child / SUCCESS).exists():
            dates.append(match.group(1))
    return sorted(dates)


def latest_date(
    folder: Where, before: dt.date | str | None = None, upto: dt.date | str | None = None
) -> str | None:
    """The newest published run date under ``folder``, optionally before or up to a date."""
    dates = published_dates(folder)
    if before is not None:
        dates = [d for d in dates if d < str(before)]
    if upto is not None:
        dates = [d for d in dates if d <= str(upto)]
    return dates[-1] if dates else None


def mark_success(folder: Where) -> None:
    """Write the ``_SUCCESS`` marker, holding a token unique to this publish."""
    token = f"{dt.datetime.now(dt.UTC).isoformat()} {uuid.uuid4().hex}\n"
    (Location(folder) / SUCCESS).write_text(token)


def publish_token(folder: Where) -> str | None:
    """The token of a folder's ``_SUCCESS`` marker: each publish writes a new one, so it changes
    whenever a new folder is put in place (on any store); None when nothing is published."""
    try:
        return (Location(folder) / SUCCESS).read_text().strip() or None
    except FileNotFoundError:
        return None


def publish(staging: Where, final: Where) -> Location:
    """Move a finished staging folder into place, replacing any previous one whole.

    The new folder gets a ``_SUCCESS`` marker, moved last. The old folder first loses its marker
    and is moved aside, so at no moment does ``final`` hold a marked mix of old and new files; it
    is deleted only after the new one is in place.
    """
    source, target = Location(staging), Location(final)
    mark_success(source)
    retired = None
    if target.exists():
        retired = target.parent / f".retired-{target.name}-{uuid.uuid4().hex[:8]}"
        if not target.is_local:
            (target / SUCCESS).unlink()
        target.move_to(retired, last=SUCCESS)
    try:
        source.move_to(target, last=SUCCESS)
    except BaseException:
        if retired is not None and not (target / SUCCESS).exists():
            target.rmtree()
            retired.move_to(target, last=SUCCESS)
        raise
    if retired is not None:
        retired.rmtree()
    return target


@contextlib.contextmanager
def staged(layout: Layout, final: Where, name: str) -> Iterator[Location]:
    """Yield a staging folder; publish it to ``final`` on success, delete it on failure."""
    folder = layout.staging(name)
    try:
        yield folder
    except BaseException:
        folder.rmtree()
        raise
    publish(folder, final)


def clean_leftovers(layout: Layout, final: Where, name: str) -> list[Location]:
    """Tidy what a killed run of the same output left behind, before a new run starts.

    Removes ``_staging/NAME-*`` folders (a job killed before publishing) and ``.retired-*`` copies
    of ``final``. If a job died inside :func:`publish`, so that ``final`` is missing or unmarked
    (a copy cut short on an object store) while a retired copy exists, the newest retired copy is
    first moved back. Call it only where no other run of the same output can be in progress (the
    nightly lock, or one scheduler entry per date). Returns the removed paths.
    """
    target = Location(final)
    removed: list[Location] = []
    retired = sorted(target.parent.glob(f".retired-{target.name}-*"), key=Location.mtime)
    if retired and not (target / SUCCESS).exists():
        target.rmtree()
        retired.pop().move_to(target, last=SUCCESS)
    stale = retired + (layout.root / "_staging").glob(f"{name}-*")
    for path in stale:
        path.rmtree()
        removed.append(path)
    return removed


def write_json(path: Where, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    Location(path).write_text(text)


def read_json(path: Where) -> Any:
    return json.loads(Location(path).read_text())


def file_digest(path: Where, length: int = 12) -> str:
    digest = hashlib.sha256()
    with Location(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def parquet_files(folder: Where) -> list[Location]:
    """The ``*.parquet`` files of a folder written by Spark or pyarrow (one level), sorted."""
    return Location(folder).glob("*.parquet")


def parquet_rows(folder: Where) -> int:
    """Rows of a Parquet folder, from its files' footers (no data read)."""
    total = 0
    for file in parquet_files(folder):
        with file.open("rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def read_parquet(folder: Where, columns: list[str] | None = None):
    """A small Parquet folder (a model's factors, an index) as one pyarrow table, on any store."""
    import pyarrow as pa

    location = Location(folder)
    files = parquet_files(location)
    if not files:
        raise FileNotFoundError(f"no Parquet files in {location}")
    parquet_safety.check_parquet_files(files)  # each footer before any row: no crafted types
    tables = [
        pq.read_table(file.fs_path, columns=columns, filesystem=file.filesystem) for file in files
    ]
    return pa.concat_tables(tables)
