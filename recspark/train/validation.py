"""The validation pass of a run: an objective's figures over a whole prepared split.

:func:`evaluate_split` reads a prepared split through the feed (in a data-parallel run each
process reads its own shard of row groups when there are enough of them) and pools the
objective's validation figures (:class:`~recspark.train.objectives.base.ValidationFigures`) over
processes. The training loop calls it after every epoch; the train job calls it on the test split.
"""

from __future__ import annotations

import torch
from torch import nn

from recspark.core.torch_utils import unwrap
from recspark.train.feeding import FeedSpec, read_feed, row_groups
from recspark.train.objectives.base import Objective, RunContext, ValidationFigures
from recspark.train.objectives.rating import RatingObjective
from recspark.train.precision import autocast, matmul_precision, resolve_precision
from recspark.train.processes import LocalProcess

VALIDATION_BATCH = 65536


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
    spec = FeedSpec(
        batch_size=VALIDATION_BATCH,
        shuffle=False,
        seed=seed,
        shard=parallel.rank if sharded else None,
        shard_count=parallel.world_size if sharded else None,
        feed=feed,
    )
    with read_feed(path, spec, device) as batches:
        precision = resolve_precision(precision, device)
        with matmul_precision(precision), autocast(precision, device):
            figures = objective.validation(core, batches, device, context or RunContext())
    if sharded:
        figures = figures.pooled(parallel.sum(figures.sums()))
    if figures.rows == 0:
        raise ValueError(f"the split {path} is empty: prepare must leave validation rows")
    return figures
