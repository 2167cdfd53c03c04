"""The rating objective with a ranking head beside it (``lists.source: head``).

A rating model trained by MSE alone learns how a user rates the items they chose, never which
items they choose, so its top-N lists lose to simple popularity baselines. The model here also
carries a :class:`~recspark.model.embedding.ListHead` (own user rows ``r_u``, a per-item bias
``c_i``, the model's item rows ``q_i``), and every batch's loss is::

    MSE(rating head) + lists.head_weight * softmax loss(r_u . q_i + c_i)

with every train row a positive of the softmax (``ranking.loss``, ``ranking.negatives``,
``ranking.sampling_alpha``: :mod:`recspark.train.objectives.ranking`; ``ranking.negatives`` at
or above the catalogue is the exact softmax over every item). An ensemble adds every member's
head loss, as it adds their MSEs. The item rows learn from both heads: on MovieLens 100K u1 this
lowered the rating head's RMSE as well as giving lists far above the rating head's own.

The validation pass reports the rating figures (MSE, MAE) and the heads' mean sampled AUC; its
loss, which early stopping minimises, is the rating MSE plus ``head_weight`` times the heads' mean
validation loss. It reads the validation batches once and keeps them for both passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from recspark.core.torch_utils import unwrap
from recspark.model.embedding import Ensemble, HeadView
from recspark.train.objectives.base import BatchLoss, Objective, RunContext, ValidationFigures
from recspark.train.objectives.ranking import RankingObjective
from recspark.train.objectives.rating import RatingObjective


def head_views(model: nn.Module) -> list[HeadView]:
    """The ranking heads of ``model`` (wrapped or not) as models: one per ensemble member.

    The views score through the unwrapped model's tables: in a data-parallel run the head's
    gradients reach the same parameters, which DistributedDataParallel reduces after backward.
    """
    core = unwrap(model)
    members = core.members if isinstance(core, Ensemble) else [core]
    return [HeadView(member) for member in members]


class JointObjective(Objective):
    """MSE of the rating head plus ``head_weight`` times the ranking head's loss.

    Parameters
    ----------
    ranking
        The head's objective; its positive threshold is 0 (every train row is a positive) and
        its confidence weighting none.
    head_weight
        ``lists.head_weight``.
    """

    name: ClassVar[str] = "rating"
    loss_name: ClassVar[str] = "MSE + head softmax"

    def __init__(self, ranking: RankingObjective, head_weight: float = 1.0):
        if ranking.settings.positive_threshold or ranking.settings.confidence != "none":
            settings = dataclasses.replace(
                ranking.settings, positive_threshold=0.0, confidence="none"
            )
            ranking = RankingObjective(settings, ranking.item_counts)
        self.rating = RatingObjective()
        self.ranking = ranking
        self.head_weight = float(head_weight)
        self.feed_fields = self.rating.feed_fields

    def start_epoch(self, model: nn.Module, device: torch.device, context: RunContext) -> None:
        self.ranking.start_epoch(model, device, context)

    def batch_loss(self, model: nn.Module, batch: dict, device: torch.device) -> BatchLoss:
        """The rating batch loss plus the heads' losses; the reported loss is the rating MSE.

        The L2 penalty the loop adds covers the head's rows too
        (:meth:`~recspark.model.embedding.EmbeddingModel.penalty`).
        """
        rating = self.rating.batch_loss(model, batch, device)
        head = sum(self.ranking.batch_loss(view, batch, device).loss for view in head_views(model))
        return rating._replace(loss=rating.loss + self.head_weight * head)

    @torch.no_grad()
    def validation(
        self, model: nn.Module, batches: Iterable[dict], device: torch.device, context: RunContext
    ) -> ValidationFigures:
        """The rating figures and the heads' mean sampled AUC (see the module docstring)."""
        batches = batches if isinstance(batches, list) else list(batches)
        rating = self.rating.validation(model, batches, device, context)
        heads = [self.ranking.validation(view, batches, device, context) for view in head_views(model)]
        head_loss = sum(figures.loss for figures in heads) / len(heads)
        auc = sum(figures.auc for figures in heads) / len(heads)
        return dataclasses.replace(rating, loss=rating.loss + self.head_weight * head_loss, auc=auc)
