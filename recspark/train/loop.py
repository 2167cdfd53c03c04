"""The training loop: plain functions over Petastorm loaders opened per epoch.

One loop serves every objective. :func:`fit` runs epochs of
:func:`~recspark.train.steps.train_epoch` and a validation pass
(:func:`~recspark.train.validation.evaluate_split`), steps the learning-rate schedule per batch,
stops early when the objective's validation loss has not improved for ``patience`` epochs
(:mod:`recspark.train.stopping`), checkpoints after every epoch (:mod:`recspark.train.checkpoints`),
and hands back the best weights and the epochs' records (:mod:`recspark.train.records`). What is
minimised is the objective's business (:mod:`recspark.train.objectives`: a loss per batch and the
figures of a validation pass); the step adds the L2 penalty on the embedding rows a batch used,
steps the optimizer (:mod:`recspark.train.optim`) and watches the loss for NaN. The same loop runs
in one process and in every process of a data-parallel run (:mod:`recspark.train.distributed`): a
:class:`~recspark.train.processes.LocalProcess` or its distributed subclass says how to wrap the
model and how to add numbers up across processes; :mod:`recspark.train.batching` sizes batches,
epochs and each process's share. It knows nothing of Spark or of where artifacts go; the train
job (:mod:`recspark.train.job`) wires it to paths and writes what it returns.

The feed (:func:`recspark.train.feeding.open_feed`) overlaps with the step: a background thread
reads, shuffles and casts the next batch (on a GPU also copies it) while this one trains, for
training and validation alike.

Repeatability: the model is built under ``torch.manual_seed(seed)`` (:func:`init_model`), and every
epoch reseeds all random generators from ``(seed, epoch, rank)`` and reads its row groups in an
order fixed by ``seed + epoch``. The feed's thread shuffles rows with a generator of its own,
seeded from ``seed + epoch`` and the shard, and never draws from the global generators the step
uses (dropout, the objective's samplers), so thread timing cannot change what either draws. An
epoch's randomness thus depends on nothing that happened in this process before it, which is what
lets a resumed run end exactly where an uninterrupted one does (with ``train.reader_workers: 1``;
more reader threads deliver row groups in arrival order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from recspark.core.torch_utils import epoch_seed, seed_everything
from recspark.model.registry import build_model
from recspark.model.spec import spec_from_dict
from recspark.train.batching import FeedPlan, auto_epochs, plan_feed
from recspark.train.checkpoints import Checkpoint, capture, resume_state, save_checkpoint
from recspark.train.feeding import FeedSpec, read_feed, row_groups
from recspark.train.objectives.base import Objective, RunContext, ValidationFigures
from recspark.train.objectives.rating import RatingObjective
from recspark.train.optim import Optimizers, Schedule, make_optimizer
from recspark.train.phases import PhaseClock
from recspark.train.processes import LocalProcess
from recspark.train.records import EpochRecord, FitResult
from recspark.train.steps import train_epoch
from recspark.train.stopping import track_best
from recspark.train.validation import HeldSplit, evaluate_split

__all__ = ["TrainSettings", "fit", "init_model", "settings_fingerprint"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """What the loop needs from ``train.*``; plain values, no config object.

    ``weight_decay`` weighs the L2 penalty on the embedding rows each batch uses (added to the
    loss); ``optimizer_weight_decay`` is the optimizer's own decay of every weight at every step
    (decoupled for ``adamw``). ``restart_epochs`` and ``restart_mult`` shape the ``cosine``
    schedule: the first cycle lasts ``restart_epochs`` epochs, each next one ``restart_mult``
    times longer. ``precision`` is ``train.precision`` (:mod:`recspark.train.precision`).
    """

    epochs: int | str = 10  # auto: auto_epochs of the train rows
    batch_size: int | str = "auto"  # auto: auto_batch_size of the train rows
    lr: float = 0.01
    weight_decay: float = 0.0
    optimizer_weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "one_cycle"
    restart_epochs: int = 1
    restart_mult: int = 1
    patience: int = 3
    seed: int = 42
    reader_workers: int = 1
    shuffle_buffer: int = 100_000
    feed: str = "auto"  # train.feed (recspark.train.feeding)
    precision: str = "auto"
    head_lr_scale: float = 1.0  # lists.head_lr_scale: the ranking head's rows learn at lr x this


def init_model(spec: dict[str, Any], seed: int) -> nn.Module:
    """Build a model from :func:`recspark.model.registry.build_model` arguments under ``seed``."""
    seed_everything(seed)
    return build_model(spec_from_dict(spec))


def settings_fingerprint(values: dict[str, Any]) -> str:
    """A short digest of what a checkpoint must agree with to be resumed from."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Run:
    """What every epoch of one :func:`fit` shares."""

    model: nn.Module  # unwrapped: the weights checkpoints and early stopping keep
    trained: nn.Module  # what trains: the model, or its DistributedDataParallel wrapper
    optimizer: Optimizers
    schedule: Schedule
    plan: FeedPlan
    settings: TrainSettings
    epochs: int
    objective: Objective
    parallel: LocalProcess
    device: torch.device
    train_path: str
    validation_path: str
    clock: PhaseClock  # the seconds of feed, step, validation and checkpoints, added up
    validation: HeldSplit  # the validation batches, read by the first pass


