"""The run-history table: one JSON-lines file per nightly run under ``<paths.root>/history/``.

Every nightly run that got as far as taking the lock leaves one record: its run date, status
(``published``, ``rejected`` by the quality gate, or ``failed``), model version, metrics, counts
and timestamps, and its MLflow run id when tracking was on.
Downstream reads the folder as a table (``spark.read.json(ROOT + "/history")`` or
:func:`read_history`) and keeps ``status == "published"`` for the runs whose recommendations are
live; a date run twice has two records and the later ``finished_at`` is the one in force.

A record is written to a hidden temporary file in the same folder, flushed to disk and renamed
into place, so a reader sees a whole record or none, and concurrent writers never share a file.
Spark and pandas skip names that start with ``.``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from recspark.core.errors import BadInputError
from recspark.core.location import Location
from recspark.ops.gate import GateResult

RunStatus = Literal["published", "rejected", "failed"]
PUBLISHED: RunStatus = "published"
REJECTED: RunStatus = "rejected"
FAILED: RunStatus = "failed"
STATUSES = (PUBLISHED, REJECTED, FAILED)
# Keys a record holds only when they apply (a recovered or rolled-back run).
_WHEN_SET = ("recovered", "recovered_by", "rejected_outputs", "mlflow_run_id")


class HistoryRecord(BaseModel):
    """One nightly run's record, as written to ``history/`` and read back.

    Keys a record lacks (one written by an older version) read as their defaults; keys this version
    does not know are kept.
    """

    model_config = ConfigDict(extra="allow")

    run_id: str = Field(min_length=1)
    run_date: str = Field(min_length=1)
    status: RunStatus
    model_version: str | None = None
    # The stages' numeric figures (train's, then evaluate's); booleans stay booleans.
    metrics: dict[str, bool | int | float | None] = Field(default_factory=dict)
    counts: dict[str, int | None] = Field(default_factory=dict)
    gate: GateResult | None = None
    warm_start: bool | None = None
    warm_start_from: str | None = None
    stage: str | None = None  # the stage the run had reached
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    input_fingerprint: str | None = None
    settings_digest: str | None = None
    host: str | None = None
    pid: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    recovered: bool | None = None  # True: a later run found it committed and recorded it
    recovered_by: str | None = None  # the run that recovered this one after it died
    rejected_outputs: str | None = None  # where a rolled-back run's candidate outputs were kept
    mlflow_run_id: str | None = None  # the run's MLflow run (tracking.uri), when tracked

    @model_serializer(mode="wrap")
    def _applicable_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for key in _WHEN_SET:
            if data.get(key) is None:
                data.pop(key, None)
        return data


def history_folder(root: str | os.PathLike | Location) -> Location:
    return Location(root) / "history"


def record_path(root: str | os.PathLike | Location, record: HistoryRecord) -> Location:
    """Where :func:`append_record` writes ``record``: one file per run."""
    return history_folder(root) / f"{record.run_date}_{record.run_id}.json"


def append_record(root: str | os.PathLike | Location, record: HistoryRecord) -> Location:
    """Write one run's record as its own file and return its path.

    Parameters
    ----------
    root
        ``paths.root``.
    record
        The run's record.
    """
    final = record_path(root, record)
    final.write_text(
        json.dumps(record.model_dump(mode="json", fallback=str), sort_keys=True) + "\n"
    )
    return final


def read_history(root: str | os.PathLike | Location) -> list[HistoryRecord]:
    """Every record, oldest run date first and, within a date, in order of ``finished_at``.

    Raises
    ------
    BadInputError
        When a file of the folder is not a history record.
    """
    folder = history_folder(root)
    records = []
    for path in folder.glob("*.json"):
        if path.name.startswith((".", "_")):
            continue
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                records.append(HistoryRecord.model_validate_json(line))
            except ValidationError as error:
                raise BadInputError(
                    f"{path} is not a nightly history record ({error.errors()[0]['msg']}): move it "
                    f"out of {folder}, which holds only the records nightly writes"
                ) from None
    return sorted(records, key=lambda r: (r.run_date, r.finished_at or ""))


def latest_record(
    records: list[HistoryRecord],
    status: RunStatus | None = PUBLISHED,
    run_date: str | None = None,
    before: str | None = None,
    upto: str | None = None,
) -> HistoryRecord | None:
    """The newest record with ``status`` (any when None), for ``run_date``, strictly before
    ``before`` or up to ``upto``; "newest" is the latest run date, then the latest ``finished_at``.
    """
    chosen = [
        r
        for r in records
        if (status is None or r.status == status)
        and (run_date is None or r.run_date == str(run_date))
        and (before is None or r.run_date < str(before))
        and (upto is None or r.run_date <= str(upto))
    ]
    return chosen[-1] if chosen else None
