"""One pass of training over a feed: the objective's loss, the L2 penalty, the optimizer step.

:func:`train_epoch` is the inner loop of :func:`recspark.train.loop.fit` (and of the training
benchmarks): for every batch it asks the objective (:mod:`recspark.train.objectives`) for its
loss, adds the L2 penalty on the embedding rows the batch used (by autograd, or added to the
gradients by rows where the model can), steps the optimizer and the schedule, and watches the
running loss for NaN. It knows nothing of epochs, checkpoints or Spark.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Protocol, cast

import torch
from torch import nn

from recspark.core.torch_utils import unwrap
from recspark.train.objectives.base import Objective, RunContext
from recspark.train.objectives.rating import RatingObjective
from recspark.train.optim import Optimizers, Schedule
from recspark.train.precision import autocast, matmul_precision, resolve_precision

# How often the loop looks at the running loss for NaN: every step would sync a GPU every step.
NAN_CHECK_STEPS = 50


class PenalisedModel(Protocol):
    """What the loop asks of a model beyond ``forward``: the L2 penalty on the rows a batch used.

    Every trainable kind answers it (:meth:`recspark.model.base.EmbeddingModel.penalty`).
    """

    def penalty(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, head_rows: int | None = None
    ) -> torch.Tensor: ...

    def penalty_by_rows(self) -> bool: ...

    def add_penalty_gradient(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        weight: float,
        head_rows: int | None = None,
    ) -> None: ...


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
    *,
    weight_decay: float = 0.0,
    max_steps: int | None = None,
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
    core = cast(PenalisedModel, unwrap(model))
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