def _optimizer_and_schedule(
    model: nn.Module, settings: TrainSettings, epochs: int, steps_per_epoch: int
) -> tuple[Optimizers, Schedule]:
    """The optimizer ``train.*`` names over ``model``, and its per-batch learning-rate schedule."""
    optimizer = make_optimizer(
        model,
        settings.optimizer,
        settings.lr,
        weight_decay=settings.optimizer_weight_decay,
        momentum=settings.momentum,
        head_lr_scale=settings.head_lr_scale,
    )
    schedule = Schedule(
        optimizer,
        settings.schedule,
        settings.lr,
        epochs,
        steps_per_epoch,
        restart_epochs=settings.restart_epochs,
        restart_mult=settings.restart_mult,
    )
    return optimizer, schedule


def _epoch_feed(run: _Run, epoch: int) -> FeedSpec:
    """How ``epoch`` reads the train split: this process's shard, shuffled by ``seed + epoch``."""
    settings, plan = run.settings, run.plan
    return FeedSpec(
        batch_size=plan.batch_size,
        shuffle=True,
        seed=settings.seed + epoch,
        shard=plan.shard,
        shard_count=plan.shard_count,
        workers=settings.reader_workers,
        shuffle_buffer=settings.shuffle_buffer,
        fields=run.objective.feed_fields,
        feed=settings.feed,
    )


def _train_and_validate(
    run: _Run, context: RunContext
) -> tuple[EpochRecord, ValidationFigures, float]:
    """One epoch (``context.epoch``) of training and its validation pass.

    Returns
    -------
    (the epoch's record, its validation figures, seconds the epoch and its validation took)
    """
    settings, plan, parallel, epoch = run.settings, run.plan, run.parallel, context.epoch
    seed_everything(epoch_seed(settings.seed, epoch, parallel.rank))
    clock = run.clock
    started = time.perf_counter()
    with read_feed(run.train_path, _epoch_feed(run, epoch), run.device) as batches:
        opened, waited = time.perf_counter(), clock.seconds["feed"]
        train_loss, rows = train_epoch(
            run.trained,
            clock.waited(batches),
            run.optimizer,
            run.schedule,
            run.device,
            weight_decay=settings.weight_decay,
            max_steps=plan.max_steps,
            objective=run.objective,
            context=context,
            precision=settings.precision,
        )
        stepped = time.perf_counter()
    train_sum, total_rows = parallel.sum([train_loss * rows, rows])
    elapsed = time.perf_counter() - started
    # Opening and closing the reader count as feed; the loop's time less its waits, as step.
    clock.add("step", stepped - opened - (clock.seconds["feed"] - waited))
    clock.add("feed", elapsed - (stepped - opened))
    with clock.timing("validation"):
        figures = evaluate_split(
            run.trained,
            run.validation_path,
            run.device,
            run.objective,
            context,
            parallel=parallel,
            seed=settings.seed,
            precision=settings.precision,
            feed=settings.feed,
            held=run.validation,
        )
    if not math.isfinite(figures.loss):
        raise FloatingPointError(
            f"the validation loss is {figures.loss} after epoch {epoch}: lower train.lr"
        )
    record = EpochRecord.of_epoch(
        epoch=epoch,
        train_loss=train_sum / total_rows,
        figures=figures,
        rows=int(total_rows),
        seconds=elapsed,
        lr=run.optimizer.param_groups[0]["lr"],
    )
    return record, figures, time.perf_counter() - started


def _log_epoch(
    record: EpochRecord, figures: ValidationFigures, epochs: int, seconds: float, state: Checkpoint
) -> None:
    """The epoch's log line (and the early stop's), from the leading process."""
    log.info(
        "epoch %d/%d train_loss %.4f valid_loss %.4f (%s) %.0f rows/s lr %.2e, ~%.0fs left",
        record.epoch,
        epochs,
        record.train_loss,
        record.validation_loss,
        figures.describe(),
        record.rows_per_second,
        record.lr,
        (epochs - record.epoch) * seconds,
    )
    if state.stopped_early:
        log.info("validation loss has not improved for %d epochs: stopping", state.waited)


