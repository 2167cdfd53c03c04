"""The training loop: plain functions over Petastorm loaders opened per epoch.

:func:`fit` runs epochs of a train function and a validation function (picked by objective in
:func:`epoch_functions`), steps the learning-rate schedule per batch, stops early when the
validation loss has not improved for ``patience`` epochs, checkpoints after every epoch, and hands
back the best weights. The same loop runs in one process and in every process of a data-parallel
run (:mod:`recspark.train.distributed`): a :class:`LocalProcess` or its distributed subclass says how to
wrap the model and how to add numbers up across processes. It knows nothing of Spark or of where
artifacts go; the train command wires it to paths and writes what it returns.

Repeatability: the model is built under ``torch.manual_seed(seed)`` (:func:`init_model`), and every
epoch reseeds all random generators from ``(seed, epoch, rank)`` and reads its row groups in an
order fixed by ``seed + epoch``. An epoch's randomness thus depends on nothing that happened in
this process before it, which is what lets a resumed run end exactly where an uninterrupted one
does (with ``train.reader_workers: 1``; more reader threads deliver row groups in arrival order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.core.torch_utils import epoch_seed, seed_everything, unwrap
from recspark.model.embedding import Ensemble
from recspark.train.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from recspark.train.feeding import FEED_FIELDS, open_feed, row_groups

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw", "sparse_adam", "sparse_sgd")
SPARSE_OPTIMIZERS = ("sparse_adam", "sparse_sgd")
SCHEDULES = ("one_cycle", "cosine", "constant")
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
    times longer.
    """

    epochs: int = 10
    batch_size: int = 4096
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


@dataclass
class EpochRecord:
    """One epoch's figures, as written to ``metrics.json`` and logged to stderr."""

    epoch: int
    train_loss: float
    validation_loss: float
    validation_rmse: float
    validation_mae: float
    rows: int
    seconds: float
    rows_per_second: float
    lr: float


@dataclass
class FitResult:
    """History of a run, its best epoch, and whether patience ran out before ``epochs``."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    resumed_from_epoch: int = 0


def init_model(spec: dict[str, Any], seed: int) -> nn.Module:
    """Build a model from :func:`recspark.model.embedding.build_model` arguments under ``seed``."""
    from recspark.model.embedding import build_model

    seed_everything(seed)
    return build_model(**spec)


def is_sparse_optimizer(name: str) -> bool:
    """Whether ``train.optimizer`` needs the model built with sparse embedding gradients."""
    return name in SPARSE_OPTIMIZERS


class Optimizers:
    """One or more torch optimizers stepped as one.

    ``sparse_adam`` needs two: :class:`torch.optim.SparseAdam` for the embedding tables (sparse
    gradients) and Adam for any dense layers. The object answers the parts of the optimizer
    interface the loop uses: ``zero_grad``, ``step``, ``param_groups``, ``state_dict``.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != len(self.optimizers):
            raise ValueError("the checkpoint's optimizer does not match train.optimizer")
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> Optimizers:
    """SGD with momentum, Adam, AdamW, or a sparse path for large tables.

    ``sparse_adam`` runs SparseAdam over the embedding tables and Adam over dense layers;
    ``sparse_sgd`` runs SGD with momentum over all of them (SGD accepts sparse gradients). Both
    need a model built with ``sparse=True``, and touch only the rows a batch uses, so a step costs
    the batch, not the table. ``weight_decay`` here is the optimizer's decay of every weight.
    """
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    if name == "sgd":
        return Optimizers(
            [torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)]
        )
    if name == "adam":
        return Optimizers([torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)])
    if name == "adamw":
        return Optimizers([torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)])
    if name in SPARSE_OPTIMIZERS:
        if weight_decay:
            raise ValueError(
                f"{name} cannot decay sparse rows: set train.optimizer_weight_decay=0 and use "
                "train.weight_decay (the per-batch L2 penalty) instead"
            )
        sparse = [
            p
            for m in unwrap(model).modules()
            if getattr(m, "sparse", False)
            for p in m.parameters()
        ]
        if not sparse:
            raise ValueError(f"{name} needs a model built with sparse=True embeddings")
        if name == "sparse_sgd":
            return Optimizers([torch.optim.SGD(params, lr=lr, momentum=momentum)])
        sparse_ids = {id(p) for p in sparse}
        dense = [p for p in params if id(p) not in sparse_ids]
        optimizers: list[torch.optim.Optimizer] = [torch.optim.SparseAdam(sparse, lr=lr)]
        if dense:
            optimizers.append(torch.optim.Adam(dense, lr=lr))
        return Optimizers(optimizers)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


