"""What nightly's summary line holds: a run that published, or a date already published.

The summary is the JSON object the nightly command prints (outputs, counts, metrics and the
``nightly`` facts: decision, gate, stage timings, recovery, retention, a lock taken over), so its
parts are plain dicts; they are built from the typed journal and history records here, apart from
the run's own logic in :mod:`recspark.ops.nightly`.
"""

from __future__ import annotations

import logging
from typing import Any

from recspark.core.lock_record import LockRecord
from recspark.core.storage import Layout
from recspark.ops import history
from recspark.ops.history import HistoryRecord
from recspark.ops.journal import NightlyJournal

log = logging.getLogger(__name__)


def published_summary(
    layout: Layout,
    journal: NightlyJournal,
    record: HistoryRecord,
    recovered: HistoryRecord | None,
    stale_lock: LockRecord | None,
    removed: list[str],
    retention_error: str | None,
) -> dict[str, Any]:
    """The summary of a run that published: outputs, counts, metrics (with the gate's figures)
    and the ``nightly`` facts (decision, gate, stage timings, recovery, retention)."""
    run_date = journal.run_date
    gate = journal.gate
    metrics: dict[str, Any] = dict(record.metrics)
    metrics["model_version"] = record.model_version
    if gate is not None:
        metrics.update(gate.figures())
    evaluated = journal.summaries.get("evaluate")
    outputs = {
        "recommendations": str(layout.recommendations),
        "partition": str(layout.recommendations_partition(run_date)),
        "model": str(layout.model(run_date)),
        "prepared": str(layout.prepared(run_date)),
        "report": evaluated.outputs.get("report") if evaluated is not None else None,
        "history": str(history.record_path(layout.root, record)),
    }
    return {
        "outputs": outputs,
        "counts": {**record.counts, "removed_runs": len(removed)},
        "metrics": metrics,
        "nightly": {
            "decision": history.PUBLISHED,
            "run_id": journal.run_id,
            "warm_start": journal.warm_start,
            "warm_start_from": record.warm_start_from,
            "gate": gate.model_dump(mode="json") if gate is not None else None,
            "stage_seconds": journal.stage_seconds,
            "removed_run_dates": removed,
            "retention_error": retention_error,
            "recovered": brief(recovered),
            "stale_lock": _holder(stale_lock),
        },
    }


def skipped_summary(
    layout: Layout,
    record: HistoryRecord,
    recovered: HistoryRecord | None,
    stale_lock: LockRecord | None,
) -> dict[str, Any]:
    """The summary of a date already published from the same input and settings."""
    run_date = record.run_date
    log.info("%s is already published from the same input and settings: nothing to do", run_date)
    return {
        "outputs": {
            "recommendations": str(layout.recommendations),
            "partition": str(layout.recommendations_partition(run_date)),
            "model": str(layout.model(run_date)),
        },
        "counts": record.counts,
        "metrics": {**record.metrics, "model_version": record.model_version},
        "nightly": {
            "decision": "skipped",
            "reason": f"{run_date} was published by run {record.run_id} from the same input "
            "files and settings; --set nightly.force=true runs it again",
            "run_id": record.run_id,
            "recovered": brief(recovered),
            "stale_lock": _holder(stale_lock),
        },
    }


def _holder(record: LockRecord | None) -> dict[str, Any] | None:
    """The summary's account of a lock taken over from a dead holder: its record as written."""
    return None if record is None else record.as_read


def brief(record: HistoryRecord | None) -> dict[str, Any] | None:
    """The summary's account of a recovered run."""
    if record is None:
        return None
    return {
        "run_id": record.run_id,
        "run_date": record.run_date,
        "status": record.status,
        "stage": record.stage,
        "error": record.error,
    }
