"""The gate on bad rows: counting rows by reason, stopping a run with too many, and where the
quarantined rows are written (beside the run, or under ``prepared/_rejected/`` for a stopped one).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pyspark.sql import DataFrame

from recspark.core.constants import REASON
from recspark.core.errors import BadInputError
from recspark.core.location import Location
from recspark.core.s3_commit import staging_writer
from recspark.core.storage import Layout, staged
from recspark.data.reasons import (
    NON_NUMERIC_ITEM,
    NON_NUMERIC_USER,
    NON_UTF8_ITEM,
    NON_UTF8_USER,
    REASONS,
)

QUARANTINE = "quarantine"
# prepared/_rejected/D/quarantine: the bad rows of a run stopped by input.max_bad_fraction. The
# leading underscore keeps it out of the run dates (and out of what Spark reads under prepared/).
REJECTED = "_rejected"


@dataclass(frozen=True)
class RowCounts:
    """How many input rows are good, and how many were quarantined for each reason."""

    good: int
    by_reason: dict[str, int]  # every reason of REASONS, zeros included

    @property
    def bad(self) -> int:
        return sum(self.by_reason.values())

    @property
    def total(self) -> int:
        return self.good + self.bad


def count_rows(checked: DataFrame) -> RowCounts:
    """Count the rows of ``checked`` by ``reason`` (one small aggregate).

    Raises
    ------
    BadInputError
        When a row carries a reason that is not one of :data:`REASONS`.
    """
    counted = {row[REASON]: row["count"] for row in checked.groupBy(REASON).count().collect()}
    good = counted.pop(None, 0)
    unknown = set(counted) - set(REASONS)
    if unknown:
        raise BadInputError(f"rows quarantined for unknown reasons {sorted(unknown)}")
    return RowCounts(good, {reason: counted.get(reason, 0) for reason in REASONS})


def rejected_folder(layout: Layout, run_date: dt.date | str) -> Location:
    """``prepared/_rejected/D``: where a run stopped by its bad rows leaves its quarantine."""
    return layout.root / "prepared" / REJECTED / str(run_date)


def write_quarantine(bad: DataFrame, folder: Location, rows: int, rows_per_file: int) -> None:
    """The quarantined rows, with their raw line and parsed fields beside the reason."""
    files = max(1, math.ceil(rows / rows_per_file))
    path = folder / QUARANTINE
    staging_writer(bad.coalesce(files), path).parquet(str(path))


def _bad_rows_message(counts: RowCounts, max_bad_fraction: float, where: Location) -> str:
    found = {reason: n for reason, n in counts.by_reason.items() if n}
    hints = []
    if found.get(NON_NUMERIC_USER) or found.get(NON_NUMERIC_ITEM):
        hints.append(
            "ids were read as integers because most are: set input.id_type: string if they are text"
        )
    if found.get(NON_UTF8_USER) or found.get(NON_UTF8_ITEM):
        hints.append("ids that are not UTF-8: convert the input to UTF-8")
    return (
        f"{counts.bad} of {counts.total} rows are bad ({counts.bad / counts.total:.2%}, above "
        f"input.max_bad_fraction={max_bad_fraction}): {found}. "
        + "".join(f"({hint}) " for hint in hints)
        + f"Nothing was published for this run date; the bad rows are in {where / QUARANTINE} "
        "with their reasons. Fix the input or raise input.max_bad_fraction"
    )


def gate_bad_rows(
    counts: RowCounts,
    bad: DataFrame,
    *,
    max_bad_fraction: float,
    path: str,
    layout: Layout,
    run_date: dt.date | str,
    rows_per_file: int,
) -> None:
    """Stop a run with no rows, too many bad rows, or no good row.

    Above ``max_bad_fraction`` the quarantine is still published, whole, to
    :func:`rejected_folder` (replacing an earlier rejected attempt of the date) and the error
    says where; nothing else of the date is written, so the date's earlier prepared run stays.

    Raises
    ------
    BadInputError
        With the counts by reason.
    """
    if counts.total == 0:
        raise BadInputError(f"input {path} has no rows")
    if counts.bad / counts.total > max_bad_fraction:
        where = rejected_folder(layout, run_date)
        with staged(layout, where, f"rejected-{run_date}") as folder:
            write_quarantine(bad, folder, counts.bad, rows_per_file)
        raise BadInputError(_bad_rows_message(counts, max_bad_fraction, where))
    if counts.good == 0:
        raise BadInputError(f"input {path} has no good rows: {counts.by_reason}")
