"""nightly's logic: one run date as a recoverable unit, apart from the stages it runs.

:mod:`recspark.commands.nightly` calls the stages (prepare, train, evaluate, score) and, around
them, what lives here: the journal of the run in flight, setting the date's outputs aside and
putting them back, recovery of a run that died (roll back before score's commit, roll forward
after it), the history record, the check that a date is already published from the same input and
settings and retention. What the summary line holds is built in
:mod:`recspark.ops.nightly_summary`.

This module orchestrates stages, so the few functions that derive the stages' settings
(:func:`input_fingerprint`, :func:`settings_digest`, :func:`stage_config`) take the whole
:class:`Config`: they hand it on, or digest all of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
from typing import TYPE_CHECKING

from recspark.core.config import Config
from recspark.core.errors import QualityGateError
from recspark.core.storage import SUCCESS, Layout, clean_leftovers, write_json
from recspark.data.inputs import ratings_path
from recspark.data.listing import fingerprint
from recspark.data.quarantine import REJECTED
from recspark.model.published import published_version
from recspark.ops import history, retention
from recspark.ops.gate import GateResult
from recspark.ops.history import HistoryRecord, RunStatus
from recspark.ops.journal import NightlyJournal, NightlyState, StageReport

# The summary line is built in its own module; commands.nightly reaches it through this one.

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from recspark.serve.tables import OutputTable

log = logging.getLogger(__name__)

# Outputs of a date that are set aside before a run and restored if it does not publish; the
# recommendations partition is not among them: score replaces it atomically, and only after the
# gate.
RESTORABLE = ("prepared", "model", "evaluation")
# The history record's counts, by the stage summary that reports them.
_PREPARED_COUNTS = ("users", "items", "train", "validation", "cold_start", "quarantined")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def input_fingerprint(config: Config) -> str:
    """The digest of the input files (and validation and test files) a run of ``config`` reads."""
    paths = [ratings_path(config.input, config.paths.root)]
    paths += [p for p in (config.input.validation_path, config.input.test_path) if p]
    return fingerprint(paths)


def settings_digest(config: Config) -> str:
    """A digest of every setting that shapes the output (not Spark tuning, not nightly's own,
    not where runs are logged, not ``score.model``, which nightly does not read)."""
    settings = config.model_dump(
        mode="json",
        exclude={
            "spark": True,
            "tracking": True,
            "score": {"model"},
            "nightly": {"force", "keep_runs", "lock_stale_hours"},
        },
    )
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def stage_config(config: Config) -> Config:
    """The config the stages run with: ``train.warm_start`` follows ``nightly.warm_start``, and
    ``train.allow_worse`` is on.

    Inside nightly the quality gate is the judge of a candidate (against the last published run,
    ``nightly.max_rmse``/``min_ndcg`` for a first run), and a rejected candidate is kept under
    ``_nightly/rejected/`` for a person to look at: train must hand it over rather than refuse it.
    Score scores that candidate, whatever ``score.model`` says.
    """
    return config.model_copy(
        update={
            "train": config.train.model_copy(
                update={"warm_start": config.nightly.warm_start, "allow_worse": True}
            ),
            # nightly scores its own candidate, never a registered model.
            "score": config.score.model_copy(update={"model": None}),
        }
    )


# -- the run ------------------------------------------------------------------------------------


def start_journal(
    layout: Layout,
    state: NightlyState,
    *,
    run_id: str,
    run_date: str,
    input_digest: str,
    settings: str,
    warm_start: bool,
    mlflow_run_id: str | None = None,
) -> NightlyJournal:
    """Write the journal of a new run, before it touches any output, and return it;
    ``mlflow_run_id`` (its MLflow run, when tracked) is kept for the history record."""
    folders = retention.run_folders(layout, run_date)
    journal = NightlyJournal(
        run_id=run_id,
        run_date=run_date,
        stage="setting-aside",
        started_at=_now(),
        host=socket.gethostname(),
        pid=os.getpid(),
        input_fingerprint=input_digest,
        settings_digest=settings,
        warm_start=warm_start,
        stashed={kind: folders[kind].exists() for kind in RESTORABLE},
        partition_before=state.table.identity(run_date),
    )
    if mlflow_run_id:  # an extra key of the journal, present only when tracked
        setattr(journal, "mlflow_run_id", mlflow_run_id)  # noqa: B010  (not a declared field)
    state.write_journal(journal)
    return journal


def set_aside(layout: Layout, state: NightlyState, journal: NightlyJournal) -> None:
    """Move the date's current outputs into the run's stash, as the journal says.

    Only once the journal names them: whatever happens from here, recovery can put them back.
    """
    folders = retention.run_folders(layout, journal.run_date)
    stash = state.stash(journal.run_id)
    for kind in RESTORABLE:
        if journal.stashed.get(kind):
            folders[kind].move_to(stash / kind, last=SUCCESS)


def record_gate(
    layout: Layout, state: NightlyState, journal: NightlyJournal, gate: GateResult
) -> None:
    """Journal the gate's decision; raise :class:`QualityGateError` when it failed."""
    journal.gate, journal.stage = gate, "gate"
    state.write_journal(journal)
    if not gate.passed:
        raise QualityGateError(
            f"quality gate: {gate.reason}. Nothing was published for {journal.run_date}: the "
            "recommendations table keeps its last good partitions; the candidate is kept in "
            f"{state.rejected_run(journal.run_date, journal.run_id)} and recorded as rejected in "
            f"{history.history_folder(layout.root)}"
        )


