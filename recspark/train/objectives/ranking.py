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
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX, WEIGHT
from recspark.core.torch_utils import epoch_seed, unwrap
from recspark.train.feeding import FEED_FIELDS
from recspark.train.objectives.base import BatchLoss, Objective, RunContext, ValidationFigures

LOSSES = ("softmax", "bpr")
CONFIDENCE = ("none", "weight", "rating")
# Rows x items of one validation score block: bounds memory for any catalogue and model.
VALIDATION_BLOCK = 1 << 22
# Rows x items of one chunk of the full-catalogue softmax in training (64 MiB of float32 scores):
# a larger batch x catalogue is scored chunk by chunk, each chunk again in the backward pass.
SOFTMAX_BLOCK = 1 << 24
# How often BPR redraws negatives that hit their own positive before masking the rest.
REDRAW_ROUNDS = 4
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


def item_popularity(
    train,
    n_items: int,
    positive_threshold: float = 0.0,
    item_col: str = ITEM_IDX,
    rating_col: str = RATING,
) -> np.ndarray:
    """Positives per item index in a prepared train table, by one Spark aggregate.

    Parameters
    ----------
    train
        DataFrame with ``item_col`` (dense index) and ``rating_col``.
    n_items
        Catalogue size (the item index's row count); items without positives count 0.
    positive_threshold
        Only rows with a rating at or above it count, as in training.

    Returns
    -------
    float64 array of length ``n_items``. Only one row per item reaches the driver.
    """
    from pyspark.sql import functions as F

    for column in (item_col, rating_col):
        if column not in train.columns:
            raise ValueError(f"the train table has no column {column!r}: re-run prepare")
    rows = (
        train.where(F.col(rating_col) >= positive_threshold)
        .groupBy(item_col)
        .agg(F.count(F.lit(1)).alias("positives"))
        .collect()
    )
    counts = np.zeros(n_items, dtype=np.float64)
    for row in rows:
        index = int(row[item_col])
        if not 0 <= index < n_items:
            raise ValueError(
                f"{item_col} {index} outside [0, {n_items}): the train table and the item index "
                "disagree; re-run prepare"
            )
        counts[index] = row["positives"]
    return counts


