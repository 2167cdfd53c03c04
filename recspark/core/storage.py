"""Where every run's outputs live under ``paths.root``, and how they are published safely.

Layout (``D`` is the run date)::

    data/ratings/                 generate: the synthetic ratings table
    data/truth/                   generate: planted factors and biases
    prepared/D/                   prepare: train, validation, cold_start, quarantine,
                                  user_index, item_index, manifest.json
    models/D/                     train: model.pt, user_factors/, item_factors/, metrics.json, ...
    recommendations/run_date=D/   score: the table downstream reads
    evaluation/D/                 evaluate: evaluation.json and plots

Everything is first written under ``_staging/`` on the same filesystem and then moved into place
by a rename (:func:`publish`): a job killed midway leaves the previous output whole and no half
output visible, and re-running a date replaces its output whole. ``paths.root`` must be a
filesystem path that the driver and every executor see (local disk for ``local[*]``, a shared
mount on a cluster).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

SUCCESS = "_SUCCESS"
_DATE_DIR = re.compile(r"^(?:run_date=)?(\d{4}-\d{2}-\d{2})$")


def local_path(path: str | os.PathLike) -> Path:
    """Strip a ``file:`` scheme so a Spark-style URI can be handled with ``os``."""
    text = str(path)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif text.startswith("file:"):
        text = text[len("file:") :]
    return Path(text).absolute()


def uri(path: str | os.PathLike) -> str:
    """A ``file://`` URI for petastorm and Spark, which both accept it."""
    return local_path(path).as_uri()


class Layout:
    """Paths of one root; a stage asks here rather than joining strings itself."""

    def __init__(self, root: str | os.PathLike):
        self.root = local_path(root)

    @property
    def ratings(self) -> Path:
        return self.root / "data" / "ratings"

    @property
    def truth(self) -> Path:
        return self.root / "data" / "truth"

    def prepared(self, run_date: dt.date | str) -> Path:
        return self.root / "prepared" / str(run_date)

    def model(self, run_date: dt.date | str) -> Path:
        return self.root / "models" / str(run_date)

    @property
    def recommendations(self) -> Path:
        return self.root / "recommendations"

    def recommendations_partition(self, run_date: dt.date | str) -> Path:
        return self.recommendations / f"run_date={run_date}"

    def evaluation(self, run_date: dt.date | str) -> Path:
        return self.root / "evaluation" / str(run_date)

    @property
    def checkpoints(self) -> Path:
        return self.root / "_checkpoints"

    def staging(self, name: str) -> Path:
        """A fresh folder under ``_staging`` on the same filesystem as the outputs."""
        path = self.root / "_staging" / f"{name}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path


def published_dates(folder: str | os.PathLike) -> list[str]:
    """Run dates with a complete (``_SUCCESS``-marked) output under ``folder``, oldest first."""
    base = local_path(folder)
    if not base.is_dir():
        return []
    dates = []
    for child in base.iterdir():
        match = _DATE_DIR.match(child.name)
        if match and (child / SUCCESS).exists():
            dates.append(match.group(1))
    return sorted(dates)


def latest_date(
    folder: str | os.PathLike, before: dt.date | str | None = None, upto: dt.date | str | None = None
) -> str | None:
    """The newest published run date under ``folder``, optionally strictly before or up to a date."""
    dates = published_dates(folder)
    if before is not None:
        dates = [d for d in dates if d < str(before)]
    if upto is not None:
        dates = [d for d in dates if d <= str(upto)]
    return dates[-1] if dates else None


def mark_success(folder: str | os.PathLike) -> None:
    (local_path(folder) / SUCCESS).touch()


def publish(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a finished staging folder into place, replacing any previous one whole.

    The new folder gets a ``_SUCCESS`` marker before it becomes visible. The old folder is first
    renamed aside, so at no moment does ``final`` hold a mix of old and new files; it is deleted
    only after the new one is in place.
    """
    source, target = local_path(staging), local_path(final)
    mark_success(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    retired = None
    if target.exists():
        retired = target.parent / f".retired-{target.name}-{uuid.uuid4().hex[:8]}"
        os.rename(target, retired)
    try:
        os.rename(source, target)
    except OSError:
        if retired is not None:
            os.rename(retired, target)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
    return target


@contextlib.contextmanager
def staged(layout: Layout, final: str | os.PathLike, name: str) -> Iterator[Path]:
    """Yield a staging folder; publish it to ``final`` on success, delete it on failure."""
    folder = layout.staging(name)
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    publish(folder, final)


def clean_leftovers(layout: Layout, final: str | os.PathLike, name: str) -> list[Path]:
    """Tidy what a killed run of the same output left behind, before a new run starts.

    Removes ``_staging/NAME-*`` folders (a job killed before publishing) and ``.retired-*`` copies
    of ``final``; if a job died between publish's two renames, so that ``final`` is missing while a
    retired copy exists, the newest retired copy is first moved back. Call it only where no other
    run of the same output can be in progress (the nightly lock, or one scheduler entry per date).
    Returns the removed paths.
    """
    target = local_path(final)
    removed: list[Path] = []
    retired = sorted(
        target.parent.glob(f".retired-{target.name}-*"), key=lambda path: path.stat().st_mtime
    ) if target.parent.is_dir() else []
    if retired and not target.exists():
        os.rename(retired.pop(), target)
    stale = retired + sorted((layout.root / "_staging").glob(f"{name}-*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def write_json(path: str | os.PathLike, data: Any) -> None:
    target = local_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(local_path(path).read_text())


def file_digest(path: str | os.PathLike, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(local_path(path), "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet folder, from its files' footers (no data read)."""
    return sum(pq.ParquetFile(file).metadata.num_rows for file in sorted(path.glob("*.parquet")))
