"""nightly: prepare, train, evaluate and score one run date as one gated, locked, recoverable unit.

The stages are the other commands' ``run`` functions, called in this process with the same Spark
session. Order and publication::

    lock -> recover a crashed run -> skip if already published -> set aside the date's outputs
         -> prepare -> train (warm start) -> evaluate -> quality gate -> score (the commit)
         -> history record -> retention -> unlock

* **Lock**: :class:`recspark.ops.locking.RunLock` on ``<root>/_nightly/lock``; a second run for the same
  root exits at once with a message naming the holder.
* **Warm start**: ``train.warm_start`` is set from ``nightly.warm_start``; the trainer copies the
  last published model's rows for known ids, and the carried counts reach this summary.
* **Gate**: the candidate's validation RMSE (evaluate's, computed in Spark on the saved model) may
  exceed the last published run's by at most ``nightly.max_rmse_increase`` (and ``nightly.max_rmse``
  when set); a ranking model's NDCG@k may fall short of it by at most
  ``nightly.max_ndcg_decrease`` (and stay above ``nightly.min_ndcg`` when set). Evaluate runs before score for this reason: nothing downstream reads is written until
  the candidate has passed.
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

``models/`` therefore only ever holds approved models (outside a run in progress), which is what
the trainer's warm start and ``recspark recommend`` read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from recspark.commands import evaluate, prepare, score, train
from recspark.core.config import Config
from recspark.core.errors import QualityGateError
from recspark.core.storage import (
    SUCCESS,
    Layout,
    clean_leftovers,
    local_path,
    read_json,
    write_json,
)
from recspark.ops import history, retention
from recspark.ops.locking import RunLock

log = logging.getLogger(__name__)

STAGES = {"prepare": prepare, "train": train, "evaluate": evaluate, "score": score}
# Outputs of a date that are set aside before a run and restored if it does not publish; the
# recommendations partition is not among them: score replaces it atomically, and only after the
# gate.
RESTORABLE = ("prepared", "model", "evaluation")
# How each stage names its staging folders ("<name>-<run date>-<random>").
_STAGING_NAMES = {
    "prepared": "prepared",
    "model": "model",
    "evaluation": "evaluation",
    "recommendations": "recommendations",
}


class NightlyState:
    """Where nightly keeps its own bookkeeping under ``<root>/_nightly``."""

    def __init__(self, layout: Layout):
        self.base = layout.root / "_nightly"
        self.lock = self.base / "lock"
        self.journal = self.base / "inflight.json"
        self.stash_root = self.base / "stash"
        self.rejected = self.base / "rejected"

    def stash(self, run_id: str) -> Path:
        return self.stash_root / run_id

    def rejected_run(self, run_date: str, run_id: str) -> Path:
        return self.rejected / f"{run_date}_{run_id}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _identity(path: Path) -> list[int] | None:
    """(device, inode) of a folder: it changes when a publish renames a new folder into place."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return [stat.st_dev, stat.st_ino]