class NegativeSampler:
    """Draws item indices in proportion to ``(count + 1) ** alpha`` (uniform when ``alpha`` is 0).

    Sampling inverts the cumulative distribution with :func:`torch.searchsorted`, which works for
    catalogues of any size and on any device; with a seeded generator the draws are repeatable.
    """

    def __init__(
        self,
        n_items: int,
        item_counts: np.ndarray | None = None,
        alpha: float = 0.0,
        device: torch.device | str = "cpu",
    ):
        if n_items < 2:
            raise ValueError(f"ranking needs at least 2 items to sample negatives, got {n_items}")
        self.n_items = n_items
        self.device = torch.device(device)
        self.uniform = alpha == 0
        if self.uniform:
            probabilities = torch.full((n_items,), 1.0 / n_items, dtype=torch.float64)
        else:
            if item_counts is None:
                raise ValueError(
                    "popularity sampling (ranking.sampling_alpha > 0) needs item counts in the "
                    "objective: build it as RankingObjective(settings, item_counts)"
                )
            counts = torch.as_tensor(np.asarray(item_counts, dtype=np.float64))
            if counts.shape != (n_items,) or bool((counts < 0).any()):
                raise ValueError(f"item_counts must be {n_items} non-negative numbers")
            weights = (counts + 1.0).pow(alpha)
            probabilities = weights / weights.sum()
        self.probabilities = probabilities.to(self.device)
        cdf = torch.cumsum(probabilities, 0)
        self.cdf = (cdf / cdf[-1]).to(self.device)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Item indices of ``shape``, independent draws with replacement."""
        if self.uniform:
            return torch.randint(
                self.n_items, shape, generator=generator, device=self.device, dtype=torch.long
            )
        draws = torch.rand(shape, generator=generator, device=self.device, dtype=torch.float64)
        index = torch.searchsorted(self.cdf, draws.reshape(-1), right=True).reshape(shape)
        return index.clamp_(max=self.n_items - 1)

    def sample_excluding(
        self, positives: torch.Tensor, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` negatives per positive, none equal to it.

        Collisions are redrawn up to :data:`REDRAW_ROUNDS` times; any left (only when one item
        holds nearly all the probability) are flagged invalid.

        Returns
        -------
        (negatives ``len(positives) x count``, valid mask of the same shape)
        """
        negatives = self.sample((len(positives), count), generator)
        for _ in range(REDRAW_ROUNDS):
            hits = negatives == positives[:, None]
            if not bool(hits.any()):
                break
            negatives = torch.where(hits, self.sample(negatives.shape, generator), negatives)
        return negatives, negatives != positives[:, None]

    def log_expected_count(self, items: torch.Tensor, draws: int) -> torch.Tensor:
        """``log(draws * Q(item))``: the log-Q correction of a sampled softmax."""
        return torch.log(draws * self.probabilities[items]).float()


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def bpr_loss(
    positive_scores: torch.Tensor,
    negative_scores: torch.Tensor,
    weights: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """BPR: mean over rows of the mean over a row's valid negatives of ``-log sigmoid(s+ - s-)``.

    Parameters
    ----------
    positive_scores
        ``(rows,)`` scores of the positives.
    negative_scores
        ``(rows, negatives)`` scores of each row's negatives.
    weights
        ``(rows,)`` confidence weights; the mean over rows is weighted by them.
    valid
        ``(rows, negatives)`` mask; False entries take no part.
    """
    pairwise = -nn.functional.logsigmoid(positive_scores[:, None] - negative_scores)
    if valid is None:
        per_row = pairwise.mean(dim=1)
    else:
        mask = valid.to(pairwise.dtype)
        per_row = (pairwise * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    return _weighted_mean(per_row, weights)


def softmax_loss(
    positive_scores: torch.Tensor,
    negative_scores: torch.Tensor,
    weights: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    positive_log_q: torch.Tensor | None = None,
    negative_log_q: torch.Tensor | None = None,
    reduce: bool = True,
) -> torch.Tensor:
    """Cross-entropy of each positive against its negatives (a sampled softmax).

    The logits of row ``r`` are ``[s+ - logQ+, s-_1 - logQ-_1, ...]`` with the target first;
    invalid negatives (accidental hits of the positive) are left out.

    Parameters
    ----------
    positive_scores, negative_scores
        ``(rows,)`` and ``(rows, negatives)``, or ``(negatives,)`` shapes broadcast to rows.
    weights
        ``(rows,)`` confidence weights of the mean.
    valid
        Mask broadcastable to ``negative_scores``'s rows x negatives.
    positive_log_q, negative_log_q
        ``log(draws * Q)`` of each positive and negative
        (:meth:`NegativeSampler.log_expected_count`); None where sampling is uniform or
        exhaustive, where the correction is a constant.
    reduce
        False returns the ``(rows,)`` losses unweighted.
    """
    positive = positive_scores if positive_log_q is None else positive_scores - positive_log_q
    negative = negative_scores if negative_log_q is None else negative_scores - negative_log_q
    negative = negative.expand(len(positive), -1) if negative.dim() == 1 else negative
    if valid is not None:
        negative = negative.masked_fill(~valid, -math.inf)
    # log(e^s+ + sum e^s-) without copying the rows x negatives block next to the positive.
    per_row = torch.logaddexp(positive, torch.logsumexp(negative, dim=1)) - positive
    return _weighted_mean(per_row, weights) if reduce else per_row


def shared_negative_hits(
    items: torch.Tensor, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, columns)`` where a negative shared by the batch is the row's own positive.

    The same entries as ``negatives[None, :] == items[:, None]``, found by searching the sorted
    negatives (``rows x log(negatives)``) instead of comparing the whole block: the caller
    masks these few scores rather than every one.
    """
    ordered, order = negatives.sort()
    first = torch.searchsorted(ordered, items)
    counts = torch.searchsorted(ordered, items, right=True) - first
    rows = torch.repeat_interleave(torch.arange(len(items), device=items.device), counts)
    starts = torch.repeat_interleave(first, counts)
    within = torch.arange(len(rows), device=items.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    return rows, order[starts + within]


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
        return model(users, positives), core.score_items(users, negatives)
    width = negatives.shape[-1]
    pair_items = negatives.repeat(rows) if negatives.dim() == 1 else negatives.reshape(-1)
    pair_users = users.repeat_interleave(width)
    scores = model(torch.cat([users, pair_users]), torch.cat([positives, pair_items]))
    return scores[:rows], scores[rows:].view(rows, width)


def _masked_logsumexp(
    model: nn.Module, users: torch.Tensor, positives: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """``(rows,)`` logsumexp of each row's scores over ``items``, its own positive left out."""
    scores = model.score_items(users, items).float()
    scores = scores.masked_fill(items[None, :] == positives[:, None], -math.inf)
    return torch.logsumexp(scores, dim=1)


def catalogue_softmax_loss(
    model: nn.Module,
    users: torch.Tensor,
    positives: torch.Tensor,
    weights: torch.Tensor | None = None,
    n_items: int | None = None,
    block: int = SOFTMAX_BLOCK,
) -> torch.Tensor:
    """The softmax cross-entropy of each positive against every other item, in item chunks.

    The same loss as :func:`softmax_loss` over the whole catalogue (the positive's own column
    left out of the negatives), without ever holding the ``rows x n_items`` scores: a running
    logsumexp adds one chunk of at most ``block`` scores at a time, and each chunk runs under
    :func:`torch.utils.checkpoint.checkpoint`, which frees its scores after the forward pass and
    recomputes them, one chunk at a time, in the backward pass. The gradient is the unchunked one.

    Parameters
    ----------
    model
        A bare (unwrapped) model: one scored by several forward calls cannot sit inside
        DistributedDataParallel.
    users, positives
        ``(rows,)`` user and positive item indices.
    weights
        ``(rows,)`` confidence weights of the mean.
    n_items
        Catalogue size; the model's when None.
    block
        Most scores (rows x items) of one chunk.
    """
    n_items = int(n_items or model.n_items)
    positive = model(users, positives).float()
    chunk = max(1, block // max(1, len(users)))
    others = None
    for start in range(0, n_items, chunk):
        items = torch.arange(start, min(start + chunk, n_items), device=positives.device)
        part = checkpoint(_masked_logsumexp, model, users, positives, items, use_reentrant=False)
        others = part if others is None else torch.logaddexp(others, part)
    per_row = torch.logaddexp(others, positive) - positive
    return _weighted_mean(per_row, weights)


def _positives(
    batch: dict, device: torch.device, settings: RankingSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, bool]:
    """(users, items, confidence weights or None, rows read, any positive) of a batch.

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
            return users[:1], items[:1], torch.zeros(1, device=device), rows, False
        users, items = users[keep], items[keep]
        weights = weights[keep] if weights is not None else None
    return users, items, weights, rows, True


def _generator(context: RunContext, device: torch.device) -> torch.Generator:
    """A negative-sampling generator fixed by (seed, epoch, rank): repeatable and resumable."""
    seed = epoch_seed(context.seed, context.epoch, context.rank)
    return torch.Generator(device=device).manual_seed(seed ^ SAMPLER_SALT)


def _n_items(model: nn.Module, context: RunContext) -> int:
    n_items = context.n_items or getattr(unwrap(model), "n_items", None)
    if not n_items:
        raise ValueError("the ranking objective needs n_items in its context or on the model")
    return int(n_items)


def ranking_loss(
    model: nn.Module,
    users: torch.Tensor,
    items: torch.Tensor,
    weights: torch.Tensor | None,
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
                model, users, items, weights, sampler.n_items, SOFTMAX_BLOCK
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
        positive.float(), negative.float(), weights, valid, positive_log_q, negative_log_q
    )


def comparison_items(n_items: int, count: int, seed: int, device: torch.device) -> torch.Tensor:
    """The fixed item sample validation ranks against: all items, or ``count`` of them by seed."""
    if count >= n_items:
        return torch.arange(n_items, device=device)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_items, generator=generator)[:count].sort().values.to(device)


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
            model, users, items, weights, self.settings, self._sampler, self._generator
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
                scores = core.score_items(user_block, items_sample).float()
                valid = items_sample[None, :] != item_block[:, None]
                losses = softmax_loss(positive, scores, valid=valid, reduce=False)
                loss_sum += float(losses.double().sum())
                above = ((scores > positive[:, None]) & valid).double().sum(dim=1)
                ties = ((scores == positive[:, None]) & valid).double().sum(dim=1)
                compared = valid.double().sum(dim=1).clamp_min(1)
                above_sum += float(((above + 0.5 * ties) / compared).sum())
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
