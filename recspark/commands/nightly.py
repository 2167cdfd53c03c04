"""nightly: prepare, train, evaluate and score one run date as one gated, locked, recoverable unit.

The stages are the other commands' ``run`` functions, called in this process with the same Spark
session. Order and publication::

    lock -> recover a crashed run -> skip if already published -> set aside the date's outputs
         -> prepare -> train (warm start) -> evaluate -> quality gate -> score (the commit)
         -> history record -> retention -> unlock

* **Lock**: :class:`recspark.ops.locking.RunLock` on ``<root>/_nightly/lock``; a second run for the
  same root exits at once with a message naming the holder.
* **Warm start**: ``train.warm_start`` is set from ``nightly.warm_start``; the trainer copies the
  last published model's rows for known ids, and the carried counts reach this summary.
* **Gate**: the candidate's validation RMSE (evaluate's, computed in Spark on the saved model) may
  exceed the last published run's by at most ``nightly.max_rmse_increase`` (and ``nightly.max_rmse``
  when set); a ranking model's NDCG@k may fall short of it by at most
  ``nightly.max_ndcg_decrease`` (and stay above ``nightly.min_ndcg`` when set). Evaluate runs
  before score for this reason: nothing downstream reads is written until the candidate has passed.
* **Commit**: score's atomic rename of ``recommendations/run_date=D`` is the one moment the run
  becomes visible. Before it, a failure or a kill rolls back: the candidate model and report move to
  ``_nightly/rejected/`` and the date's previous outputs, set aside in ``_nightly/stash/`` at the
  start, come back. After it, recovery rolls forward and records the run as published.
* **Journal**: ``_nightly/inflight.json`` records the stage, what was set aside and what each stage
  reported. A run that finds one (its predecessor died, e.g. ``kill -9``) recovers it first, so the
  last published output is intact and the next run succeeds.
* **History**: one record per run under ``history/`` (see :mod:`recspark.ops.history`): published,
  rejected (by the gate) or failed.
* **Idempotence**: a date already published from the same input files and settings is not run
  again (``nightly.force=true`` does); any other re-run replaces the date's outputs whole.
* **Retention**: the newest ``nightly.keep_runs`` run dates are kept, older ones removed.

* **Tracking** (``tracking.uri``): one MLflow run per night with its stages nested (train's and
  evaluate's their own, prepare's and score's with their counts); train registers its candidate as
  a new version of ``tracking.model_name``, and the alias ``champion`` moves to it only once the
  gate passed and score committed. A rejected candidate's version takes the alias ``rejected``
  (and a ``nightly_status`` tag); ``champion`` stays. The run id is in the summary's ``tracking``
  and in the history record (``mlflow_run_id``).

``models/`` therefore only ever holds approved models (outside a run in progress), which is what
the trainer's warm start and ``recspark recommend`` read.

This module is the wiring: it calls the stages in order. The journal, recovery, the gate, the
history record and the summary live in the ops room (:mod:`recspark.ops.nightly`,
:mod:`recspark.ops.gate`, :mod:`recspark.ops.journal`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from contextlib import nullcontext
from typing import Any

from pyspark.sql import SparkSession

from recspark.commands import evaluate, prepare, score, train
from recspark.commands.stage import Stage, StageResult, as_result
from recspark.core.config import Config
from recspark.core.storage import Layout
from recspark.ops import history
from recspark.ops import nightly as unit
from recspark.ops.gate import judge
from recspark.ops.history import HistoryRecord
from recspark.ops.journal import NightlyJournal, NightlyState, StageReport
from recspark.ops.locking import RunLock
from recspark.ops.nightly_summary import published_summary, skipped_summary
from recspark.ops.tracking import TrackedRun, tracked_run
from recspark.ops.tracking_records import record_stage, run_tags
from recspark.ops.tracking_registry import crown, mark_version
from recspark.serve.tables import recommendations_table

log = logging.getLogger(__name__)

#: The stages nightly runs, by name: their modules, whose ``run`` is looked up when the stage
#: runs (a test may replace one).
STAGES = {"prepare": prepare, "train": train, "evaluate": evaluate, "score": score}


def precheck(config: Config) -> None:
    """prepare's checks of the input that need no Spark, run before the session starts.

    Skipped while ``_nightly/`` holds a lock record or a journal: a run in progress is then the
    one to report (its holder named), and a run that died is to be recovered first, whatever
    today's input.
    """
    train.precheck(config)
    layout = Layout(config.paths.root)
    if not NightlyState(layout, recommendations_table(config.score, layout)).busy():
        prepare.precheck(config)


def run(config: Config, spark: SparkSession) -> StageResult:
    """Run the nightly unit for ``config.run_date``; raise on a failed gate or stage.

    Returns
    -------
    StageResult
        ``outputs``, ``counts`` (with ``carried_users``/``carried_items``), ``metrics`` (with the
        gate's figures) and, as ``extra``, ``nightly`` (decision, gate, run id, stage timings,
        recovery and retention facts).
    """
    return as_result(_run_locked(config, spark))


def _run_locked(config: Config, spark: SparkSession) -> dict[str, Any]:
    """:func:`run` under the run lock: recover, skip a date already published, else run it."""
    layout = Layout(config.paths.root)
    state = NightlyState(layout, recommendations_table(config.score, layout))
    run_date = str(config.run_date)
    run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    with RunLock(
        state.lock,
        run_date,
        config.nightly.lock_stale_hours,
        run_id=run_id,
        scheduler=config.nightly.lock == "scheduler",
    ) as lock:
        recovered = unit.recover_crashed(layout, state, run_id)
        fingerprint = unit.input_fingerprint(config)
        digest = unit.settings_digest(config)
        records = history.read_history(layout.root)
        done = (
            None
            if config.nightly.force
            else unit.already_published(
                layout,
                records,
                run_date=run_date,
                input_digest=fingerprint,
                settings=digest,
                table=state.table,
                spark=spark,
            )
        )
        if done is not None:
            return skipped_summary(layout, done, recovered, lock.previous)
        # The newest published run up to this date: yesterday's for a nightly run, the date's own
        # live version when a date is run again with new input or settings.
        baseline = history.latest_record(records, history.PUBLISHED, upto=run_date)
        return _run_unit(
            config,
            spark,
            layout=layout,
            state=state,
            run_id=run_id,
            fingerprint=fingerprint,
            digest=digest,
            baseline=baseline,
            recovered=recovered,
            lock=lock,
        )


def _run_unit(
    config: Config,
    spark: SparkSession,
    *,
    layout: Layout,
    state: NightlyState,
    run_id: str,
    fingerprint: str,
    digest: str,
    baseline: HistoryRecord | None,
    recovered: HistoryRecord | None,
    lock: RunLock,
) -> dict[str, Any]:
    """Set the date's outputs aside, run the stages and the gate, commit (score), then prune;
    with tracking on, all under one MLflow run."""
    tags = {**run_tags(config, "nightly"), "nightly_run_id": run_id}
    with tracked_run(config.tracking, f"nightly {config.run_date}", tags) as parent:
        if parent is not None:
            parent.log_params(
                {"input_fingerprint": fingerprint, "settings_digest": digest, **_nightly(config)}
            )
        summary = _run_stages(
            config,
            spark,
            layout=layout,
            state=state,
            run_id=run_id,
            fingerprint=fingerprint,
            digest=digest,
            baseline=baseline,
            recovered=recovered,
            lock=lock,
            parent=parent,
        )
    return summary


def _nightly(config: Config) -> dict[str, Any]:
    return {"nightly": config.nightly.model_dump(mode="json"), "run_date": str(config.run_date)}


def _run_stages(
    config: Config,
    spark: SparkSession,
    *,
    layout: Layout,
    state: NightlyState,
    run_id: str,
    fingerprint: str,
    digest: str,
    baseline: HistoryRecord | None,
    recovered: HistoryRecord | None,
    lock: RunLock,
    parent: TrackedRun | None,
) -> dict[str, Any]:
    """:func:`_run_unit`'s body: journal, stages, gate, commit, the champion alias, prune.

    long: the one sequence of a night, kept in one place so the order of its steps reads
    top to bottom.
    """
    run_date = str(config.run_date)
    stale_lock = lock.previous
    journal = unit.start_journal(
        layout,
        state,
        run_id=run_id,
        run_date=run_date,
        input_digest=fingerprint,
        settings=digest,
        warm_start=config.nightly.warm_start,
        mlflow_run_id=parent.run_id if parent is not None else None,
    )
    settings = unit.stage_config(config)
    tracked: dict[str, dict[str, Any]] = {}
    try:
        unit.set_aside(layout, state, journal)
        for name in ("prepare", "train", "evaluate"):
            tracked[name] = _run_stage(name, settings, spark, state, journal)
        gate = judge(
            config.model.objective,
            journal.summaries["evaluate"].metrics,
            journal.summaries["train"].metrics,
            baseline,
            config.nightly,
        )
        unit.record_gate(layout, state, journal, gate)
        # On an object store the lock is a lease: a run that lost it (stalled past its expiry,
        # taken over by another run) must not publish.
        lock.check_held()
        tracked["score"] = _run_stage("score", settings, spark, state, journal)
        record = unit.commit(layout, state, journal)
        version = _version(tracked)
        if version is not None:  # published: the registry's champion follows
            crown(config.tracking, version)
    except BaseException as exc:
        record = unit.recover_failed(layout, state, journal, exc)
        # Past the commit the run is published whatever failed after it (recovery rolled it
        # forward); only an interrupt still propagates.
        if record.status != history.PUBLISHED or not isinstance(exc, Exception):
            _end_tracking(config, parent, tracked, record)
            raise
        log.warning("run %s is published; a step after the commit failed: %s", run_id, exc)
    removed, retention_error = unit.prune(layout, state, config.nightly.keep_runs, run_date, spark)
    summary = published_summary(
        layout, journal, record, recovered, stale_lock, removed, retention_error
    )
    _end_tracking(config, parent, tracked, record)
    if parent is not None:
        summary["tracking"] = {
            **parent.summary(),
            "stages": {name: facts.get("run_id") for name, facts in tracked.items()},
            "registered_model": config.tracking.model_name if _version(tracked) else None,
            "registered_version": _version(tracked),
            "champion": _version(tracked) if record.status == history.PUBLISHED else None,
        }
    return summary


def _version(tracked: dict[str, dict[str, Any]]) -> str | None:
    """The registry version train registered this night (None: untracked or not registered)."""
    return tracked.get("train", {}).get("registered_version")


def _end_tracking(
    config: Config,
    parent: TrackedRun | None,
    tracked: dict[str, dict[str, Any]],
    record: HistoryRecord,
) -> None:
    """Log how the night ended on its MLflow run: the decision, the figures, and on the version
    train registered its status (a rejected one its alias). The night is decided by then: a
    server that fails here is warned about, not allowed to change the outcome."""
    if parent is None:
        return
    try:
        parent.set_tags({"decision": record.status, "model_version": record.model_version})
        parent.log_metrics(record.metrics)
        version = _version(tracked)
        if version is not None and record.status != history.PUBLISHED:
            mark_version(config.tracking, version, record.status)
    except Exception as error:  # the record is written; the registry just lags behind it
        log.warning("could not log the end of run %s to MLflow: %s", record.run_id, error)


def _run_stage(
    name: str, config: Config, spark: SparkSession, state: NightlyState, journal: NightlyJournal
) -> dict[str, Any]:
    """Run one stage and journal its report; return its MLflow run's facts (empty: untracked).
    Train and evaluate log runs of their own; prepare and score get one here."""
    journal.stage = name
    state.write_journal(journal)
    log.info("nightly %s: %s", journal.run_date, name)
    started = time.perf_counter()
    own = name in ("train", "evaluate")
    tags = run_tags(config, name)
    with (
        nullcontext()
        if own
        else tracked_run(config.tracking, f"{name} {config.run_date}", tags) as run
    ):
        result = STAGES[name].run(config, spark)
        if run is not None:
            record_stage(run, result.counts, result.metrics)
    journal.stage_seconds[name] = round(time.perf_counter() - started, 3)
    journal.summaries[name] = StageReport(
        outputs=dict(result.outputs), counts=dict(result.counts), metrics=dict(result.metrics)
    )
    state.write_journal(journal)
    if run is not None:
        return run.summary()
    return dict(result.extra.get("tracking") or {})


STAGE = Stage(
    name="nightly",
    purpose="prepare, train, evaluate, gate, then score one run date as one locked unit.",
    sections=("every section of prepare, train, evaluate and score", "nightly"),
    example="recspark nightly --config conf/nightly.yaml --set run_date=2026-11-26",
    run=run,
    precheck=precheck,
)
