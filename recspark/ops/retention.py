"""Keep the last N runs' outputs under ``paths.root`` and remove older ones whole.

A run date's outputs are its prepared tables, model, evaluation report and recommendations
partition. Retention keeps the ``keep_runs`` newest run dates that have a published (``_SUCCESS``)
output in any of those folders, plus any dates the caller protects (the run in progress), and
removes the rest. Each folder is first taken out of readers' sight whole (renamed to a hidden
``.retired-*`` name, which Spark skips; on an object store its ``_SUCCESS`` marker is deleted
first) and then deleted, so no reader sees a half-deleted partition. The run history is never
pruned: it is small and it is the audit trail.
"""

from __future__ import annotations

import uuid

from recspark.core.location import Location
from recspark.core.storage import SUCCESS, Layout, published_dates


def run_folders(layout: Layout, run_date: str) -> dict[str, Location]:
    """Every folder one run date owns, by kind."""
    return {
        "prepared": layout.prepared(run_date),
        "model": layout.model(run_date),
        "evaluation": layout.evaluation(run_date),
        "recommendations": layout.recommendations_partition(run_date),
    }


def retire(path: Location) -> None:
    """Take ``path`` out of readers' sight at once, then delete it.

    Locally (and on HDFS) it is first renamed to a hidden name; on an object store, where a
    rename is a copy, its ``_SUCCESS`` marker goes first, which readers require.
    """
    if not path.exists():
        return
    if not path.is_local:
        (path / SUCCESS).unlink()
        path.rmtree()
        return
    aside = path.parent / f".retired-{path.name}-{uuid.uuid4().hex[:8]}"
    path.move_to(aside)
    aside.rmtree()


def run_dates(layout: Layout) -> list[str]:
    """Run dates with a published output in any per-date folder, oldest first."""
    folders = [
        layout.root / "prepared",
        layout.root / "models",
        layout.root / "evaluation",
        layout.recommendations,
    ]
    return sorted({date for folder in folders for date in published_dates(folder)})


def prune_runs(
    layout: Layout,
    keep_runs: int,
    protect: set[str] | frozenset[str] = frozenset(),
    extra_dates: list[str] | tuple[str, ...] = (),
    keep_partitions: bool = False,
) -> list[str]:
    """Remove every run date but the ``keep_runs`` newest and the protected; return those removed.

    Parameters
    ----------
    layout
        The root's layout.
    keep_runs
        How many of the newest run dates to keep (at least 1).
    protect
        Run dates never removed here, e.g. the run that is publishing now (a backfill older than
        the window is kept until a later run prunes it).
    extra_dates
        Dates published elsewhere (a Delta recommendations table's), counted as run dates.
    keep_partitions
        Leave ``recommendations/run_date=D`` alone: a Delta table's files are removed by its
        own ``DELETE`` and ``VACUUM`` (:meth:`recspark.serve.tables.OutputTable.drop_dates`).
    """
    if keep_runs < 1:
        raise ValueError("keep_runs must be at least 1: the last published run is always kept")
    dates = sorted(set(run_dates(layout)) | set(extra_dates))
    keep = set(dates[-keep_runs:]) | {str(date) for date in protect}
    removed = [date for date in dates if date not in keep]
    for date in removed:
        # The recommendations partition goes first: downstream stops seeing the date before its
        # model and tables disappear.
        folders = run_folders(layout, date)
        for kind in ("recommendations", "evaluation", "model", "prepared"):
            if not (keep_partitions and kind == "recommendations"):
                retire(folders[kind])
    return removed


def prune_folder(folder: Location, keep: int) -> list[str]:
    """Keep the ``keep`` newest entries of ``folder`` by name (names start with the date)."""
    entries = [path for path in folder.iterdir() if not path.name.startswith(".")]
    removed = entries[: max(0, len(entries) - keep)]
    for path in removed:
        retire(path)
    return [path.name for path in removed]
