"""Folding a new user into a ranking model: its training loss over the whole catalogue, solved
by L-BFGS with the model frozen (:mod:`recspark.serve.foldin` gives the objective)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recspark.core.errors import BadInputError
from recspark.model.base import EmbeddingModel
from recspark.model.mlp import EmbeddingNet
from recspark.serve.foldin_rating import FoldIn, check_inputs, frozen, lbfgs


@dataclass(frozen=True)
class RankingFoldIn:
    """How a ranking model was trained, as far as its fold-in needs to know (``ranking.*``).

    ``item_counts`` are the positives per item of the train split; they weigh ``bpr`` negatives
    when ``sampling_alpha`` is above 0 and are unused otherwise.
    """

    loss: str = "softmax"
    positive_threshold: float = 0.0
    sampling_alpha: float = 0.0
    confidence: str = "none"
    confidence_alpha: float = 1.0
    item_counts: np.ndarray | None = None


def _ranking_targets(
    item_idx: np.ndarray, ratings: np.ndarray, settings: RankingFoldIn, n_items: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(positives, weights, negative_weights)`` of a ranking fold-in: the positive items, their
    weights (summing to 1), and for ``bpr`` each positive's distribution over the negatives
    (drawn as training draws them, never the positive itself); None for ``softmax``.

    Raises
    ------
    BadInputError
        When no rating reaches the positive threshold.
    """
    positive = ratings >= settings.positive_threshold
    if not positive.any():
        raise BadInputError(
            "no rating reaches the model's ranking.positive_threshold "
            f"{settings.positive_threshold:g}: a ranking model learns only from items a user "
            "rated at or above it"
        )
    positives = torch.as_tensor(item_idx[positive])
    raw_weights = np.ones(int(positive.sum()))
    if settings.confidence == "rating":
        raw_weights = 1.0 + settings.confidence_alpha * ratings[positive]
    weights = torch.as_tensor(raw_weights / raw_weights.sum(), dtype=torch.float32)
    if settings.loss == "softmax":
        return positives, weights, None
    if settings.loss != "bpr":
        raise ValueError(f"unknown ranking loss {settings.loss!r}")
    counts = settings.item_counts if settings.item_counts is not None else np.zeros(n_items)
    draw = (np.asarray(counts, dtype=np.float64) + 1.0) ** settings.sampling_alpha
    drawn = torch.as_tensor(draw / draw.sum(), dtype=torch.float32)
    # A negative never equals its own positive: drop it and renormalise, per positive.
    negative_weights = drawn.repeat(len(positives), 1)
    negative_weights[torch.arange(len(positives)), positives] = 0.0
    return positives, weights, negative_weights / negative_weights.sum(dim=1, keepdim=True)


def fold_in_ranking(
    model: EmbeddingModel,
    item_idx: np.ndarray,
    ratings: np.ndarray,
    regularization: float,
    settings: RankingFoldIn,
    max_steps: int = 200,
) -> FoldIn:
    """The user row of a ranking model: its loss over the whole catalogue (module docstring).

    Parameters
    ----------
    model
        A model trained with ``model.objective: ranking``; not changed.
    item_idx, ratings
        The rated items and their ratings; those at or above ``settings.positive_threshold`` are
        the positives.
    regularization
        ``lambda`` on ``|p|**2``; positive.
    settings
        The ranking settings the model was trained with.
    max_steps
        L-BFGS iterations at most.

    Raises
    ------
    BadInputError
        When no rating reaches the positive threshold.
    """
    item_idx = np.asarray(item_idx, dtype=np.int64)
    ratings = np.asarray(ratings, dtype=np.float64)
    check_inputs(np.zeros((len(item_idx), 1)), ratings, regularization)
    positives, weights, negative_weights = _ranking_targets(
        item_idx, ratings, settings, model.n_items
    )
    n_items = model.n_items
    items = torch.arange(n_items)
    with frozen(model):
        if isinstance(model, EmbeddingNet):
            start = model.user_factors.weight.detach().mean(dim=0, keepdim=True).cpu()
        else:
            start = torch.zeros(1, model.user_factors.embedding_dim)
        vector = start.clone().requires_grad_(True)
        zero_bias = torch.zeros(1)
        optimizer = lbfgs(vector, max_steps)

        def loss_value() -> torch.Tensor:
            scores = model.score_vectors(vector, zero_bias, items)[0]
            if negative_weights is None:  # softmax
                fit = -(weights * torch.log_softmax(scores, dim=0)[positives]).sum()
            else:
                margins = scores[positives][:, None] - scores[None, :]
                fit = (
                    weights[:, None] * negative_weights * torch.nn.functional.softplus(-margins)
                ).sum()
            return fit + regularization * vector.pow(2).sum()

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            value = loss_value()
            value.backward()
            return value

        optimizer.step(closure)
        iterations = int(optimizer.state[vector].get("n_iter", 0))
        with torch.no_grad():
            value = float(loss_value())
            scores = model.score_vectors(vector, zero_bias, items)[0]
            above = (scores[None, :] > scores[positives][:, None]).float().mean(dim=1)
    return FoldIn(
        vector.detach().numpy()[0].astype(np.float32),
        0.0,
        None,
        iterations,
        value,
        float(above.mean()),
    )
