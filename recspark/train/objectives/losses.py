"""The ranking losses: BPR, the sampled softmax and the softmax over the whole catalogue.

- :func:`bpr_loss`: Bayesian personalised ranking, ``-log sigmoid(s(u, i) - s(u, j))`` averaged
  over each positive's negatives (Rendle et al., 2009).
- :func:`softmax_loss`: a cross-entropy of the positive against its negatives, with the log-Q
  correction that makes it an unbiased stand-in for the softmax over the whole catalogue (Bengio
  and Senecal, 2008; Yi et al., 2019).
- :func:`catalogue_softmax_loss`: the exact softmax over every item, in item chunks of at most
  :data:`SOFTMAX_BLOCK` scores, each recomputed in the backward pass.

Plain functions of score tensors (and, for the catalogue softmax, of a model that scores item
blocks); the ranking objective (:mod:`recspark.train.objectives.ranking`) picks one per batch.
"""

from __future__ import annotations

import math
from typing import Protocol, cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# Rows x items of one chunk of the full-catalogue softmax in training (64 MiB of float32 scores):
# a larger batch x catalogue is scored chunk by chunk, each chunk again in the backward pass.
SOFTMAX_BLOCK = 1 << 24


class ItemScorer(Protocol):
    """A model as the ranking losses use it: pair scores and user x item score blocks."""

    def __call__(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor: ...

    def score_items(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor: ...


def scorer(model: nn.Module) -> ItemScorer:
    """``model`` seen as an :class:`ItemScorer` (every ranking-capable kind is one)."""
    return cast(ItemScorer, model)


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
    *,
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


def _masked_logsumexp(
    model: nn.Module, users: torch.Tensor, positives: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """``(rows,)`` logsumexp of each row's scores over ``items``, its own positive left out."""
    scores = scorer(model).score_items(users, items).float()
    scores = scores.masked_fill(items[None, :] == positives[:, None], -math.inf)
    return torch.logsumexp(scores, dim=1)


def catalogue_softmax_loss(
    model: nn.Module,
    users: torch.Tensor,
    positives: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
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
    n_items = int(n_items or cast(int, model.n_items))
    positive = model(users, positives).float()
    chunk = max(1, block // max(1, len(users)))
    others: torch.Tensor | None = None
    for start in range(0, n_items, chunk):
        items = torch.arange(start, min(start + chunk, n_items), device=positives.device)
        part = checkpoint(_masked_logsumexp, model, users, positives, items, use_reentrant=False)
        others = part if others is None else torch.logaddexp(others, part)
    if others is None:
        raise ValueError("the catalogue softmax needs at least one item")
    per_row = torch.logaddexp(others, positive) - positive
    return _weighted_mean(per_row, weights)
