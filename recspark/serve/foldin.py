"""Folding a new user into a trained model: their embedding and bias from a few ratings.

The item side of the model stays fixed; only the new user's parameters ``theta`` are solved for,
on the same objective the trainer minimises, restricted to that user::

    mean_j (r_j - f(theta, item_j))**2 + regularization * |theta|**2

where ``theta`` is the user's factor row and, for ``dot_bias``, their bias. The trainer adds
``weight_decay * mean over the batch of |row|**2`` for every row a rating touches, so per user
that is exactly this objective with ``regularization = train.weight_decay``: the fold-in asks of
the new row what training asked of every old one.

- ``dot``: ``f = p . q_j`` is linear, so this is ridge regression with a closed form,
  ``p = (Q'Q / n + lambda I)^-1 Q'r / n``.
- ``dot_bias``: ``f = low + (high - low) * sigmoid(p . q_j + b + c_j)`` is not linear. The start
  is the ridge solution in logit space (each rating scaled into ``y_range``, clipped away from the
  ends, through the logit, minus the item bias ``c_j``), which is exact when the ratings are
  noiseless; then Gauss-Newton steps on the exact loss above (damped by the ridge term, with
  step halving so the loss never rises) correct for the squashing, which weighs errors near the
  ends of ``y_range`` less than the logit space does. Without ``y_range`` the model is linear and
  the start is the answer.
- ``mlp``: the network is not invertible, so the user row starts at the mean of the trained user
  rows (a typical user) and takes L-BFGS steps on the loss above, with the network frozen and in
  eval mode (no dropout), from a fixed start: the result is deterministic.
- a blend of a ranking model and EASE (``model.blend.kind: ease``): the user is folded into the
  main model as below, and their EASE row is the indicator of the items they rated at or above
  the positive threshold, as training wrote every user's (EASE has nothing of a user to solve
  for). The rows sit side by side as the blend keeps them (:class:`~recspark.model.autorec.Blend`).

A model trained with ``model.objective: ranking`` (:mod:`recspark.train.objectives.ranking`) was
not fitted to rating values but to rank a user's rated items above the rest, so its fold-in
minimises that loss
instead, over the whole catalogue rather than sampled negatives: the softmax cross-entropy of each
rated item (at or above ``ranking.positive_threshold``) against every item, or for ``bpr`` the
expected ``-log sigmoid(s_i - s_j)`` over negatives ``j`` drawn as training draws them, plus the
same ``regularization * |p|**2``. Both are convex in ``p`` for the dot models; L-BFGS solves them
from a fixed start. The user bias does not change a ranking and stays 0.

Everything here runs on the driver over one user's handful of ratings and the item table. This
module reads ``recommend.ratings`` (:func:`parse_ratings`) and picks the solver for a model
(:func:`fold_in`); the solvers are :mod:`recspark.serve.foldin_rating`'s and
:mod:`recspark.serve.foldin_ranking`'s.
"""

from __future__ import annotations

import math
from typing import TypeGuard

import numpy as np
import torch

from recspark.core.errors import BadInputError
from recspark.model.autorec import Blend
from recspark.model.base import EmbeddingModel
from recspark.model.ease import EaseModel
from recspark.model.ensemble import Ensemble
from recspark.model.mf import DotBias, DotProduct
from recspark.model.mlp import EmbeddingNet
from recspark.serve.foldin_ranking import RankingFoldIn, fold_in_ranking
from recspark.serve.foldin_rating import (
    FoldIn,
    fold_in_dot,
    fold_in_dot_bias,
    fold_in_network,
)
from recspark.serve.ranking_keys import table


def parse_ratings(text: str) -> list[tuple[str, float]]:
    """``"ITEM=RATING,ITEM=RATING"`` as ``[(item, rating)]``, in the order given.

    Raises
    ------
    BadInputError
        On an empty string, a pair without ``=``, an empty item, a rating that is not a finite
        number, or an item given twice; the message quotes the offending pair.
    """
    if text is None or not str(text).strip():
        raise BadInputError("recommend.ratings is empty: give ITEM=RATING pairs, e.g. 1=5,95=4")
    pairs: list[tuple[str, float]] = []
    seen: set[str] = set()
    for raw in str(text).split(","):
        pair = raw.strip()
        if not pair:
            raise BadInputError(
                f"recommend.ratings {text!r} has an empty pair: separate ITEM=RATING pairs with "
                "single commas"
            )
        item, sep, value = pair.partition("=")
        item, value = item.strip(), value.strip()
        if not sep or not item or not value:
            raise BadInputError(f"recommend.ratings: {pair!r} is not ITEM=RATING (e.g. 95=4.5)")
        try:
            rating = float(value)
        except ValueError:
            raise BadInputError(
                f"recommend.ratings: the rating in {pair!r} is not a number"
            ) from None
        if not math.isfinite(rating):
            raise BadInputError(f"recommend.ratings: the rating in {pair!r} is not finite")
        if item in seen:
            raise BadInputError(f"recommend.ratings: item {item!r} is rated twice; give it once")
        seen.add(item)
        pairs.append((item, rating))
    return pairs