def input_fingerprint(paths: list[str]) -> str:
    """A digest of the input files' names, sizes and modification times (not their bytes)."""
    digest = hashlib.sha256()
    for text in paths:
        base = local_path(text)
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(base.parent)
            if any(part.startswith((".", "_")) for part in relative.parts[1:]):
                continue
            stat = path.stat()
            digest.update(f"{relative}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        if not files:
            digest.update(f"{text}|missing\n".encode())
    return digest.hexdigest()[:16]


def settings_digest(config: Config) -> str:
    """A digest of every setting that shapes the output (not Spark tuning, not nightly's own)."""
    settings = config.model_dump(
        mode="json", exclude={"spark": True, "nightly": {"force", "keep_runs", "lock_stale_hours"}}
    )
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def stage_config(config: Config) -> Config:
    """The config the stages run with: ``train.warm_start`` follows ``nightly.warm_start``."""
    if "warm_start" not in type(config.train).model_fields:
        if config.nightly.warm_start:
            log.warning("this trainer has no train.warm_start: the model is trained from scratch")
        return config
    return config.model_copy(
        update={"train": config.train.model_copy(update={"warm_start": config.nightly.warm_start})}
    )


def quality_gate(
    candidate_rmse: float | None,
    baseline: dict[str, Any] | None,
    max_rmse_increase: float,
    max_rmse: float | None = None,
) -> dict[str, Any]:
    """Decide whether a rating model may be published, by its validation RMSE.

    Parameters
    ----------
    candidate_rmse
        The candidate's validation RMSE.
    baseline
        The history record of the last published run before this date, or None on a first run.
    max_rmse_increase
        How much worse than the baseline's RMSE the candidate may be.
    max_rmse
        An absolute ceiling, applied with or without a baseline (None: none).

    Returns
    -------
    dict
        ``passed``, ``reason`` and the figures the decision used.
    """
    return _gate("rmse", "validation RMSE", False, candidate_rmse, baseline,
                 max_rmse_increase, "nightly.max_rmse_increase", max_rmse, "nightly.max_rmse")


def ranking_gate(
    candidate_ndcg: float | None,
    baseline: dict[str, Any] | None,
    max_ndcg_decrease: float,
    min_ndcg: float | None = None,
) -> dict[str, Any]:
    """Decide whether a ranking model (``model.objective: ranking``) may be published, by its
    validation NDCG@k: its scores are not ratings, so RMSE says nothing about it."""
    return _gate("ndcg_at_k", "validation NDCG@k", True, candidate_ndcg, baseline,
                 max_ndcg_decrease, "nightly.max_ndcg_decrease", min_ndcg, "nightly.min_ndcg")


def _gate(
    key: str,
    label: str,
    higher_is_better: bool,
    candidate: float | None,
    baseline: dict[str, Any] | None,
    max_worse: float,
    max_worse_setting: str,
    bound: float | None,
    bound_setting: str,
) -> dict[str, Any]:
    change = f"{key}_{'decrease' if higher_is_better else 'increase'}"
    base = (baseline or {}).get("metrics", {}).get(key)
    gate = {
        f"candidate_{key}": candidate,
        "baseline_run_date": (baseline or {}).get("run_date"),
        "baseline_model_version": (baseline or {}).get("model_version"),
        f"baseline_{key}": base,
        change: None,
        f"max_{change}": max_worse,
        bound_setting.split(".")[-1]: bound,
    }
    if candidate is None or not math.isfinite(candidate):
        return {**gate, "passed": False, "reason": f"the candidate's {label} is {candidate}"}
    sign = -1.0 if higher_is_better else 1.0
    if base is not None:
        gate[change] = sign * (candidate - base)
    if bound is not None and sign * (candidate - bound) > 0:
        side = "below" if higher_is_better else "above"
        reason = f"{label} {candidate:.4f} is {side} {bound_setting}={bound}"
        return {**gate, "passed": False, "reason": reason}
    if gate[change] is not None and gate[change] > max_worse:
        reason = (
            f"{label} {candidate:.4f} is {gate[change]:.4f} worse than the last published run's "
            f"{base:.4f} ({gate['baseline_run_date']}, model {gate['baseline_model_version']}), "
            f"more than {max_worse_setting}={max_worse}"
        )
        return {**gate, "passed": False, "reason": reason}
    if base is None:
        reason = "first published run: no baseline to compare with"
    else:
        reason = f"within {max_worse_setting} of {gate['baseline_run_date']}"
    return {**gate, "passed": True, "reason": reason}


# -- recovery -----------------------------------------------------------------------------------


def _committed(layout: Layout, journal: dict[str, Any]) -> bool:
    """Whether score's rename of this run's partition took place (the run is then published)."""
    if not journal.get("gate", {}).get("passed") or journal.get("stage") not in ("score", "commit"):
        return False
    partition = layout.recommendations_partition(journal["run_date"])
    identity = _identity(partition)
    return (
        identity is not None
        and identity != journal.get("partition_before")
        and (partition / SUCCESS).exists()
    )


def _record(journal: dict[str, Any], status: str, error: str | None = None, **extra: Any) -> dict:
    """The history record of a journal's run."""
    summaries = journal.get("summaries", {})
    trained = summaries.get("train", {})
    evaluated = summaries.get("evaluate", {})
    scored = summaries.get("score", {})
    prepared = summaries.get("prepare", {})
    metrics = dict(trained.get("metrics", {}))
    metrics.update(evaluated.get("metrics", {}))
    counts = {
        key: prepared.get("counts", {}).get(key)
        for key in ("users", "items", "train", "validation", "cold_start", "quarantined")
    }
    counts.update(
        carried_users=trained.get("counts", {}).get("carried_users"),
        carried_items=trained.get("counts", {}).get("carried_items"),
        recommended_users=scored.get("counts", {}).get("users"),
        recommendation_rows=scored.get("counts", {}).get("rows"),
    )
    record = {
        "run_id": journal["run_id"],
        "run_date": journal["run_date"],
        "status": status,
        "model_version": metrics.get("model_version"),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None},
        "counts": counts,
        "gate": journal.get("gate"),
        "warm_start": journal.get("warm_start"),
        "warm_start_from": trained.get("metrics", {}).get("warm_start_from"),
        "stage": journal.get("stage"),
        "stage_seconds": journal.get("stage_seconds", {}),
        "input_fingerprint": journal.get("input_fingerprint"),
        "settings_digest": journal.get("settings_digest"),
        "host": journal.get("host"),
        "pid": journal.get("pid"),
        "started_at": journal.get("started_at"),
        "finished_at": _now(),
        "error": error,
    }
    record.update(extra)
    return record