def _save(run: _Run, state: Checkpoint, history: list[EpochRecord], folder: str) -> None:
    """Write the run's checkpoint after an epoch (the leader writes; every process waits)."""
    capture(
        state,
        model=run.model,
        optimizer=run.optimizer,
        schedule=run.schedule,
        history=[dataclasses.asdict(record) for record in history],
    )
    if run.parallel.is_leader:
        save_checkpoint(folder, state)
    run.parallel.barrier()


def _start(
    model: nn.Module,
    train_path: str,
    validation_path: str,
    settings: TrainSettings,
    device: torch.device,
    *,
    objective: Objective,
    parallel: LocalProcess,
    checkpoint_dir: str | None,
    resume: bool,
    fingerprint: str,
    validation: HeldSplit | None,
) -> tuple[_Run, Checkpoint]:
    """Set a run up: plan its feed and epochs, build the optimizer and schedule, restore the
    checkpoint when resuming, and only then wrap the model (DistributedDataParallel broadcasts
    the weights it is given). Arguments are :func:`fit`'s."""
    row_counts = row_groups(train_path)
    plan = plan_feed(row_counts, settings.batch_size, parallel.rank, parallel.world_size)
    epochs = auto_epochs(settings.epochs, sum(row_counts))
    settings = dataclasses.replace(settings, epochs=epochs)
    model.to(device)
    optimizer, schedule = _optimizer_and_schedule(model, settings, epochs, plan.steps_per_epoch)
    state = resume_state(
        checkpoint_dir,
        fingerprint,
        resume=resume,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        announce=parallel.is_leader,
    )
    run = _Run(
        model=model,
        trained=parallel.wrap(model, plan.batch_weight),
        optimizer=optimizer,
        schedule=schedule,
        plan=plan,
        settings=settings,
        epochs=epochs,
        objective=objective,
        parallel=parallel,
        device=device,
        train_path=train_path,
        validation_path=validation_path,
        clock=PhaseClock(),
        validation=validation or HeldSplit(),
    )
    return run, state


def fit(
    model: nn.Module,
    train_path: str,
    validation_path: str,
    settings: TrainSettings,
    device: torch.device,
    *,
    objective: Objective | None = None,
    on_epoch: Callable[[EpochRecord, nn.Module], None] | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    fingerprint: str = "",
    parallel: LocalProcess | None = None,
    validation: HeldSplit | None = None,
) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of its best validation epoch.

    Parameters
    ----------
    model
        An :class:`~recspark.model.base.EmbeddingModel` (unwrapped); its weights at entry are
        the starting point (fresh from :func:`init_model`, or warm-started).
    train_path, validation_path
        Prepared Parquet folders.
    objective
        What is minimised and reported (:func:`recspark.train.objectives.for_name`); the rating
        objective when None. Early stopping keeps the epoch of its lowest validation loss.
    on_epoch
        Called after each epoch's checkpoint with the epoch's record and the model.
    checkpoint_dir
        Where ``last.pt`` is written after every epoch; None writes none.
    resume
        Continue from ``checkpoint_dir/last.pt`` when it exists and matches ``fingerprint``.
    parallel
        Collective operations across processes; None is a single process.
    validation
        The validation split's batches as an earlier pass of this process read them (the
        starting weights'), or an empty holder; None: the first epoch's pass reads them. Every
        epoch's pass reuses them.
    """
    run, state = _start(
        model,
        train_path,
        validation_path,
        settings,
        device,
        objective=objective or RatingObjective(),
        parallel=parallel or LocalProcess(),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        fingerprint=fingerprint,
        validation=validation,
    )
    result = FitResult(
        history=[EpochRecord.from_saved(entry, run.objective.name) for entry in state.history],
        best_epoch=state.best_epoch,
        stopped_early=state.stopped_early,
        resumed_from_epoch=state.epoch,
    )
    context = RunContext(
        n_users=getattr(model, "n_users", None),
        n_items=getattr(model, "n_items", None),
        seed=run.settings.seed,
        rank=run.parallel.rank,
        world_size=run.parallel.world_size,
    )
    epochs = run.epochs
    for epoch in range(state.epoch + 1, epochs + 1):
        if state.stopped_early:
            break
        record, figures, seconds = _train_and_validate(
            run, dataclasses.replace(context, epoch=epoch)
        )
        result.history.append(record)
        track_best(state, figures.loss, epoch, model, patience=run.settings.patience, epochs=epochs)
        result.best_epoch, result.stopped_early = state.best_epoch, state.stopped_early
        if run.parallel.is_leader:
            _log_epoch(record, figures, epochs, seconds, state)
        state.epoch = epoch
        if checkpoint_dir is not None:
            with run.clock.timing("checkpoint"):
                _save(run, state, result.history, checkpoint_dir)
        if on_epoch is not None:
            on_epoch(record, model)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    result.seconds_by_phase = dict(run.clock.seconds)
    return result