class Schedule:
    """A per-batch learning-rate schedule over every optimizer of an :class:`Optimizers`.

    ``one_cycle``: torch's OneCycleLR over the whole run (warm up for 30% of the steps, then anneal;
    momentum cycles the other way). ``cosine``: cosine annealing with warm restarts, the first
    cycle ``restart_epochs`` epochs long, each next one ``restart_mult`` times longer.
    ``constant``: ``lr`` throughout. Steps beyond the planned total are ignored, so an extra batch
    never makes one-cycle raise.
    """

    def __init__(
        self,
        optimizers: Optimizers,
        name: str,
        lr: float,
        epochs: int,
        steps_per_epoch: int,
        restart_epochs: int = 1,
        restart_mult: int = 1,
    ):
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
        steps_per_epoch = max(1, steps_per_epoch)
        self.name = name
        self.last_epoch = 0
        self.total_steps = epochs * steps_per_epoch if name == "one_cycle" else math.inf
        self.schedulers: list[torch.optim.lr_scheduler.LRScheduler] = []
        for optimizer in optimizers.optimizers:
            if name == "one_cycle" and epochs > 0:
                # SGD without momentum has none to cycle; one-cycle would switch it on.
                cycle = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
                self.schedulers.append(
                    torch.optim.lr_scheduler.OneCycleLR(
                        optimizer,
                        max_lr=lr,
                        total_steps=int(self.total_steps),
                        cycle_momentum=cycle,
                    )
                )
            elif name == "cosine":
                self.schedulers.append(
                    torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                        optimizer, T_0=restart_epochs * steps_per_epoch, T_mult=restart_mult
                    )
                )

    def step(self) -> None:
        if self.last_epoch >= self.total_steps:
            return
        for scheduler in self.schedulers:
            scheduler.step()
        self.last_epoch += 1

    def state_dict(self) -> dict:
        return {
            "last_epoch": self.last_epoch,
            "schedulers": [s.state_dict() for s in self.schedulers],
        }

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = state["last_epoch"]
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)