def _drop_stash(state: NightlyState, run_id: str) -> None:
    shutil.rmtree(state.stash(run_id), ignore_errors=True)
    with contextlib.suppress(OSError):  # other runs' leftovers keep it: the next start clears them
        state.stash_root.rmdir()


def _roll_forward(
    layout: Layout, state: NightlyState, journal: dict[str, Any], **extra: Any
) -> dict:
    record = _record(journal, history.PUBLISHED, **extra)
    path = history.append_record(layout.root, record)
    _drop_stash(state, journal["run_id"])
    state.journal.unlink(missing_ok=True)
    return {**record, "history": str(path)}


def _roll_back(
    layout: Layout,
    state: NightlyState,
    journal: dict[str, Any],
    status: str,
    error: str,
    **extra: Any,
) -> dict:
    run_date, run_id = journal["run_date"], journal["run_id"]
    folders = retention.run_folders(layout, run_date)
    stash = state.stash(run_id)
    rejected = state.rejected_run(run_date, run_id)
    for kind in RESTORABLE:
        final, stashed = folders[kind], stash / kind
        # A folder at `final` is this run's unless it is the original that was never set aside
        # (the journal names it, the stash does not hold it: the move did not happen or was undone).
        produced = final.exists() and (not journal["stashed"].get(kind) or stashed.exists())
        if produced and kind == "prepared":
            retention.retire(final)
        elif produced:
            rejected.mkdir(parents=True, exist_ok=True)
            if (rejected / kind).exists():
                shutil.rmtree(rejected / kind)
            os.rename(final, rejected / kind)
        if stashed.exists():
            os.rename(stashed, final)
    record = _record(journal, status, error, **extra)
    if rejected.exists():
        write_json(rejected / "record.json", record)
        record["rejected_outputs"] = str(rejected)
    path = history.append_record(layout.root, record)
    _drop_stash(state, run_id)
    state.journal.unlink(missing_ok=True)
    return {**record, "history": str(path)}


def recover(
    layout: Layout,
    state: NightlyState,
    journal: dict[str, Any],
    status: str,
    error: str,
    **extra: Any,
) -> dict[str, Any]:
    """Bring a run's journal to an end: roll forward if it committed, else roll back.

    Every step checks what is on disk before it acts, so recovery itself may be interrupted and
    run again. Returns the history record written.
    """
    # Staging folders of the dead run go, and a publish killed between its two renames is undone.
    for kind, folder in retention.run_folders(layout, journal["run_date"]).items():
        clean_leftovers(layout, folder, f"{_STAGING_NAMES[kind]}-{journal['run_date']}")
    if _committed(layout, journal):
        log.warning("run %s had published its recommendations: recording it", journal["run_id"])
        return _roll_forward(layout, state, journal, recovered=True, **extra)
    log.warning("rolling back run %s of %s: %s", journal["run_id"], journal["run_date"], error)
    return _roll_back(layout, state, journal, status, error, **extra)


def recover_crashed(
    layout: Layout, state: NightlyState, recovered_by: str
) -> dict[str, Any] | None:
    """Recover the journal a dead run left (call with the lock held); None when there is none."""
    if not state.journal.exists():
        # No run in flight: anything in the stash is a leftover of a finished recovery.
        shutil.rmtree(state.stash_root, ignore_errors=True)
        return None
    journal = read_json(state.journal)
    error = (
        f"interrupted during {journal.get('stage')} (the process died without finishing); "
        f"recovered by run {recovered_by}"
    )
    return recover(layout, state, journal, history.FAILED, error, recovered_by=recovered_by)


# -- the run ------------------------------------------------------------------------------------


