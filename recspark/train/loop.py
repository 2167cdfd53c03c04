"""The training loop: plain functions over Petastorm loaders opened per epoch.

One loop serves every objective. :func:`fit` runs epochs of :func:`train_epoch` and a validation
pass (:func:`evaluate_split`), steps the learning-rate schedule per batch, stops early when the
objective's validation loss has not improved for ``patience`` epochs, checkpoints after every
epoch, and hands back the best weights. What is minimised is the objective's business
(:mod:`recspark.train.objectives`: a loss per batch and the figures of a validation pass); the
loop adds the L2 penalty on the embedding rows a batch used, steps the optimizer
(:mod:`recspark.train.optim`) and watches the loss for NaN. The same loop runs in one process and
in every process of a data-parallel run (:mod:`recspark.train.distributed`): a
:class:`LocalProcess` or its distributed subclass says how to wrap the model and how to add numbers
up across processes. It knows nothing of Spark or of where artifacts go; the train job
(:mod:`recspark.train.job`) wires it to paths and writes what it returns.

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
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from recspark.core.torch_utils import epoch_seed, seed_everything, unwrap
from recspark.model.registry import build_model
from recspark.train.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from recspark.train.feeding import open_feed, row_groups
from recspark.train.objectives.base import Objective, RunContext, ValidationFigures
from recspark.train.objectives.rating import RatingObjective
from recspark.train.optim import Optimizers, Schedule, make_optimizer
from recspark.train.precision import autocast, matmul_precision, resolve_precision

log = logging.getLogger(__name__)

VALIDATION_BATCH = 65536
# How often the loop looks at the running loss for NaN: every step would sync a GPU every step.
NAN_CHECK_STEPS = 50


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


@dataclass
class EpochRecord:
    """One epoch's figures, as logged to stderr and kept in checkpoints.

    ``validation_loss`` is the objective's own loss (MSE for rating, the sampled softmax
    cross-entropy for ranking); ``validation_rmse`` and ``validation_mae`` are None for a ranking
    model, ``validation_auc`` is None for a rating model. :meth:`published` gives the layout of
    ``metrics.json``'s history.
    """

    epoch: int
    train_loss: float
    validation_loss: float
    validation_rmse: float | None
    validation_mae: float | None
    validation_auc: float | None
    rows: int
    seconds: float
    rows_per_second: float
    lr: float

    def published(self) -> dict[str, Any]:
        """This record as ``metrics.json``'s history holds it: every field by its own name.

        A ranking record has ``validation_auc`` and null ``validation_rmse``/``validation_mae``;
        a rating record the reverse. Files written before the figures had their own names held
        a ranking model's root loss and one minus its AUC under the rating names; their readers
        (:meth:`from_saved`, :func:`recspark.evaluate.report.training_curves`) still read them.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, entry: dict[str, Any], objective: str) -> EpochRecord:
        """A record from a checkpoint's history, in this layout or the :meth:`published` one.

        Checkpoints written before the figures had their own names hold the published layout;
        ``objective`` (``model.objective``, the same for a run and its resume) says how to read it.
        """
        if "validation_auc" in entry:
            return cls(**entry)
        if objective == "ranking":
            return cls(
                **{
                    **entry,
                    "validation_rmse": None,
                    "validation_mae": None,
                    "validation_auc": 1.0 - entry["validation_mae"],
                }
            )
        return cls(**entry, validation_auc=None)


# The validation figures of an EpochRecord, and of the train command's metrics and summary.
VALIDATION_FIELDS = ("validation_loss", "validation_rmse", "validation_mae", "validation_auc")


def validation_fields(figures: ValidationFigures) -> dict[str, float | None]:
    """The :data:`VALIDATION_FIELDS` of an :class:`EpochRecord` from a validation pass."""
    values = (figures.loss, figures.rmse, figures.mae, figures.auc)
    return dict(zip(VALIDATION_FIELDS, values, strict=True))


