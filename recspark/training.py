"""The training loop: plain functions over Petastorm loaders opened per epoch.

:func:`fit` runs epochs of :func:`train_epoch` and :func:`validation_loss`, steps the learning-rate
schedule per batch, stops early when the validation loss has not improved for ``patience`` epochs
and hands back the best weights. It knows nothing of Spark or of where artifacts go; the train
command wires it to paths and writes what it returns.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recspark.constants import ITEM_IDX, RATING, USER_IDX
from recspark.feeding import open_feed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """What the loop needs from ``train.*``; plain values, no config object."""

    epochs: int = 10
    batch_size: int = 4096
    lr: float = 0.01
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "one_cycle"
    patience: int = 3
    seed: int = 42
    reader_workers: int = 1
    shuffle_buffer: int = 100_000


@dataclass
class EpochRecord:
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
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


def resolve_device(setting: str = "auto") -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no GPU is visible: use 'auto' or 'cpu'")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """SGD with momentum, Adam, AdamW, or SparseAdam (for models built with sparse embeddings)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sparse_adam":
        if weight_decay:
            raise ValueError("sparse_adam has no weight decay: set train.weight_decay=0")
        return torch.optim.SparseAdam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def make_schedule(
    optimizer: torch.optim.Optimizer, name: str, lr: float, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-batch schedules: one-cycle over the whole run, cosine restarting every epoch, or none."""
    steps_per_epoch = max(1, steps_per_epoch)
    if name == "one_cycle" and epochs > 0:
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=steps_per_epoch)
    return None


def _batch_tensors(batch: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    return (
        batch[USER_IDX].to(device=device, dtype=torch.long),
        batch[ITEM_IDX].to(device=device, dtype=torch.long),
        batch[RATING].to(device=device, dtype=torch.float32),
    )


def train_epoch(
    model: nn.Module,
    batches,
    optimizer: torch.optim.Optimizer,
    schedule,
    device: torch.device,
    weight_decay: float = 0.0,
    max_steps: int | None = None,
) -> tuple[float, int]:
    """One pass of MSE training; returns (mean MSE, rows seen). Stops after ``max_steps``.

    ``weight_decay`` weighs :meth:`EmbeddingModel.penalty`, the L2 norm of the embedding rows in
    the batch, added to the loss.
    """
    model.train()
    loss_sum, rows, steps = 0.0, 0, 0
    for batch in batches:
        if max_steps is not None and steps >= max_steps:
            break
        users, items, ratings = _batch_tensors(batch, device)
        prediction = model(users, items)
        mse = nn.functional.mse_loss(prediction, ratings)
        loss = mse + weight_decay * model.penalty(users, items) if weight_decay else mse
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {steps}: lower train.lr or check the ratings"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # One-cycle must not step past its planned total (the last batch may be an extra one).
        if schedule is not None and schedule.last_epoch < getattr(schedule, "total_steps", math.inf):
            schedule.step()
        loss_sum += mse.item() * len(ratings)
        rows += len(ratings)
        steps += 1
    return (loss_sum / rows if rows else math.nan), rows


@torch.no_grad()
def validation_loss(model: nn.Module, batches, device: torch.device) -> tuple[float, float, int]:
    """(MSE, MAE, rows) of the model over the batches."""
    model.eval()
    squared, absolute, rows = 0.0, 0.0, 0
    for batch in batches:
        users, items, ratings = _batch_tensors(batch, device)
        error = model(users, items) - ratings
        squared += float((error**2).sum())
        absolute += float(error.abs().sum())
        rows += len(ratings)
    if rows == 0:
        raise ValueError("the validation split is empty: prepare must leave validation rows")
    return squared / rows, absolute / rows, rows


def fit(
    model: nn.Module,
    train_path: str,
    validation_path: str,
    settings: TrainSettings,
    train_rows: int,
    device: torch.device,
    on_epoch: Callable[[EpochRecord, nn.Module], None] | None = None,
) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of its best validation epoch."""
    seed_everything(settings.seed)
    model.to(device)
    # weight_decay is applied as the per-batch embedding penalty, not by the optimizer.
    optimizer = make_optimizer(model, settings.optimizer, settings.lr, 0.0, settings.momentum)
    steps_per_epoch = math.ceil(train_rows / settings.batch_size)
    schedule = make_schedule(optimizer, settings.schedule, settings.lr, settings.epochs, steps_per_epoch)
    result = FitResult()
    best_loss, best_state, waited = math.inf, None, 0
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        with open_feed(
            train_path,
            settings.batch_size,
            shuffle=True,
            seed=settings.seed + epoch,
            workers=settings.reader_workers,
            shuffle_buffer=settings.shuffle_buffer,
        ) as batches:
            train_loss, rows = train_epoch(
                model, batches, optimizer, schedule, device, settings.weight_decay
            )
        elapsed = time.perf_counter() - started
        with open_feed(validation_path, 65536, shuffle=False, seed=0) as batches:
            mse, mae, _ = validation_loss(model, batches, device)
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            validation_loss=mse,
            validation_rmse=math.sqrt(mse),
            validation_mae=mae,
            rows=rows,
            seconds=elapsed,
            rows_per_second=rows / elapsed if elapsed > 0 else math.nan,
            lr=optimizer.param_groups[0]["lr"],
        )
        result.history.append(record)
        remaining = (settings.epochs - epoch) * (time.perf_counter() - started)
        log.info(
            "epoch %d/%d train_loss %.4f valid_rmse %.4f valid_mae %.4f %.0f rows/s, ~%.0fs left",
            epoch, settings.epochs, train_loss, record.validation_rmse, mae, record.rows_per_second, remaining,
        )
        if on_epoch is not None:
            on_epoch(record, model)
        if mse < best_loss - 1e-6:
            best_loss, waited, result.best_epoch = mse, 0, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
            if waited > settings.patience:
                log.info("no improvement for %d epochs: stopping early", waited)
                result.stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
