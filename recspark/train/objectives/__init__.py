"""Training objectives: what the loop computes per batch (the loss) and per validation pass.

:func:`for_name` builds the objective ``model.objective`` names: ``rating``
(:class:`~recspark.train.objectives.rating.RatingObjective`, MSE on ratings) or ``ranking``
(:class:`~recspark.train.objectives.ranking.RankingObjective`, BPR or sampled softmax). The
interface they share is :class:`~recspark.train.objectives.base.Objective`.
"""

from __future__ import annotations

import numpy as np

from recspark.train.objectives.base import (
    BatchLoss,
    Objective,
    RunContext,
    ValidationFigures,
)
from recspark.train.objectives.ranking import RankingObjective, RankingSettings
from recspark.train.objectives.rating import RatingObjective

OBJECTIVES = ("rating", "ranking")

__all__ = [
    "OBJECTIVES",
    "BatchLoss",
    "Objective",
    "RankingObjective",
    "RatingObjective",
    "RunContext",
    "ValidationFigures",
    "for_name",
]


def for_name(
    name: str,
    *,
    ranking: RankingSettings | None = None,
    item_counts: np.ndarray | None = None,
) -> Objective:
    """The objective called ``name`` (``model.objective``).

    Parameters
    ----------
    name
        ``rating`` or ``ranking``.
    ranking
        The ranking objective's settings (``ranking.*``); defaults when None.
    item_counts
        Positives per item of the train split, for popularity sampling (ranking only).

    Raises
    ------
    ValueError
        For any other name.
    """
    if name == "rating":
        return RatingObjective()
    if name == "ranking":
        return RankingObjective(ranking, item_counts)
    raise ValueError(f"unknown model.objective {name!r}; choose one of {OBJECTIVES}")