def fold_in(
    model: EmbeddingModel,
    item_idx: np.ndarray,
    ratings: np.ndarray,
    regularization: float,
    ranking: RankingFoldIn | None = None,
) -> FoldIn:
    """Fold a new user into ``model`` from their ratings of the items ``item_idx``.

    Parameters
    ----------
    model
        A trained :mod:`recspark.model.base` model; it is not changed.
    item_idx
        Model item indices of the rated items.
    ratings
        The ratings, in the order of ``item_idx``.
    regularization
        ``lambda`` of the objective in the module docstring (the trainer's ``weight_decay`` asks
        the same of every trained user row).
    ranking
        For a model trained with ``model.objective: ranking``, its ranking settings; None for a
        model trained on ratings.

    Returns
    -------
    FoldIn
        The user's factor row and bias (0 for models without user biases), ready for
        :meth:`EmbeddingModel.score_vectors`.
    """
    item_idx = np.asarray(item_idx, dtype=np.int64)
    ratings = np.asarray(ratings, dtype=np.float64)
    if len(item_idx) and (item_idx.min() < 0 or item_idx.max() >= model.n_items):
        raise IndexError(f"item_idx outside [0, {model.n_items})")
    if _ease_partners(model):
        return fold_in_ease_blend(model, item_idx, ratings, regularization, ranking)
    if ranking is not None:
        return fold_in_ranking(model, item_idx, ratings, regularization, ranking)
    if isinstance(model, EmbeddingNet | Ensemble):
        return fold_in_network(model, item_idx, ratings, regularization)
    vectors = table(model, "item_factors").weight.detach().cpu().numpy()[item_idx]
    if isinstance(model, DotBias):
        bias = table(model, "item_bias").weight.detach().cpu().numpy()[item_idx, 0]
        y_range = model.y_range
        return fold_in_dot_bias(vectors, bias, ratings, y_range, regularization)
    if isinstance(model, DotProduct):
        return fold_in_dot(vectors, ratings, regularization)
    raise TypeError(f"no fold-in for {type(model).__name__}")


def _ease_partners(model: EmbeddingModel) -> TypeGuard[Blend]:
    members = list(model.members) if isinstance(model, Blend) else []
    return any(isinstance(member, EaseModel) for member in members[1:])


def fold_in_ease_blend(
    model: Blend,
    item_idx: np.ndarray,
    ratings: np.ndarray,
    regularization: float,
    ranking: RankingFoldIn | None,
) -> FoldIn:
    """The user row of a blend with EASE partners: the main model's fold-in (and its user bias
    column), then each partner's row of the positives (module docstring)."""
    main = model.main
    folded = fold_in(main, item_idx, ratings, regularization, ranking)
    parts = [folded.vector, *([[folded.bias]] if hasattr(main, "user_bias") else [])]
    threshold = ranking.positive_threshold if ranking is not None else -math.inf
    liked = item_idx[ratings >= threshold]
    for partner in list(model.members)[1:]:
        if not isinstance(partner, EaseModel):
            raise TypeError(f"no fold-in for a blend with a {type(partner).__name__} partner")
        parts.append(partner.user_row(liked))
    vector = np.concatenate([np.asarray(part, dtype=np.float32) for part in parts])
    return FoldIn(vector, 0.0, folded.rmse, folded.iterations, folded.objective, folded.rank_share)


def score_user(
    model: EmbeddingModel, vector: np.ndarray, bias: float, device: str | torch.device = "cpu"
) -> np.ndarray:
    """The model's score of every item for one user given by their factor row and bias."""
    with torch.no_grad():
        vectors = torch.as_tensor(np.asarray(vector, dtype=np.float32)[None, :], device=device)
        biases = torch.as_tensor([float(bias)], dtype=torch.float32, device=device)
        items = torch.arange(model.n_items, device=device)
        return model.score_vectors(vectors, biases, items)[0].float().cpu().numpy()