def commit(layout: Layout, state: NightlyState, journal: NightlyJournal) -> HistoryRecord:
    """Score has published: record the run as published and drop what was set aside."""
    journal.stage = "commit"
    state.write_journal(journal)
    return _roll_forward(layout, state, journal)


def recover_failed(
    layout: Layout, state: NightlyState, journal: NightlyJournal, error: BaseException
) -> HistoryRecord:
    """End a run that raised ``error``: rolled back (rejected by the gate, or failed), or rolled
    forward when score's commit had already happened."""
    status = history.REJECTED if isinstance(error, QualityGateError) else history.FAILED
    text = str(error).strip()
    message = text.splitlines()[0] if text else type(error).__name__
    return recover(layout, state, journal, status, f"{type(error).__name__}: {message}"[:1000])


def prune(
    layout: Layout,
    state: NightlyState,
    keep_runs: int,
    run_date: str,
    spark: SparkSession | None = None,
) -> tuple[list[str], str | None]:
    """Retention after a publish: (run dates removed, the error when clean-up failed).

    The run is published already, so a failed clean-up is reported, not raised. A Delta
    recommendations table (``spark`` needed) loses its old dates in one commit instead.
    """
    table = state.table
    try:
        in_table = table.dates(_session(spark)) if table.is_delta else []
        removed = retention.prune_runs(
            layout,
            keep_runs,
            protect={run_date},
            extra_dates=in_table,
            keep_partitions=table.is_delta,
        )
        if table.is_delta:  # a Parquet table's dates went with their folders
            table.drop_dates(_session(spark), [date for date in removed if date in in_table])
        if removed and spark is not None:
            table.register(spark)  # the catalog forgets the removed dates too
        retention.prune_folder(state.rejected, keep_runs)
        # Quarantines of dates that prepare refused (input.max_bad_fraction) age out the same way.
        retention.prune_folder(layout.root / "prepared" / REJECTED, keep_runs)
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log.warning("retention failed, outputs of old runs remain: %s", error)
        return [], error
    return removed, None


def already_published(
    layout: Layout,
    records: list[HistoryRecord],
    *,
    run_date: str,
    input_digest: str,
    settings: str,
    table: OutputTable | None = None,
    spark: SparkSession | None = None,
) -> HistoryRecord | None:
    """The record of ``run_date``'s live publication when it came from the same input files and
    settings and its outputs are in place; None when the date must run."""
    record = history.latest_record(records, history.PUBLISHED, run_date=run_date)
    if record is None or (record.input_fingerprint, record.settings_digest) != (
        input_digest,
        settings,
    ):
        return None
    if table is not None and table.is_delta:
        if not table.has_date(_session(spark), run_date):
            return None
    elif not (layout.recommendations_partition(run_date) / SUCCESS).exists():
        return None
    version = published_version(layout.model(run_date))
    if version is None or version != record.model_version:
        return None
    return record


# -- recovery -----------------------------------------------------------------------------------


def _session(spark: SparkSession | None) -> SparkSession:
    """The session a Delta recommendations table is read and changed through."""
    if spark is None:
        raise ValueError("a Delta recommendations table needs the SparkSession; none was given")
    return spark


def _committed(state: NightlyState, journal: NightlyJournal) -> bool:
    """Whether score's publish of this run's date took place (the run is then published): the
    partition's publish token, or the Delta table's version, moved on since the run started."""
    if journal.gate is None or not journal.gate.passed or journal.stage not in ("score", "commit"):
        return False
    identity = state.table.identity(journal.run_date)
    return identity is not None and identity != journal.partition_before


