"""The rating objective with a ranking head beside it (``lists.source: head``).

A rating model trained by MSE alone learns how a user rates the items they chose, never which
items they choose, so its top-N lists lose to simple popularity baselines. The model here also
carries a :class:`~recspark.model.head.ListHead` (own user rows ``r_u``, a per-item bias
``c_i``, the model's item rows ``q_i``), and every batch's loss is::

    MSE(rating head) + lists.head_weight * softmax loss(r_u . q_i + c_i)

with every train row a positive of the softmax (``ranking.loss``, ``ranking.negatives``,
``ranking.sampling_alpha``: :mod:`recspark.train.objectives.ranking`; ``ranking.negatives`` at
or above the catalogue is the exact softmax over every item). An ensemble adds every member's
head loss, as it adds their MSEs. The item rows learn from both heads: on MovieLens 100K u1 this
lowered the rating head's RMSE as well as giving lists far above the rating head's own.

The validation pass reports the rating figures (MSE, MAE) and the heads' mean sampled AUC; its
loss, which early stopping minimises, is the rating MSE plus ``head_weight`` times the heads' mean
validation loss, the heads' part on at most :data:`HEAD_VALIDATION_ROWS` rows (every n-th row). It
reads the validation batches once and keeps them for both passes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import ClassVar, Protocol, cast

import torch
from torch import nn

from recspark.core.constants import USER_IDX
from recspark.core.torch_utils import unwrap
from recspark.model.base import EmbeddingModel
from recspark.model.ensemble import Ensemble
from recspark.model.lists import HeadView
from recspark.train.objectives.base import (
    BatchLoss,
    Objective,
    RunContext,
    ValidationFigures,
    batch_tensors,
)
from recspark.train.objectives.losses import SOFTMAX_BLOCK, shared_negative_hits, softmax_loss
from recspark.train.objectives.ranking import RankingObjective
from recspark.train.objectives.rating import RatingObjective

# Rows the heads' validation ranks at most (evenly strided): the rating figures use every row.
HEAD_VALIDATION_ROWS = 1 << 16


def head_validation_sample(batches: list[dict], cap: int = HEAD_VALIDATION_ROWS) -> list[dict]:
    """At most about ``cap`` of the batches' rows, every n-th row of each batch.

    Ranking a row against ``ranking.validation_items`` items costs that many scores, and the
    rating figures need every row: at 2M validation rows the heads' pass would cost more than
    the epoch's training. A strided sample keeps the order of the feed, so it is as
    deterministic as the feed itself.
    """
    total = sum(len(batch[USER_IDX]) for batch in batches)
    stride = -(-total // cap)
    if stride <= 1:
        return batches
    return [{key: value[::stride] for key, value in batch.items()} for batch in batches]


def head_views(model: nn.Module) -> list[HeadView]:
    """The ranking heads of ``model`` (wrapped or not) as models: one per ensemble member.

    The views score through the unwrapped model's tables: in a data-parallel run the head's
    gradients reach the same parameters, which DistributedDataParallel reduces after backward.
    """
    core = unwrap(model)
    members = core.members if isinstance(core, Ensemble) else [core]
    return [HeadView(cast(EmbeddingModel, member)) for member in members]


class JointScorer(Protocol):
    """A member that scores both heads in one pass
    (:meth:`~recspark.model.mf.DotProduct.joint_scores`)."""

    def joint_scores(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        negatives: torch.Tensor,
        negative_bias: torch.Tensor | None,
        head_rows: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class JointObjective(Objective):
    """MSE of the rating head plus ``head_weight`` times the ranking head's loss.

    Parameters
    ----------
    ranking
        The head's objective; its positive threshold is 0 (every train row is a positive) and
        its confidence weighting none.
    head_weight
        ``lists.head_weight``.
    head_rows
        ``lists.head_rows``: the head trains on the first this many rows of each batch (all when
        None). The feed is shuffled, so they are a random sample of the batch.
    """

    name: ClassVar[str] = "rating"
    loss_name: ClassVar[str] = "MSE + head softmax"

    def __init__(
        self, ranking: RankingObjective, head_weight: float = 1.0, head_rows: int | None = None
    ):
        if ranking.settings.positive_threshold or ranking.settings.confidence != "none":
            settings = dataclasses.replace(
                ranking.settings, positive_threshold=0.0, confidence="none"
            )
            ranking = RankingObjective(settings, ranking.item_counts)
        self.rating = RatingObjective()
        self.ranking = ranking
        self.head_weight = float(head_weight)
        if head_rows is not None and head_rows < 1:
            raise ValueError(f"lists.head_rows must be at least 1, got {head_rows}")
        self.head_rows = head_rows
        self.feed_fields = self.rating.feed_fields

    def start_epoch(self, model: nn.Module, device: torch.device, context: RunContext) -> None:
        self.ranking.start_epoch(model, device, context)

    def batch_loss(self, model: nn.Module, batch: dict, device: torch.device) -> BatchLoss:
        """The rating batch loss plus the heads' losses; the reported loss is the rating MSE.

        The L2 penalty the loop adds covers the head's rows too
        (:meth:`~recspark.model.base.EmbeddingModel.penalty`).
        """
        fused = self._fused_loss(model, batch, device)
        if fused is not None:
            return fused
        rating = self.rating.batch_loss(model, batch, device)
        head_rows = self._head_rows(rating.rows)
        head_batch = {key: value[:head_rows] for key, value in batch.items()}
        views = head_views(model)
        head = sum(self.ranking.batch_loss(view, head_batch, device).loss for view in views)
        return rating._replace(loss=rating.loss + self.head_weight * head, head_rows=head_rows)

    def _head_rows(self, rows: int) -> int:
        return rows if self.head_rows is None else min(rows, self.head_rows)

    def _fused_loss(self, model: nn.Module, batch: dict, device: torch.device) -> BatchLoss | None:
        """The batch loss from one pass over each member's tables, or None where it cannot run.

        The same loss, negatives and gradients as the two objectives' own passes (a test checks
        it), but each member looks its item rows up once for both heads
        (:meth:`~recspark.model.mf.DotProduct.joint_scores`). It runs for dot-product
        members, unwrapped, with the softmax (sampled, or exact while the batch times the
        catalogue fits one block); a data-parallel run, BPR, the chunked catalogue softmax and
        MLP members take the two passes.
        """
        core = unwrap(model)
        members = core.members if isinstance(core, Ensemble) else [core]
        settings, sampler = self.ranking.settings, self.ranking.sampler
        generator = self.ranking.generator
        if (
            core is not model
            or settings.loss != "softmax"
            or sampler is None
            or generator is None
            or not all(hasattr(member, "joint_scores") for member in members)
        ):
            return None
        users, items, ratings = batch_tensors(batch, device)
        head_rows = self._head_rows(len(users))
        head_items = items[:head_rows]
        exact = settings.negatives >= sampler.n_items
        if exact and head_rows * sampler.n_items > SOFTMAX_BLOCK:
            return None
        positive_log_q = None
        if not (exact or sampler.uniform):
            positive_log_q = sampler.log_expected_count(head_items, settings.negatives)
        mse, head = [], []
        for member in members:
            # Each member's head draws its own negatives, in the order the two passes draw them.
            negative_bias = None
            if exact:
                negatives = torch.arange(sampler.n_items, device=items.device)
            else:
                negatives = sampler.sample((settings.negatives,), generator)
                if not sampler.uniform:
                    negative_bias = -sampler.log_expected_count(negatives, settings.negatives)
            predicted, positive, negative = cast(JointScorer, member).joint_scores(
                users, items, negatives, negative_bias, head_rows
            )
            mse.append(nn.functional.mse_loss(predicted.float(), ratings))
            # Accidental hits of a row's own positive leave its softmax (few: masked in place).
            negative = negative.float().index_put_(
                shared_negative_hits(head_items, negatives), torch.tensor(-math.inf)
            )
            head.append(softmax_loss(positive.float(), negative, positive_log_q=positive_log_q))
        rating_loss = torch.stack(mse).sum()
        rows = len(ratings)
        reported = rating_loss.detach() / len(members) * rows
        loss = rating_loss + self.head_weight * torch.stack(head).sum()
        return BatchLoss(loss, users, items, reported, rows, rows, head_rows)

    @torch.no_grad()
    def validation(
        self, model: nn.Module, batches: Iterable[dict], device: torch.device, context: RunContext
    ) -> ValidationFigures:
        """The rating figures and the heads' mean sampled AUC (see the module docstring)."""
        batches = batches if isinstance(batches, list) else list(batches)
        rating = self.rating.validation(model, batches, device, context)
        sample = head_validation_sample(batches)
        heads = [
            self.ranking.validation(view, sample, device, context) for view in head_views(model)
        ]
        head_loss = sum(figures.loss for figures in heads) / len(heads)
        # The ranking objective's validation always sets its AUC.
        auc = sum(cast(float, figures.auc) for figures in heads) / len(heads)
        return dataclasses.replace(rating, loss=rating.loss + self.head_weight * head_loss, auc=auc)