def _already_published(
    layout: Layout, records: list[dict[str, Any]], run_date: str, fingerprint: str, digest: str
) -> dict[str, Any] | None:
    record = history.latest_record(records, history.PUBLISHED, run_date=run_date)
    if record is None or (record.get("input_fingerprint"), record.get("settings_digest")) != (
        fingerprint,
        digest,
    ):
        return None
    model_metrics = layout.model(run_date) / "metrics.json"
    if (
        not (layout.recommendations_partition(run_date) / SUCCESS).exists()
        or not model_metrics.exists()
    ):
        return None
    if read_json(model_metrics).get("model_version") != record.get("model_version"):
        return None
    return record


def _stage_fields(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: summary.get(key, {}) for key in ("outputs", "counts", "metrics")}


def _input_paths(config: Config) -> list[str]:
    paths = [prepare.input_path(config)]
    if config.input.validation_path:
        paths.append(config.input.validation_path)
    return paths


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    """Run the nightly unit for ``config.run_date``; raise on a failed gate or stage.

    Returns
    -------
    dict
        Summary fields: ``outputs``, ``counts`` (with ``carried_users``/``carried_items``),
        ``metrics`` (with the gate's figures) and ``nightly`` (decision, gate, run id, stage
        timings, recovery and retention facts).
    """
    layout = Layout(config.paths.root)
    state = NightlyState(layout)
    run_date = str(config.run_date)
    run_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    with RunLock(state.lock, run_date, config.nightly.lock_stale_hours) as lock:
        recovered = recover_crashed(layout, state, run_id)
        fingerprint = input_fingerprint(_input_paths(config))
        digest = settings_digest(config)
        records = history.read_history(layout.root)
        done = (
            None
            if config.nightly.force
            else _already_published(layout, records, run_date, fingerprint, digest)
        )
        if done is not None:
            return _skipped_summary(layout, done, recovered, lock.previous)
        # The newest published run up to this date: yesterday's for a nightly run, the date's own
        # live version when a date is run again with new input or settings.
        baseline = history.latest_record(records, history.PUBLISHED, upto=run_date)
        return _run_unit(
            config,
            spark,
            layout,
            state,
            run_id,
            fingerprint,
            digest,
            baseline,
            recovered,
            lock.previous,
        )


def _run_unit(
    config: Config,
    spark: SparkSession,
    layout: Layout,
    state: NightlyState,
    run_id: str,
    fingerprint: str,
    digest: str,
    baseline: dict[str, Any] | None,
    recovered: dict[str, Any] | None,
    stale_lock: dict[str, Any] | None,
) -> dict[str, Any]:
    run_date = str(config.run_date)
    folders = retention.run_folders(layout, run_date)
    journal: dict[str, Any] = {
        "run_id": run_id,
        "run_date": run_date,
        "stage": "setting-aside",
        "started_at": _now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "input_fingerprint": fingerprint,
        "settings_digest": digest,
        "warm_start": config.nightly.warm_start,
        "stashed": {kind: folders[kind].exists() for kind in RESTORABLE},
        "partition_before": _identity(folders["recommendations"]),
        "summaries": {},
        "stage_seconds": {},
    }
    _write_atomic(state.journal, journal)
    settings = stage_config(config)
    try:
        # The date's current outputs are set aside only now that the journal says so: whatever
        # happens from here, recovery can put them back.
        stash = state.stash(run_id)
        for kind in RESTORABLE:
            if journal["stashed"][kind]:
                stash.mkdir(parents=True, exist_ok=True)
                os.rename(folders[kind], stash / kind)
        for name in ("prepare", "train", "evaluate"):
            _run_stage(name, settings, spark, state, journal)
        evaluated, trained = journal["summaries"]["evaluate"], journal["summaries"]["train"]
        settings_ = config.nightly
        if config.model.objective == "ranking":
            gate = ranking_gate(
                evaluated["metrics"].get("ndcg_at_k"), baseline, settings_.max_ndcg_decrease,
                settings_.min_ndcg,
            )
        else:
            candidate_rmse = evaluated["metrics"].get(
                "rmse", trained["metrics"].get("validation_rmse")
            )
            gate = quality_gate(
                candidate_rmse, baseline, settings_.max_rmse_increase, settings_.max_rmse
            )
        journal["gate"], journal["stage"] = gate, "gate"
        _write_atomic(state.journal, journal)
        if not gate["passed"]:
            raise QualityGateError(
                f"quality gate: {gate['reason']}. Nothing was published for {run_date}: the "
                "recommendations table keeps its last good partitions; the candidate is kept in "
                f"{state.rejected_run(run_date, run_id)} and recorded as rejected in "
                f"{history.history_folder(layout.root)}"
            )
        _run_stage("score", settings, spark, state, journal)
        journal["stage"] = "commit"
        _write_atomic(state.journal, journal)
        record = _roll_forward(layout, state, journal)
    except BaseException as exc:
        status = history.REJECTED if isinstance(exc, QualityGateError) else history.FAILED
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        record = recover(layout, state, journal, status, f"{type(exc).__name__}: {message}"[:1000])
        # Past the commit the run is published whatever failed after it (recovery rolled it
        # forward); only an interrupt still propagates.
        if record["status"] != history.PUBLISHED or not isinstance(exc, Exception):
            raise
        log.warning("run %s is published; a step after the commit failed: %s", run_id, message)
    removed, retention_error = [], None
    try:
        removed = retention.prune_runs(layout, config.nightly.keep_runs, protect={run_date})
        retention.prune_folder(state.rejected, config.nightly.keep_runs)
    except OSError as exc:  # published already: a failed clean-up must not fail the run
        retention_error = f"{type(exc).__name__}: {exc}"
        log.warning("retention failed, outputs of old runs remain: %s", retention_error)
    return _summary(layout, journal, record, recovered, stale_lock, removed, retention_error)


