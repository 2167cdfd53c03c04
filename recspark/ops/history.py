"""The run-history table: one JSON-lines file per nightly run under ``<paths.root>/history/``.

Every nightly run that got as far as taking the lock leaves one record: its run date, status
(``published``, ``rejected`` by the quality gate, or ``failed``), model version, metrics, counts
and timestamps. Downstream reads the folder as a table (``spark.read.json(ROOT + "/history")`` or
:func:`read_history`) and keeps ``status == "published"`` for the runs whose recommendations are
live; a date run twice has two records and the later ``finished_at`` is the one in force.

A record is written to a hidden temporary file in the same folder, flushed to disk and renamed
into place, so a reader sees a whole record or none, and concurrent writers never share a file.
Spark and pandas skip names that start with ``.``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from recspark.core.storage import local_path

PUBLISHED = "published"
REJECTED = "rejected"
FAILED = "failed"
STATUSES = (PUBLISHED, REJECTED, FAILED)


def history_folder(root: str | os.PathLike) -> Path:
    return local_path(root) / "history"


def append_record(root: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write one run's record as its own file and return its path.

    Parameters
    ----------
    root
        ``paths.root``.
    record
        Must hold ``run_id``, ``run_date`` and ``status`` (one of :data:`STATUSES`).
    """
    for key in ("run_id", "run_date", "status"):
        if not record.get(key):
            raise ValueError(f"a history record needs {key!r}")
    if record["status"] not in STATUSES:
        raise ValueError(f"history status must be one of {STATUSES}, got {record['status']!r}")
    folder = history_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{record['run_date']}_{record['run_id']}.json"
    temporary = folder / f".{final.name}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, final)
    return final


def read_history(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record, oldest run date first and, within a date, in order of ``finished_at``."""
    folder = history_folder(root)
    if not folder.is_dir():
        return []
    records = []
    for path in folder.glob("*.json"):
        if path.name.startswith((".", "_")):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return sorted(records, key=lambda r: (str(r["run_date"]), str(r.get("finished_at") or "")))


def latest_record(
    records: list[dict[str, Any]],
    status: str | None = PUBLISHED,
    run_date: str | None = None,
    before: str | None = None,
    upto: str | None = None,
) -> dict[str, Any] | None:
    """The newest record with ``status`` (any when None), for ``run_date``, strictly before
    ``before`` or up to ``upto``; "newest" is the latest run date, then the latest ``finished_at``.
    """
    chosen = [
        r
        for r in records
        if (status is None or r["status"] == status)
        and (run_date is None or str(r["run_date"]) == str(run_date))
        and (before is None or str(r["run_date"]) < str(before))
        and (upto is None or str(r["run_date"]) <= str(upto))
    ]
    return chosen[-1] if chosen else None