def history_record(
    journal: NightlyJournal,
    status: RunStatus,
    error: str | None = None,
    recovered: bool | None = None,
    recovered_by: str | None = None,
) -> HistoryRecord:
    """The history record of a journal's run."""
    reports = journal.summaries
    # A stage that did not finish has no report: its figures are None.
    prepared, trained, evaluated, scored = (
        reports.get(stage, StageReport()) for stage in ("prepare", "train", "evaluate", "score")
    )
    metrics = {**trained.metrics, **evaluated.metrics}
    counts = {key: prepared.counts.get(key) for key in _PREPARED_COUNTS}
    counts.update(
        carried_users=trained.counts.get("carried_users"),
        carried_items=trained.counts.get("carried_items"),
        recommended_users=scored.counts.get("users"),
        recommendation_rows=scored.counts.get("rows"),
    )
    return HistoryRecord(
        run_id=journal.run_id,
        run_date=journal.run_date,
        status=status,
        model_version=metrics.get("model_version"),
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None},
        counts=counts,
        gate=journal.gate,
        warm_start=journal.warm_start,
        warm_start_from=trained.metrics.get("warm_start_from"),
        stage=journal.stage,
        stage_seconds=journal.stage_seconds,
        input_fingerprint=journal.input_fingerprint,
        settings_digest=journal.settings_digest,
        host=journal.host,
        pid=journal.pid,
        started_at=journal.started_at,
        finished_at=_now(),
        error=error,
        recovered=recovered,
        recovered_by=recovered_by,
        mlflow_run_id=(journal.model_extra or {}).get("mlflow_run_id"),
    )


def _drop_stash(state: NightlyState, run_id: str) -> None:
    state.stash(run_id).rmtree()
    if not state.stash_root.iterdir():  # other runs' leftovers keep it: the next start clears them
        state.stash_root.rmtree()


def _roll_forward(
    layout: Layout,
    state: NightlyState,
    journal: NightlyJournal,
    recovered: bool | None = None,
    recovered_by: str | None = None,
) -> HistoryRecord:
    record = history_record(
        journal, history.PUBLISHED, recovered=recovered, recovered_by=recovered_by
    )
    history.append_record(layout.root, record)
    _drop_stash(state, journal.run_id)
    state.drop_journal()
    return record


def _roll_back(
    layout: Layout,
    state: NightlyState,
    journal: NightlyJournal,
    status: RunStatus,
    error: str,
    recovered_by: str | None = None,
) -> HistoryRecord:
    run_date, run_id = journal.run_date, journal.run_id
    folders = retention.run_folders(layout, run_date)
    stash = state.stash(run_id)
    rejected = state.rejected_run(run_date, run_id)
    for kind in RESTORABLE:
        final, stashed = folders[kind], stash / kind
        # Whole folders carry their _SUCCESS marker (moves copy it last on object stores, where a
        # move cut short leaves an unmarked part). A folder at `final` is this run's unless it is
        # the original that was never set aside (the journal names it, the stash does not hold
        # it whole: the move did not happen or was undone).
        stash_whole = (stashed / SUCCESS).exists()
        produced = (final / SUCCESS).exists() and (not journal.stashed.get(kind) or stash_whole)
        if produced and kind == "prepared":
            retention.retire(final)
        elif produced:
            (rejected / kind).rmtree()
            final.move_to(rejected / kind, last=SUCCESS)
        if stash_whole:
            final.rmtree()
            stashed.move_to(final, last=SUCCESS)
    record = history_record(journal, status, error, recovered_by=recovered_by)
    if rejected.exists():
        write_json(rejected / "record.json", record.model_dump(mode="json"))
        record.rejected_outputs = str(rejected)
    history.append_record(layout.root, record)
    _drop_stash(state, run_id)
    state.drop_journal()
    return record


def recover(
    layout: Layout,
    state: NightlyState,
    journal: NightlyJournal,
    status: RunStatus,
    error: str,
    recovered_by: str | None = None,
) -> HistoryRecord:
    """Bring a run's journal to an end: roll forward if it committed, else roll back.

    Every step checks what is on disk before it acts, so recovery itself may be interrupted and
    run again. Returns the history record written.
    """
    # Staging folders of the dead run go, and a publish killed between its two renames is undone.
    for kind, folder in retention.run_folders(layout, journal.run_date).items():
        clean_leftovers(layout, folder, f"{kind}-{journal.run_date}")
    if _committed(state, journal):
        log.warning("run %s had published its recommendations: recording it", journal.run_id)
        return _roll_forward(layout, state, journal, recovered=True, recovered_by=recovered_by)
    log.warning("rolling back run %s of %s: %s", journal.run_id, journal.run_date, error)
    return _roll_back(layout, state, journal, status, error, recovered_by=recovered_by)


def recover_crashed(layout: Layout, state: NightlyState, recovered_by: str) -> HistoryRecord | None:
    """Recover the journal a dead run left (call with the lock held); None when there is none."""
    journal = state.read_journal()
    if journal is None:
        # No run in flight: anything in the stash is a leftover of a finished recovery.
        state.stash_root.rmtree()
        return None
    error = (
        f"interrupted during {journal.stage} (the process died without finishing); "
        f"recovered by run {recovered_by}"
    )
    return recover(layout, state, journal, history.FAILED, error, recovered_by=recovered_by)