def _run_stage(
    name: str, config: Config, spark: SparkSession, state: NightlyState, journal: dict[str, Any]
) -> None:
    journal["stage"] = name
    _write_atomic(state.journal, journal)
    log.info("nightly %s: %s", journal["run_date"], name)
    started = time.perf_counter()
    summary = STAGES[name].run(config, spark)
    journal["stage_seconds"][name] = round(time.perf_counter() - started, 3)
    journal["summaries"][name] = _stage_fields(summary)
    _write_atomic(state.journal, journal)


def _summary(
    layout: Layout,
    journal: dict[str, Any],
    record: dict[str, Any],
    recovered: dict[str, Any] | None,
    stale_lock: dict[str, Any] | None,
    removed: list[str],
    retention_error: str | None,
) -> dict[str, Any]:
    run_date = journal["run_date"]
    summaries = journal["summaries"]
    metrics = dict(record["metrics"])
    gate = journal["gate"]
    metrics.update(
        model_version=record["model_version"],
        baseline_rmse=gate["baseline_rmse"],
        rmse_increase=gate["rmse_increase"],
    )
    outputs = {
        "recommendations": str(layout.recommendations),
        "partition": str(layout.recommendations_partition(run_date)),
        "model": str(layout.model(run_date)),
        "prepared": str(layout.prepared(run_date)),
        "report": summaries["evaluate"]["outputs"].get("report"),
        "history": record["history"],
    }
    return {
        "outputs": outputs,
        "counts": {**record["counts"], "removed_runs": len(removed)},
        "metrics": metrics,
        "nightly": {
            "decision": history.PUBLISHED,
            "run_id": journal["run_id"],
            "warm_start": journal["warm_start"],
            "warm_start_from": record["warm_start_from"],
            "gate": gate,
            "stage_seconds": journal["stage_seconds"],
            "removed_run_dates": removed,
            "retention_error": retention_error,
            "recovered": _brief(recovered),
            "stale_lock": stale_lock,
        },
    }


def _skipped_summary(
    layout: Layout,
    record: dict[str, Any],
    recovered: dict[str, Any] | None,
    stale_lock: dict[str, Any] | None,
) -> dict[str, Any]:
    run_date = record["run_date"]
    log.info("%s is already published from the same input and settings: nothing to do", run_date)
    return {
        "outputs": {
            "recommendations": str(layout.recommendations),
            "partition": str(layout.recommendations_partition(run_date)),
            "model": str(layout.model(run_date)),
        },
        "counts": record.get("counts", {}),
        "metrics": {**record.get("metrics", {}), "model_version": record.get("model_version")},
        "nightly": {
            "decision": "skipped",
            "reason": f"{run_date} was published by run {record['run_id']} from the same input "
            "files and settings; --set nightly.force=true runs it again",
            "run_id": record["run_id"],
            "recovered": _brief(recovered),
            "stale_lock": stale_lock,
        },
    }


def _brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {key: record.get(key) for key in ("run_id", "run_date", "status", "stage", "error")}
