"""The validation pass of a run: an objective's figures over a whole prepared split.

:func:`evaluate_split` reads a prepared split through the feed (in a data-parallel run each
process reads its own shard of row groups when there are enough of them) and pools the
objective's validation figures (:class:`~recspark.train.objectives.base.ValidationFigures`) over
processes. The training loop calls it after every epoch; the train job calls it on the test split.
A run that validates the same split many times reads it once: a :class:`HeldSplit` keeps the
batches of its first pass for the next ones (they are read unshuffled, so every pass sees the same
batches in the same order, read again or not).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from recspark.core.torch_utils import unwrap
from recspark.train.feeding import FeedSpec, read_feed, row_groups
from recspark.train.objectives.base import Objective, RunContext, ValidationFigures
from recspark.train.objectives.rating import RatingObjective
from recspark.train.precision import autocast, matmul_precision, resolve_precision
from recspark.train.processes import LocalProcess

VALIDATION_BATCH = 65536


@dataclass
class HeldSplit:
    """A split's validation batches, read by the first :func:`evaluate_split` given it and kept
    for the passes after it (one process's share: hold one per split and process)."""

    batches: list[dict[str, Any]] | None = None


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
    held: HeldSplit | None = None,
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
    held
        Where the split's batches are kept between passes: read into it when empty, read from
        it when not; None reads the split and keeps nothing.

    Raises
    ------
    ValueError
        When the split holds no rows to validate on.
    """
    objective = objective or RatingObjective()
    parallel = parallel or LocalProcess()
    sharded = parallel.world_size > 1 and len(row_groups(path)) >= parallel.world_size
    core = unwrap(model).to(device)
    spec = FeedSpec(
        batch_size=VALIDATION_BATCH,
        shuffle=False,
        seed=seed,
        shard=parallel.rank if sharded else None,
        shard_count=parallel.world_size if sharded else None,
        feed=feed,
    )
    with contextlib.ExitStack() as stack:
        batches: Iterable[dict[str, Any]]
        if held is not None and held.batches is not None:
            batches = held.batches
        else:
            batches = stack.enter_context(read_feed(path, spec, device))
            if held is not None:
                held.batches = batches = list(batches)
        precision = resolve_precision(precision, device)
        with matmul_precision(precision), autocast(precision, device):
            figures = objective.validation(core, batches, device, context or RunContext())
    if sharded:
        figures = figures.pooled(parallel.sum(figures.sums()))
    if figures.rows == 0:
        raise ValueError(f"the split {path} is empty: prepare must leave validation rows")
    return figures
