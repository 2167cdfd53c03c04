"""The ranking objective: train the embedding models to put a user's items above the rest.

``model.objective: ranking`` turns every prepared row whose rating reaches
``ranking.positive_threshold`` into a positive (user, item) pair and scores it against sampled
negative items. Two losses (``ranking.loss``):

- ``bpr``: Bayesian personalised ranking, ``-log sigmoid(s(u, i) - s(u, j))`` averaged over
  ``ranking.negatives`` negatives ``j`` drawn for each positive (Rendle et al., 2009).
- ``softmax``: sampled softmax, a cross-entropy of the positive against ``ranking.negatives``
  negatives shared by the whole batch, with the log-Q correction that makes it an unbiased
  stand-in for the softmax over the whole catalogue (Bengio and Senecal, 2008; Yi et al., 2019).
  When ``ranking.negatives`` is at least the number of items, the softmax runs over the whole
  catalogue exactly, in item chunks of at most :data:`SOFTMAX_BLOCK` scores when the batch times
  the catalogue is larger (:func:`catalogue_softmax_loss`).

The losses themselves live in :mod:`recspark.train.objectives.losses` and the sampler in
:mod:`recspark.train.objectives.sampling`.
Negatives are drawn with probability proportional to ``(count + 1) ** ranking.sampling_alpha``,
``count`` being an item's number of positives in the train split (one Spark aggregate,
:func:`item_popularity`): ``0`` samples uniformly, ``1`` as often as items are seen (word2vec uses
0.75). A negative never equals its own positive: BPR redraws such collisions and the softmax masks
them. Rows may carry a confidence weight (``ranking.confidence``): the prepared ``weight`` column
or the rating itself (the number of events of an implicit pair), as ``1 + alpha * value``.

:class:`RankingObjective` is the objective the training loop (:mod:`recspark.train.loop`) calls per
batch: it holds the settings and the item counts, draws a sampler and a generator seeded by
``(seed, epoch, rank)`` at the start of every epoch, and scores each batch's positives against
their negatives. The validation loss, which early stopping minimises, is the softmax cross-entropy
of each validation positive against a fixed sample of ``ranking.validation_items`` items (the
whole catalogue when it is smaller); beside it the pass reports the sampled AUC, the share of
those items the model scores below the positive. Models are trained on their raw scores: a
ranking model has no ``y_range``, and scoring ranks by the same scores. Scores are cast to float32
before any loss, so a forward pass under bfloat16 autocast (``train.precision: bf16``) still
computes its losses and figures in float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX, WEIGHT
from recspark.core.torch_utils import epoch_seed, unwrap
from recspark.train.feeding import FEED_FIELDS
from recspark.train.objectives.base import BatchLoss, Objective, RunContext, ValidationFigures
from recspark.train.objectives.losses import (
    SOFTMAX_BLOCK,
    bpr_loss,
    catalogue_softmax_loss,
    scorer,
    softmax_loss,
)
from recspark.train.objectives.sampling import NegativeSampler, comparison_items

__all__ = ["RankingObjective", "RankingSettings", "ranking_loss"]

LOSSES = ("softmax", "bpr")
CONFIDENCE = ("none", "weight", "rating")
# Rows x items of one validation score block: bounds memory for any catalogue and model.
VALIDATION_BLOCK = 1 << 22
# Mixed into the epoch seed so negative draws do not reuse the stream that drives dropout.
SAMPLER_SALT = 0x5EED5


@dataclass(frozen=True)
class RankingSettings:
    """What the ranking objective needs from ``ranking.*``; plain values, no config object.

    Attributes
    ----------
    loss
        ``softmax`` (sampled, or over the whole catalogue) or ``bpr``.
    negatives
        Negatives per positive (``bpr``) or per batch, shared by its rows (``softmax``); a
        ``softmax`` with at least as many negatives as items uses the whole catalogue.
    sampling_alpha
        Negatives are drawn in proportion to ``(count + 1) ** sampling_alpha``; 0 is uniform.
    positive_threshold
        A row is a positive when its rating is at or above this; 0 keeps every row.
    confidence
        Per-row loss weight: ``none``, ``weight`` (the prepared ``weight`` column) or ``rating``.
    confidence_alpha
        The weight is ``1 + confidence_alpha * value`` (Hu, Koren and Volinsky's confidence).
    validation_items
        Size of the fixed item sample validation positives are ranked against.
    """

    loss: str = "softmax"
    negatives: int = 100
    sampling_alpha: float = 0.0
    positive_threshold: float = 0.0
    confidence: str = "none"
    confidence_alpha: float = 1.0
    validation_items: int = 1000

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown ranking.loss {self.loss!r}; choose one of {LOSSES}")
        if self.confidence not in CONFIDENCE:
            raise ValueError(
                f"unknown ranking.confidence {self.confidence!r}; choose one of {CONFIDENCE}"
            )
        if self.negatives < 1 or self.validation_items < 1:
            raise ValueError("ranking.negatives and ranking.validation_items must be at least 1")
        if self.sampling_alpha < 0 or self.confidence_alpha < 0:
            raise ValueError("ranking.sampling_alpha and ranking.confidence_alpha must be >= 0")


class Positives(NamedTuple):
    """The positive pairs of one batch.

    Attributes
    ----------
    users, items
        Their user and item indices.
    weights
        Their confidence weights; None without ``ranking.confidence``.
    rows
        Rows read from the feed (positives or not).
    found
        Whether the batch held any positive (without one a single row stands in at weight 0).
    """

    users: torch.Tensor
    items: torch.Tensor
    weights: torch.Tensor | None
    rows: int
    found: bool


def _positives(batch: dict, device: torch.device, settings: RankingSettings) -> Positives:
    """The :class:`Positives` of a batch.

    A batch without positives keeps one row at weight 0 (and says so), so that every process of
    a data-parallel run still takes part in each step.
    """
    users = batch[USER_IDX].to(device=device, dtype=torch.long, non_blocking=True)
    items = batch[ITEM_IDX].to(device=device, dtype=torch.long, non_blocking=True)
    rows = len(users)
    weights = None
    if settings.confidence != "none":
        column = WEIGHT if settings.confidence == "weight" else RATING
        if column not in batch:
            raise ValueError(
                f"ranking.confidence is {settings.confidence!r} but the prepared table has no "
                f"{column!r} column: prepare the input with input.columns.weight set, or set "
                "ranking.confidence=none"
            )
        value = batch[column].to(device=device, dtype=torch.float32, non_blocking=True)
        weights = 1.0 + settings.confidence_alpha * value
    if settings.positive_threshold > 0:
        ratings = batch[RATING].to(device=device, dtype=torch.float32, non_blocking=True)
        keep = ratings >= settings.positive_threshold
        if not bool(keep.any()):
            return Positives(users[:1], items[:1], torch.zeros(1, device=device), rows, False)
        users, items = users[keep], items[keep]
        weights = weights[keep] if weights is not None else None
    return Positives(users, items, weights, rows, True)


def _generator(context: RunContext, device: torch.device) -> torch.Generator:
    """A negative-sampling generator fixed by (seed, epoch, rank): repeatable and resumable."""
    seed = epoch_seed(context.seed, context.epoch, context.rank)
    return torch.Generator(device=device).manual_seed(seed ^ SAMPLER_SALT)


def _n_items(model: nn.Module, context: RunContext) -> int:
    n_items = context.n_items or getattr(unwrap(model), "n_items", None)
    if not n_items:
        raise ValueError("the ranking objective needs n_items in its context or on the model")
    return int(n_items)


def _scores(
    model: nn.Module, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive scores ``(rows,)``, negative scores ``(rows, n)``) of one batch.

    ``negatives`` is ``(rows, n)`` per row, or ``(n,)`` shared by every row. A bare model scores
    shared negatives as one ``rows x n`` block (:meth:`EmbeddingModel.score_items`). A model
    wrapped in DistributedDataParallel must see every pair in one call of its ``forward``, or its
    gradients would not be reduced across processes; the pairs are then spelled out.
    """
    rows = len(users)
    core = unwrap(model)
    if core is model and negatives.dim() == 1:
        return model(users, positives), scorer(core).score_items(users, negatives)
    width = negatives.shape[-1]
    pair_items = negatives.repeat(rows) if negatives.dim() == 1 else negatives.reshape(-1)
    pair_users = users.repeat_interleave(width)
    scores = model(torch.cat([users, pair_users]), torch.cat([positives, pair_items]))
    return scores[:rows], scores[rows:].view(rows, width)


def ranking_loss(
    model: nn.Module,
    users: torch.Tensor,
    items: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    settings: RankingSettings,
    sampler: NegativeSampler,
    generator: torch.Generator,
) -> torch.Tensor:
    """The ranking loss of one batch of positives (without the L2 penalty)."""
    if settings.loss == "bpr":
        negatives, valid = sampler.sample_excluding(items, settings.negatives, generator)
        positive, negative = _scores(model, users, items, negatives)
        return bpr_loss(positive.float(), negative.float(), weights, valid)
    positive_log_q = negative_log_q = None
    if settings.negatives >= sampler.n_items:
        # A wrapped model must score every pair in one forward call (see _scores).
        if unwrap(model) is model and len(users) * sampler.n_items > SOFTMAX_BLOCK:
            return catalogue_softmax_loss(
                model, users, items, weights, n_items=sampler.n_items, block=SOFTMAX_BLOCK
            )
        negatives = torch.arange(sampler.n_items, device=items.device)
    else:
        negatives = sampler.sample((settings.negatives,), generator)
        if not sampler.uniform:
            positive_log_q = sampler.log_expected_count(items, settings.negatives)
            negative_log_q = sampler.log_expected_count(negatives, settings.negatives)
    positive, negative = _scores(model, users, items, negatives)
    valid = negatives[None, :] != items[:, None]
    return softmax_loss(
        positive.float(),
        negative.float(),
        weights,
        valid,
        positive_log_q=positive_log_q,
        negative_log_q=negative_log_q,
    )


def _share_above(
    scores: torch.Tensor, positive: torch.Tensor, items: torch.Tensor, sample: torch.Tensor
) -> torch.Tensor:
    """Per row, the share of the ``sample``'s items (sorted, distinct) scored above the row's
    positive, ties counting half, the positive itself left out; float64. The positive's own
    entries of ``scores`` are then set to minus infinity, so that a softmax over them leaves the
    positive out too.

    Counted as ``(compared + sum of sign(score - positive)) / 2`` over the items compared: one
    pass of the block for the signs (exact integers in float32 at any sample size a block holds)
    instead of comparisons, masks and counts of the whole block each.
    """
    # The sample is sorted and its items distinct (comparison_items): one search finds the one
    # column, if any, that holds a row's own item.
    columns = torch.searchsorted(sample, items.contiguous()).clamp_max_(len(sample) - 1)
    hit_rows = (sample[columns] == items).nonzero().squeeze(1)
    hit_columns = columns[hit_rows]
    signs = (scores - positive[:, None]).sign_()
    total = signs.sum(dim=1).index_add_(0, hit_rows, -signs[hit_rows, hit_columns])
    compared = (len(sample) - torch.bincount(hit_rows, minlength=len(items))).double()
    scores[hit_rows, hit_columns] = -torch.inf
    return (compared + total.double()) / 2 / compared.clamp_min(1)


class RankingObjective(Objective):
    """BPR or sampled softmax over sampled negatives; see the module docstring.

    Parameters
    ----------
    settings
        The objective's settings (``ranking.*``).
    item_counts
        Positives per item in the train split (:func:`item_popularity`); needed when
        ``settings.sampling_alpha > 0``.
    """

    name: ClassVar[str] = "ranking"
    loss_name: ClassVar[str] = "softmax/BPR"

    def __init__(
        self, settings: RankingSettings | None = None, item_counts: np.ndarray | None = None
    ):
        self.settings = settings or RankingSettings()
        self.item_counts = (
            None if item_counts is None else np.asarray(item_counts, dtype=np.float64)
        )
        self.feed_fields = FEED_FIELDS + ((WEIGHT,) if self.settings.confidence == "weight" else ())
        self._sampler: NegativeSampler | None = None
        self._generator: torch.Generator | None = None

    def start_epoch(self, model: nn.Module, device: torch.device, context: RunContext) -> None:
        """Build the epoch's negative sampler, and its generator seeded by (seed, epoch, rank)."""
        self._sampler = NegativeSampler(
            _n_items(model, context), self.item_counts, self.settings.sampling_alpha, device
        )
        self._generator = _generator(context, device)

    @property
    def sampler(self) -> NegativeSampler | None:
        """The epoch's negative sampler (None before :meth:`start_epoch`)."""
        return self._sampler

    @property
    def generator(self) -> torch.Generator | None:
        """The epoch's negative-sampling generator (None before :meth:`start_epoch`)."""
        return self._generator

    def batch_loss(self, model: nn.Module, batch: dict, device: torch.device) -> BatchLoss:
        """The ranking loss of the batch's positives, reported as a mean over them.

        A batch without positives keeps one row at weight 0 and counts none, so that every
        process of a data-parallel run still takes part in the step.
        """
        if self._sampler is None or self._generator is None:
            raise RuntimeError("call start_epoch before batch_loss: it seeds the negatives")
        users, items, weights, read, found = _positives(batch, device, self.settings)
        loss = ranking_loss(
            model,
            users,
            items,
            weights,
            settings=self.settings,
            sampler=self._sampler,
            generator=self._generator,
        )
        counted = len(users) if found else 0
        return BatchLoss(loss, users, items, loss.detach().double() * counted, counted, read)

    @torch.no_grad()
    def validation(
        self, model: nn.Module, batches: Iterable[dict], device: torch.device, context: RunContext
    ) -> ValidationFigures:
        """How well the model ranks each validation positive against a fixed item sample.

        Returns
        -------
        The mean softmax cross-entropy of each positive against the sample (the loss) and the
        sampled AUC (the mean share of the sample scored below the positive, ties counting
        half), means over ``rows`` positives. The positive itself is left out of the sample it
        is ranked against.
        """
        settings = self.settings
        core = unwrap(model)
        core.eval()
        n_items = _n_items(core, context)
        items_sample = comparison_items(n_items, settings.validation_items, context.seed, device)
        unweighted = dataclasses.replace(settings, confidence="none")
        block = max(1, VALIDATION_BLOCK // len(items_sample))
        loss_sum = above_sum = 0.0
        positives = 0
        for batch in batches:
            users, items, _, _, found = _positives(batch, device, unweighted)
            if not found:
                continue
            for start in range(0, len(users), block):
                user_block, item_block = users[start : start + block], items[start : start + block]
                positive = core(user_block, item_block).float()
                scores = scorer(core).score_items(user_block, items_sample).float()
                above_sum += float(_share_above(scores, positive, item_block, items_sample).sum())
                loss_sum += float(softmax_loss(positive, scores, reduce=False).double().sum())
                positives += len(user_block)
        if positives == 0:
            if context.world_size == 1:
                raise ValueError(
                    "no validation row is a positive (rating at or above "
                    f"ranking.positive_threshold={settings.positive_threshold}): lower the "
                    "threshold or re-run prepare"
                )
            # This process's shard held no positives: it adds nothing to the sums over processes.
            return ValidationFigures(rows=0, loss=0.0, auc=0.0)
        return ValidationFigures(
            rows=positives, loss=loss_sum / positives, auc=1.0 - above_sum / positives
        )