def _batch_tensors(batch: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    return (
        batch[USER_IDX].to(device=device, dtype=torch.long, non_blocking=True),
        batch[ITEM_IDX].to(device=device, dtype=torch.long, non_blocking=True),
        batch[RATING].to(device=device, dtype=torch.float32, non_blocking=True),
    )


def _raise_not_finite(value: float, steps: int) -> None:
    raise FloatingPointError(
        f"the training loss became {value} by step {steps}: lower train.lr (or raise "
        "train.weight_decay), and check the ratings for extreme values"
    )


def train_epoch(
    model: nn.Module,
    batches,
    optimizer: Optimizers,
    schedule: Schedule | None,
    device: torch.device,
    weight_decay: float = 0.0,
    max_steps: int | None = None,
    *,
    context: dict[str, Any] | None = None,
) -> tuple[float, int]:
    """One pass of MSE training over ``batches``.

    Parameters
    ----------
    model
        The model, possibly wrapped in DistributedDataParallel.
    batches
        Dict batches ``{user_idx, item_idx, rating}`` (:func:`recspark.train.feeding.open_feed`).
    optimizer, schedule
        Stepped once per batch; ``schedule`` may be None.
    weight_decay
        Weight of :meth:`EmbeddingModel.penalty`, the L2 norm of the embedding rows in the batch.
    max_steps
        Stop after this many batches (data-parallel runs keep every process in step).
    context
        Facts about the run (``n_users``, ``n_items``, ``seed``, ``epoch``, ``rank``); unused by
        the rating objective, part of the call shape every objective shares.

    Returns
    -------
    (mean MSE over the rows seen, rows seen); for an ensemble, its members' mean MSE
    """
    model.train()
    penalty = unwrap(model).penalty
    ensemble = isinstance(unwrap(model), Ensemble)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    rows, steps = 0, 0
    for batch in batches:
        if max_steps is not None and steps >= max_steps:
            break
        users, items, ratings = _batch_tensors(batch, device)
        if ensemble:
            # The sum of the members' own losses: each member's gradient is exactly what it
            # would get trained alone, so they learn independently. Reported: their mean MSE.
            predicted = model(users, items, members=True)
            each = (predicted - ratings).pow(2).mean(dim=1)
            fit_loss, mse = each.sum(), each.mean()
        else:
            mse = fit_loss = nn.functional.mse_loss(model(users, items), ratings)
        loss = fit_loss + weight_decay * penalty(users, items) if weight_decay else fit_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        loss_sum += mse.detach() * len(ratings)
        rows += len(ratings)
        steps += 1
        if steps % NAN_CHECK_STEPS == 0 and not math.isfinite(float(loss_sum)):
            _raise_not_finite(float(loss_sum), steps)
    total = float(loss_sum)
    if not math.isfinite(total):
        _raise_not_finite(total, steps)
    return (total / rows if rows else math.nan), rows


@torch.no_grad()
def validation_loss(
    model: nn.Module, batches, device: torch.device, *, context: dict[str, Any] | None = None
) -> tuple[float, float, int]:
    """(MSE, MAE, rows) of the model over ``batches``; ``context`` as in :func:`train_epoch`."""
    model.eval()
    squared = torch.zeros((), dtype=torch.float64, device=device)
    absolute = torch.zeros((), dtype=torch.float64, device=device)
    rows = 0
    for batch in batches:
        users, items, ratings = _batch_tensors(batch, device)
        error = model(users, items) - ratings
        squared += (error.double() ** 2).sum()
        absolute += error.double().abs().sum()
        rows += len(ratings)
    if rows == 0:
        return math.nan, math.nan, 0
    return float(squared) / rows, float(absolute) / rows, rows


def epoch_functions(objective: str) -> tuple[Callable, Callable]:
    """(train function, validation function) of an objective.

    Both share the call shapes of :func:`train_epoch` and :func:`validation_loss`, including the
    keyword-only ``context``. ``rating`` is MSE on ratings (this module); ``ranking`` lives in
    :mod:`recspark.train.objectives.ranking`. The validation function returns ``(loss, second figure, rows)`` where
    the loss is a mean over rows (so processes can combine it) and lower is better.
    """
    if objective == "rating":
        return train_epoch, validation_loss
    if objective == "ranking":
        ranking = importlib.import_module("recspark.train.objectives.ranking")
        return ranking.train_epoch, ranking.validation_loss
    raise ValueError(f"unknown model.objective {objective!r}; choose 'rating' or 'ranking'")


def evaluate_split(
    model: nn.Module,
    path: str,
    device: torch.device,
    objective: str = "rating",
    context: dict[str, Any] | None = None,
) -> tuple[float, float, int]:
    """The objective's validation figures of ``model`` over a whole prepared split."""
    _, validation_fn = epoch_functions(objective)
    model.to(device)
    with open_feed(path, VALIDATION_BATCH, shuffle=False, seed=0) as batches:
        loss, second, rows = validation_fn(model, batches, device, context=dict(context or {}))
    if rows == 0:
        raise ValueError(f"the split {path} is empty: prepare must leave validation rows")
    return loss, second, rows


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


def plan_feed(row_counts: list[int], batch_size: int, rank: int, world_size: int) -> FeedPlan:
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


def fit(
    model: nn.Module,
    train_path: str,
    validation_path: str,
    settings: TrainSettings,
    device: torch.device,
    *,
    objective: str = "rating",
    context: dict[str, Any] | None = None,
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
        An :class:`~recspark.model.embedding.EmbeddingModel` (unwrapped); its weights at entry are the
        starting point (fresh from :func:`init_model`, or warm-started).
    train_path, validation_path
        Prepared Parquet folders.
    objective
        ``rating`` or ``ranking`` (:func:`epoch_functions`).
    context
        Extra facts handed to the objective's functions (``n_users``, ``n_items``, ...).
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
    train_fn, validation_fn = epoch_functions(objective)
    plan = plan_feed(
        row_groups(train_path), settings.batch_size, parallel.rank, parallel.world_size
    )
    validation_groups = len(row_groups(validation_path))
    shard_validation = parallel.world_size > 1 and validation_groups >= parallel.world_size
    model.to(device)
    optimizer = make_optimizer(
        model, settings.optimizer, settings.lr, settings.optimizer_weight_decay, settings.momentum
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
        history=[EpochRecord(**record) for record in state.history],
        best_epoch=state.best_epoch,
        stopped_early=state.stopped_early,
        resumed_from_epoch=state.epoch,
    )
    trained = parallel.wrap(model, plan.batch_weight)
    run_context = {
        "n_users": getattr(model, "n_users", None),
        "n_items": getattr(model, "n_items", None),
        "seed": settings.seed,
        "rank": parallel.rank,
        "world_size": parallel.world_size,
        **(context or {}),
    }
    epoch = state.epoch
    while epoch < settings.epochs and not state.stopped_early:
        epoch += 1
        run_context["epoch"] = epoch
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
            fields=tuple(run_context.get("feed_fields", FEED_FIELDS)),
        ) as batches:
            train_loss, rows = train_fn(
                trained,
                batches,
                optimizer,
                schedule,
                device,
                settings.weight_decay,
                plan.max_steps,
                context=run_context,
            )
        train_sum, rows = parallel.sum([train_loss * rows, rows])
        train_loss = train_sum / rows
        elapsed = time.perf_counter() - started
        with open_feed(
            validation_path,
            VALIDATION_BATCH,
            shuffle=False,
            seed=settings.seed,
            shard=parallel.rank if shard_validation else None,
            shard_count=parallel.world_size if shard_validation else None,
        ) as batches:
            loss, second, seen = validation_fn(
                unwrap(trained), batches, device, context=run_context
            )
        if shard_validation:
            loss_sum, second_sum, seen = parallel.sum([loss * seen, second * seen, seen])
            loss, second = loss_sum / seen, second_sum / seen
        if seen == 0:
            raise ValueError("the validation split is empty: prepare must leave validation rows")
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"the validation loss is {loss} after epoch {epoch}: lower train.lr"
            )
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            validation_loss=loss,
            validation_rmse=math.sqrt(loss),
            validation_mae=second,
            rows=int(rows),
            seconds=elapsed,
            rows_per_second=rows / elapsed if elapsed > 0 else math.nan,
            lr=optimizer.param_groups[0]["lr"],
        )
        result.history.append(record)
        if loss < state.best_loss - 1e-7:
            state.best_loss, state.waited, state.best_epoch = loss, 0, epoch
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
            figures = (
                f"auc {1.0 - second:.4f}" if objective == "ranking"
                else f"rmse {record.validation_rmse:.4f}, mae {second:.4f}"
            )
            log.info(
                "epoch %d/%d train_loss %.4f valid_loss %.4f (%s) %.0f rows/s lr %.2e, ~%.0fs left",
                epoch,
                settings.epochs,
                train_loss,
                loss,
                figures,
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
