"""What a training objective is to the loop: a loss per batch and the figures of a validation pass.

The one training loop (:func:`recspark.train.loop.fit`) owns everything around a batch: feeding,
zeroing gradients, the L2 penalty on the embedding rows the batch used, the backward pass, the
optimizer and schedule steps, the NaN check, early stopping and checkpoints. An
:class:`Objective` says only what is minimised on one batch (:meth:`Objective.batch_loss`) and how
well a model does on the validation split (:meth:`Objective.validation`), after spotlight's
``losses.py`` beside its one ``fit``. Objectives never import the loop; the train job builds one
by name (:func:`recspark.train.objectives.for_name`) and hands it to the loop.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.train.feeding import FEED_FIELDS


@dataclass(frozen=True)
class RunContext:
    """Facts about the run that an objective may need beyond the batches.

    Attributes
    ----------
    n_users, n_items
        Table sizes of the model (None when the model does not say).
    seed
        ``train.seed``.
    epoch
        The epoch being trained (1-based; 0 outside :func:`~recspark.train.loop.fit`).
    rank, world_size
        This process's place in a data-parallel run (0 and 1 in a single process).
    """

    n_users: int | None = None
    n_items: int | None = None
    seed: int = 0
    epoch: int = 0
    rank: int = 0
    world_size: int = 1


class BatchLoss(NamedTuple):
    """What an objective computed on one batch.

    Attributes
    ----------
    loss
        The scalar to minimise, before the loop adds the L2 penalty.
    users, items
        The (user, item) pairs whose embedding rows that penalty weighs.
    reported_sum
        The loss to report, summed over ``counted`` rows; detached.
    counted
        Rows the reported loss averages over (ranking: the batch's positives).
    rows
        Rows read from the feed.
    head_rows
        How many of the first pairs a ranking head beside the model trained on (its rows are
        penalised for those); None: all of them, or no head.
    """

    loss: torch.Tensor
    users: torch.Tensor
    items: torch.Tensor
    reported_sum: torch.Tensor
    counted: int
    rows: int
    head_rows: int | None = None


@dataclass(frozen=True)
class ValidationFigures:
    """One validation pass: the objective's own loss and the figures it reports beside it.

    Every figure is a mean over ``rows``, so processes that each saw a shard can pool them
    (:meth:`pooled`). A figure an objective does not compute is None.

    Attributes
    ----------
    rows
        Rows (rating) or positives (ranking) the means run over.
    loss
        The objective's loss, which early stopping minimises: MSE for rating, the softmax
        cross-entropy of each positive against a fixed item sample for ranking.
    mse, mae
        Squared and absolute error of the predicted ratings (rating only).
    auc
        Share of the item sample scored below each positive, ties counting half (ranking only).
    """

    rows: int
    loss: float
    mse: float | None = None
    mae: float | None = None
    auc: float | None = None

    MEANS: ClassVar[tuple[str, ...]] = ("loss", "mse", "mae", "auc")

    @property
    def rmse(self) -> float | None:
        """Root of :attr:`mse` (rating only)."""
        return None if self.mse is None else math.sqrt(self.mse)

    def sums(self) -> list[float]:
        """``[rows, figure x rows for every figure that is set]``, the parts processes add up."""
        return [float(self.rows)] + [
            getattr(self, name) * self.rows
            for name in self.MEANS
            if getattr(self, name) is not None
        ]

    def pooled(self, sums: list[float]) -> ValidationFigures:
        """The figures over every process, from the element-wise sum of their :meth:`sums`."""
        rows, *totals = sums
        if rows == 0:
            return ValidationFigures(rows=0, loss=math.nan)
        present = [name for name in self.MEANS if getattr(self, name) is not None]
        return ValidationFigures(
            rows=int(rows),
            **{name: total / rows for name, total in zip(present, totals, strict=True)},
        )

    def describe(self) -> str:
        """The reported figures for a log line, e.g. ``rmse 0.8123, mae 0.6402``."""
        named = (("rmse", self.rmse), ("mae", self.mae), ("auc", self.auc))
        return ", ".join(f"{name} {value:.4f}" for name, value in named if value is not None)


class Objective(ABC):
    """A training objective: a per-batch loss and a validation pass, plugged into one loop.

    Subclasses set :attr:`name` (``model.objective``) and :attr:`loss_name` (the loss plot's
    label), and may widen :attr:`feed_fields` with the prepared columns their batches need.
    """

    name: ClassVar[str]
    loss_name: ClassVar[str]
    feed_fields: tuple[str, ...] = FEED_FIELDS

    @abstractmethod
    def start_epoch(self, model: nn.Module, device: torch.device, context: RunContext) -> None:
        """Get ready for one epoch of :meth:`batch_loss` calls (ranking seeds its negatives)."""

    @abstractmethod
    def batch_loss(self, model: nn.Module, batch: dict, device: torch.device) -> BatchLoss:
        """The loss of one dict batch ``{user_idx, item_idx, rating[, weight]}``.

        ``model`` may be wrapped in DistributedDataParallel; it is in training mode.
        """

    @abstractmethod
    def validation(
        self, model: nn.Module, batches: Iterable[dict], device: torch.device, context: RunContext
    ) -> ValidationFigures:
        """The figures of ``model`` (unwrapped) over ``batches``, without gradients."""


def batch_tensors(
    batch: dict, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(user indices, item indices, ratings) of a dict batch on ``device``."""
    return (
        batch[USER_IDX].to(device=device, dtype=torch.long, non_blocking=True),
        batch[ITEM_IDX].to(device=device, dtype=torch.long, non_blocking=True),
        batch[RATING].to(device=device, dtype=torch.float32, non_blocking=True),
    )