@dataclass
class FitResult:
    """History of a run, its best epoch, and whether patience ran out before ``epochs``."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    devices: list[str] = field(default_factory=list)  # one per process, rank order


def init_model(spec: dict[str, Any], seed: int) -> nn.Module:
    """Build a model from :func:`recspark.model.registry.build_model` arguments under ``seed``."""
    seed_everything(seed)
    return build_model(**spec)


def _raise_not_finite(value: float, steps: int) -> None:
    raise FloatingPointError(
        f"the training loss became {value} by step {steps}: lower train.lr (or raise "
        "train.weight_decay), and check the ratings for extreme values"
    )


def train_epoch(
    model: nn.Module,
    batches: Iterable[dict],
    optimizer: Optimizers,
    schedule: Schedule | None,
    device: torch.device,
    weight_decay: float = 0.0,
    max_steps: int | None = None,
    *,
    objective: Objective | None = None,
    context: RunContext | None = None,
    precision: str = "auto",
) -> tuple[float, int]:
    """One pass of training over ``batches``, the objective's loss at every step.

    Parameters
    ----------
    model
        The model, possibly wrapped in DistributedDataParallel.
    batches
        Dict batches ``{user_idx, item_idx, rating[, weight]}``
        (:func:`recspark.train.feeding.open_feed`).
    optimizer, schedule
        Stepped once per batch; ``schedule`` may be None.
    weight_decay
        Weight of :meth:`EmbeddingModel.penalty`, the L2 norm of the embedding rows of the pairs
        the objective's loss used.
    max_steps
        Stop after this many batches (data-parallel runs keep every process in step).
    objective
        What each batch's loss is; the rating objective (MSE) when None.
    context
        Facts about the run (``n_items``, ``seed``, ``epoch``, ``rank``) for the objective.
    precision
        ``train.precision``: matrix products in fp32 or tf32, or each forward pass and loss
        under bfloat16 autocast (:mod:`recspark.train.precision`).

    Returns
    -------
    (the objective's reported loss, a mean over the rows it counted; rows read)
    """
    objective = objective or RatingObjective()
    model.train()
    objective.start_epoch(model, device, context or RunContext())
    core = unwrap(model)
    # Unwrapped (one process), the penalty's gradient is added by rows after backward instead of
    # a second lookup of every row in the graph; under DDP it must be in the reduced gradient.
    by_rows = bool(weight_decay) and core is model and core.penalty_by_rows()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    counted, rows, steps = 0, 0, 0
    precision = resolve_precision(precision, device)
    with matmul_precision(precision):
        # islice leaves without asking the feed for a batch past max_steps (read for nothing).
        for batch in itertools.islice(batches, max_steps):
            with autocast(precision, device):
                step = objective.batch_loss(model, batch, device)
            loss = (
                step.loss + weight_decay * core.penalty(step.users, step.items, step.head_rows)
                if weight_decay and not by_rows
                else step.loss
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if by_rows:
                core.add_penalty_gradient(step.users, step.items, weight_decay, step.head_rows)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            loss_sum += step.reported_sum
            counted += step.counted
            rows += step.rows
            steps += 1
            if steps % NAN_CHECK_STEPS == 0 and not math.isfinite(float(loss_sum)):
                _raise_not_finite(float(loss_sum), steps)
    total = float(loss_sum)
    if not math.isfinite(total):
        _raise_not_finite(total, steps)
    return (total / counted if counted else math.nan), rows


class LocalProcess:
    """The single-process case of the collective operations :func:`fit` uses.

    :class:`recspark.train.distributed.TorchProcessGroup` answers the same calls across processes.
    """

    rank = 0
    world_size = 1

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, batch_weight: float) -> nn.Module:
        """The module to train; ``batch_weight`` is this process's share of a global batch."""
        return model

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes."""
        return list(values)

    def barrier(self) -> None:
        """Wait until every process gets here."""


@dataclass(frozen=True)
class FeedPlan:
    """How one process reads the train split: its shard, batch size and steps per epoch."""

    shard: int | None
    shard_count: int | None
    batch_size: int
    steps_per_epoch: int
    max_steps: int | None
    batch_weight: float
    rows_per_epoch: int


#: ``train.batch_size: auto``: an epoch of about :data:`AUTO_BATCH_STEPS` steps, in batches of
#: 1,024 to 65,536 rows. On the CPU a step has a fixed cost (a few ms of Python and dispatch) that
#: small batches pay too often; 8M train rows in 65,536-row batches run at ~0.9M rows/s on one
#: core with ``sparse_adam``, where 4,096-row batches ran at ~110k.
AUTO_BATCH_STEPS = 128
AUTO_BATCH_BOUNDS = (1024, 65536)


def auto_batch_size(setting: int | str, rows: int) -> int:
    """``train.batch_size``: itself when a number; for ``auto``, the power of two nearest
    ``rows / AUTO_BATCH_STEPS`` within :data:`AUTO_BATCH_BOUNDS`.

    Large tables get large batches (a step's fixed cost is paid fewer times) and small ones keep
    enough steps per epoch to converge: 4,096 for the 640k train rows of the default synthetic
    data, 65,536 for 8M.
    """
    if setting != "auto":
        return int(setting)
    low, high = AUTO_BATCH_BOUNDS
    nearest = 2 ** round(math.log2(max(1, rows) / AUTO_BATCH_STEPS))
    return min(high, max(low, nearest))


#: ``train.epochs: auto``: enough epochs to train about :data:`AUTO_EPOCH_ROWS` rows, within
#: :data:`AUTO_EPOCH_BOUNDS`. Small tables need every one of 8 epochs (the default synthetic data's
#: lists beat most-popular by 0.014 NDCG@10 after 8, by 0.0003 after 5); on 8M train rows 5 epochs
#: reach validation RMSE 0.805, below Spark ALS rank 32 x 10 (0.829), in 82-100 s where 8 took
#: 147-153 s (benchmarks/bench_train_vs_als.py).
AUTO_EPOCH_ROWS = 40_000_000
AUTO_EPOCH_BOUNDS = (3, 8)


def auto_epochs(setting: int | str, rows: int) -> int:
    """``train.epochs``: itself when a number; for ``auto``, ``AUTO_EPOCH_ROWS / rows`` rounded
    to the nearest whole number within :data:`AUTO_EPOCH_BOUNDS`: 8 up to 5.3M train rows, 5
    for 8M, 3 from 11.5M.

    A large table gives each epoch many rows of every user and item, so fewer passes over it
    converge; the one-cycle schedule spans whatever number of epochs this gives.
    """
    if setting != "auto":
        return int(setting)
    low, high = AUTO_EPOCH_BOUNDS
    return min(high, max(low, math.floor(AUTO_EPOCH_ROWS / max(1, rows) + 0.5)))


def plan_feed(row_counts: list[int], batch_size: int | str, rank: int, world_size: int) -> FeedPlan:
    """Split an epoch over processes so that each does the same number of steps.

    Petastorm gives row group ``i`` to shard ``i % world_size``, so shards can hold different row
    counts; a process that ran out of batches before the others would leave them waiting forever
    inside DistributedDataParallel. Each process therefore gets a batch size proportional to its
    shard (the global batch stays ``batch_size``), every process stops after the same number of
    steps, and each one's gradient is weighted by its share of the global batch, which makes a
    step the same average over ``batch_size`` rows that one process would take.
    """
    total = sum(row_counts)
    if total == 0:
        raise ValueError("the train split is empty: prepare must leave train rows")
    batch_size = auto_batch_size(batch_size, total)
    steps = math.ceil(total / batch_size)
    if world_size == 1:
        return FeedPlan(None, None, batch_size, steps, None, 1.0, total)
    if len(row_counts) < world_size:
        raise ValueError(
            f"the train split has {len(row_counts)} Parquet row groups, fewer than "
            f"train.num_processes={world_size}: lower train.num_processes, or re-run prepare with "
            "a smaller prepare.row_group_mb or prepare.rows_per_file"
        )
    shard_rows = [sum(row_counts[shard::world_size]) for shard in range(world_size)]
    batches = [math.ceil(rows / steps) for rows in shard_rows]
    steps = min(math.ceil(rows / size) for rows, size in zip(shard_rows, batches, strict=True))
    used = sum(min(rows, size * steps) for rows, size in zip(shard_rows, batches, strict=True))
    return FeedPlan(
        rank, world_size, batches[rank], steps, steps, batches[rank] / sum(batches), used
    )


def settings_fingerprint(values: dict[str, Any]) -> str:
    """A short digest of what a checkpoint must agree with to be resumed from."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate_split(
    model: nn.Module,
    path: str,
    device: torch.device,
    objective: Objective | None = None,
    context: RunContext | None = None,
    *,
    parallel: LocalProcess | None = None,
    seed: int = 0,
    precision: str = "auto",
    feed: str = "auto",
) -> ValidationFigures:
    """The objective's validation figures of ``model`` over a whole prepared split.

    Parameters
    ----------
    model
        The model, possibly wrapped in DistributedDataParallel.
    objective
        Whose figures; the rating objective when None.
    context
        Facts about the run for the objective.
    parallel
        In a data-parallel run each process validates its own shard of row groups (when there
        are enough of them) and the figures are pooled over processes.
    precision
        ``train.precision``, as in training (:mod:`recspark.train.precision`); the figures are
        float32 sums whatever it is.
    feed
        ``train.feed`` (:func:`recspark.train.feeding.open_feed`).

    Raises
    ------
    ValueError
        When the split holds no rows to validate on.
    """
    objective = objective or RatingObjective()
    parallel = parallel or LocalProcess()
    sharded = parallel.world_size > 1 and len(row_groups(path)) >= parallel.world_size
    core = unwrap(model).to(device)
    with open_feed(
        path,
        VALIDATION_BATCH,
        shuffle=False,
        seed=seed,
        shard=parallel.rank if sharded else None,
        shard_count=parallel.world_size if sharded else None,
        device=device,
        feed=feed,
    ) as batches:
        precision = resolve_precision(precision, device)
        with matmul_precision(precision), autocast(precision, device):
            figures = objective.validation(core, batches, device, context or RunContext())
    if sharded:
        figures = figures.pooled(parallel.sum(figures.sums()))
    if figures.rows == 0:
        raise ValueError(f"the split {path} is empty: prepare must leave validation rows")
    return figures


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
) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of its best validation epoch.

    Parameters
    ----------
    model
        An :class:`~recspark.model.embedding.EmbeddingModel` (unwrapped); its weights at entry are
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
    """
    parallel = parallel or LocalProcess()
    objective = objective or RatingObjective()
    row_counts = row_groups(train_path)
    plan = plan_feed(row_counts, settings.batch_size, parallel.rank, parallel.world_size)
    settings = dataclasses.replace(settings, epochs=auto_epochs(settings.epochs, sum(row_counts)))
    model.to(device)
    optimizer = make_optimizer(
        model,
        settings.optimizer,
        settings.lr,
        settings.optimizer_weight_decay,
        settings.momentum,
        head_lr_scale=settings.head_lr_scale,
    )
    schedule = Schedule(
        optimizer,
        settings.schedule,
        settings.lr,
        settings.epochs,
        plan.steps_per_epoch,
        settings.restart_epochs,
        settings.restart_mult,
    )
    state = Checkpoint(fingerprint=fingerprint)
    if resume and checkpoint_dir is not None:
        saved = load_checkpoint(checkpoint_dir, fingerprint)
        if saved is not None:
            state = saved
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
            schedule.load_state_dict(state.schedule)
            if parallel.is_leader:
                log.info("resuming after epoch %d from %s", state.epoch, checkpoint_dir)
        elif parallel.is_leader:
            log.info("train.resume: no checkpoint under %s; starting from epoch 1", checkpoint_dir)
    result = FitResult(
        history=[EpochRecord.from_saved(entry, objective.name) for entry in state.history],
        best_epoch=state.best_epoch,
        stopped_early=state.stopped_early,
        resumed_from_epoch=state.epoch,
    )
    trained = parallel.wrap(model, plan.batch_weight)
    context = RunContext(
        n_users=getattr(model, "n_users", None),
        n_items=getattr(model, "n_items", None),
        seed=settings.seed,
        rank=parallel.rank,
        world_size=parallel.world_size,
    )
    epoch = state.epoch
    while epoch < settings.epochs and not state.stopped_early:
        epoch += 1
        context = dataclasses.replace(context, epoch=epoch)
        seed_everything(epoch_seed(settings.seed, epoch, parallel.rank))
        started = time.perf_counter()
        with open_feed(
            train_path,
            plan.batch_size,
            shuffle=True,
            seed=settings.seed + epoch,
            shard=plan.shard,
            shard_count=plan.shard_count,
            workers=settings.reader_workers,
            shuffle_buffer=settings.shuffle_buffer,
            fields=objective.feed_fields,
            feed=settings.feed,
            device=device,
        ) as batches:
            train_loss, rows = train_epoch(
                trained,
                batches,
                optimizer,
                schedule,
                device,
                settings.weight_decay,
                plan.max_steps,
                objective=objective,
                context=context,
                precision=settings.precision,
            )
        train_sum, rows = parallel.sum([train_loss * rows, rows])
        train_loss = train_sum / rows
        elapsed = time.perf_counter() - started
        figures = evaluate_split(
            trained,
            validation_path,
            device,
            objective,
            context,
            parallel=parallel,
            seed=settings.seed,
            precision=settings.precision,
            feed=settings.feed,
        )
        if not math.isfinite(figures.loss):
            raise FloatingPointError(
                f"the validation loss is {figures.loss} after epoch {epoch}: lower train.lr"
            )
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            **validation_fields(figures),
            rows=int(rows),
            seconds=elapsed,
            rows_per_second=rows / elapsed if elapsed > 0 else math.nan,
            lr=optimizer.param_groups[0]["lr"],
        )
        result.history.append(record)
        if figures.loss < state.best_loss - 1e-7:
            state.best_loss, state.waited, state.best_epoch = figures.loss, 0, epoch
            state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            state.waited += 1
            state.stopped_early = (
                state.waited >= max(1, settings.patience) and epoch < settings.epochs
            )
        result.best_epoch = state.best_epoch
        result.stopped_early = state.stopped_early
        if parallel.is_leader:
            per_epoch = time.perf_counter() - started
            log.info(
                "epoch %d/%d train_loss %.4f valid_loss %.4f (%s) %.0f rows/s lr %.2e, ~%.0fs left",
                epoch,
                settings.epochs,
                train_loss,
                figures.loss,
                figures.describe(),
                record.rows_per_second,
                record.lr,
                (settings.epochs - epoch) * per_epoch,
            )
            if state.stopped_early:
                log.info("validation loss has not improved for %d epochs: stopping", state.waited)
        state.epoch = epoch
        if checkpoint_dir is not None:
            state.model = model.state_dict()
            state.optimizer = optimizer.state_dict()
            state.schedule = schedule.state_dict()
            state.history = [dataclasses.asdict(r) for r in result.history]
            if parallel.is_leader:
                save_checkpoint(checkpoint_dir, state)
            parallel.barrier()
        if on_epoch is not None:
            on_epoch(record, model)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return result
