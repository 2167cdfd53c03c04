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

A model trained with ``model.objective: ranking`` (:mod:`recspark.train.objectives.ranking`) was not fitted to
rating values but to rank a user's rated items above the rest, so its fold-in minimises that loss
instead, over the whole catalogue rather than sampled negatives: the softmax cross-entropy of each
rated item (at or above ``ranking.positive_threshold``) against every item, or for ``bpr`` the
expected ``-log sigmoid(s_i - s_j)`` over negatives ``j`` drawn as training draws them, plus the
same ``regularization * |p|**2``. Both are convex in ``p`` for the dot models; L-BFGS solves them
from a fixed start. The user bias does not change a ranking and stays 0.

Everything here runs on the driver over one user's handful of ratings and the item table.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from recspark.core.errors import BadInputError
from recspark.model.autorec import Blend
from recspark.model.base import EmbeddingModel
from recspark.model.ease import EaseModel
from recspark.model.ensemble import Ensemble
from recspark.model.mf import DotBias, DotProduct
from recspark.model.mlp import EmbeddingNet

# Scaled ratings are clipped to [EDGE, 1 - EDGE] before the logit: a rating at the bottom of
# y_range would otherwise need an infinite logit. Gauss-Newton then refines on the exact loss.
EDGE = 0.02


@dataclass(frozen=True)
class FoldIn:
    """A folded-in user: their factor row and bias, and how well it fits their own ratings.

    ``rmse`` is the error on the given ratings (rating models); ``rank_share`` the mean share of
    the catalogue scored above each rated item (ranking models; 0 is perfect). The other is None.
    """

    vector: np.ndarray
    bias: float
    rmse: float | None
    iterations: int
    objective: float
    rank_share: float | None = None


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
            raise BadInputError(
                f"recommend.ratings: {pair!r} is not ITEM=RATING (e.g. 95=4.5)"
            )
        try:
            rating = float(value)
        except ValueError:
            raise BadInputError(f"recommend.ratings: the rating in {pair!r} is not a number") from None
        if not math.isfinite(rating):
            raise BadInputError(f"recommend.ratings: the rating in {pair!r} is not finite")
        if item in seen:
            raise BadInputError(f"recommend.ratings: item {item!r} is rated twice; give it once")
        seen.add(item)
        pairs.append((item, rating))
    return pairs


def _ridge(design: np.ndarray, target: np.ndarray, regularization: float) -> np.ndarray:
    """argmin ``mean((target - design @ x)**2) + regularization * |x|**2``, in float64."""
    n, width = design.shape
    gram = design.T @ design / n + regularization * np.eye(width)
    return np.linalg.solve(gram, design.T @ target / n)


def _check(item_vectors: np.ndarray, ratings: np.ndarray, regularization: float) -> None:
    if len(ratings) == 0:
        raise BadInputError("fold-in needs at least one rating")
    if len(item_vectors) != len(ratings):
        raise ValueError(f"{len(item_vectors)} item rows for {len(ratings)} ratings")
    if regularization <= 0:
        raise ValueError(
            "regularization must be positive: with fewer ratings than factors the fold-in has "
            "no unique answer otherwise"
        )


def fold_in_dot(item_vectors: np.ndarray, ratings: np.ndarray, regularization: float) -> FoldIn:
    """Ridge regression of the ratings on the rated items' factor rows (the ``dot`` model).

    Parameters
    ----------
    item_vectors
        ``n x factors``: the factor rows of the rated items, in the order of ``ratings``.
    ratings
        The ``n`` ratings.
    regularization
        ``lambda`` of the objective in the module docstring; positive.
    """
    _check(item_vectors, ratings, regularization)
    design = np.asarray(item_vectors, dtype=np.float64)
    target = np.asarray(ratings, dtype=np.float64)
    vector = _ridge(design, target, regularization)
    residual = target - design @ vector
    objective = float(np.mean(residual**2) + regularization * vector @ vector)
    rmse = float(np.sqrt(np.mean(residual**2)))
    return FoldIn(vector.astype(np.float32), 0.0, rmse, 1, objective)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * values))


def fold_in_dot_bias(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    ratings: np.ndarray,
    y_range: tuple[float, float] | None,
    regularization: float,
    max_steps: int = 50,
    tolerance: float = 1e-10,
) -> FoldIn:
    """The user row and bias of ``sigmoid(p . q_j + b + c_j)`` scaled into ``y_range``.

    Logit-space ridge start, then damped Gauss-Newton on the exact loss (module docstring).

    Parameters
    ----------
    item_vectors, item_bias
        Factor rows ``q_j`` and biases ``c_j`` of the rated items, in the order of ``ratings``.
    ratings
        The user's ratings; they should lie inside ``y_range``.
    y_range
        The model's ``(low, high)``; None for an unsquashed model (then it is linear ridge).
    regularization
        ``lambda`` on ``|p|**2 + b**2``; positive.
    max_steps
        Most Gauss-Newton steps; it stops earlier once the loss improves by less than
        ``tolerance`` (relative).
    """
    _check(item_vectors, ratings, regularization)
    vectors = np.asarray(item_vectors, dtype=np.float64)
    offsets = np.asarray(item_bias, dtype=np.float64).reshape(-1)
    target = np.asarray(ratings, dtype=np.float64)
    design = np.hstack([vectors, np.ones((len(vectors), 1))])
    if y_range is None:
        theta = _ridge(design, target - offsets, regularization)
        residual = target - offsets - design @ theta
        objective = float(np.mean(residual**2) + regularization * theta @ theta)
        rmse = float(np.sqrt(np.mean(residual**2)))
        return FoldIn(theta[:-1].astype(np.float32), float(theta[-1]), rmse, 1, objective)
    low, high = float(y_range[0]), float(y_range[1])
    span = high - low
    scaled = np.clip((target - low) / span, EDGE, 1.0 - EDGE)
    theta = _ridge(design, np.log(scaled / (1.0 - scaled)) - offsets, regularization)

    def loss(parameters: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        squashed = _sigmoid(design @ parameters + offsets)
        residual = target - (low + span * squashed)
        value = float(np.mean(residual**2) + regularization * parameters @ parameters)
        return value, residual, squashed

    n, width = design.shape
    current, residual, squashed = loss(theta)
    steps = 0
    for _ in range(max_steps):
        jacobian = design * (span * squashed * (1.0 - squashed))[:, None]
        gram = jacobian.T @ jacobian / n + regularization * np.eye(width)
        gradient = jacobian.T @ residual / n - regularization * theta
        step = np.linalg.solve(gram, gradient)
        scale, improved = 1.0, False
        for _ in range(30):
            candidate = theta + scale * step
            value, candidate_residual, candidate_squashed = loss(candidate)
            if value <= current:
                improved = True
                break
            scale *= 0.5
        if not improved:
            break
        steps += 1
        gain = current - value
        theta, current, residual, squashed = candidate, value, candidate_residual, candidate_squashed
        if gain <= tolerance * max(current, 1e-12):
            break
    rmse = float(np.sqrt(np.mean(residual**2)))
    return FoldIn(theta[:-1].astype(np.float32), float(theta[-1]), rmse, steps, current)


@contextlib.contextmanager
def _frozen(model: torch.nn.Module):
    """The model's parameters without gradients and in eval mode, restored afterwards."""
    flags = [parameter.requires_grad for parameter in model.parameters()]
    was_training = model.training
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter, flag in zip(model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
        model.train(was_training)


def fold_in_network(
    model: EmbeddingModel,
    item_idx: np.ndarray,
    ratings: np.ndarray,
    regularization: float,
    max_steps: int = 300,
) -> FoldIn:
    """The user row of any model by L-BFGS on the fold-in loss, the network frozen (``mlp``).

    Starts from the mean of the trained user rows, so the answer is deterministic.
    """
    item_idx = np.asarray(item_idx, dtype=np.int64)
    target = torch.as_tensor(np.asarray(ratings, dtype=np.float32))
    _check(np.zeros((len(item_idx), 1)), target.numpy(), regularization)
    items = torch.as_tensor(item_idx)
    with _frozen(model):
        start = model.user_factors.weight.detach().mean(dim=0, keepdim=True).cpu()
        device = model.user_factors.weight.device
        vector = start.clone().to(device).requires_grad_(True)
        items, target = items.to(device), target.to(device)
        optimizer = torch.optim.LBFGS(
            [vector], lr=1.0, max_iter=max_steps, tolerance_grad=1e-9, tolerance_change=1e-12,
            history_size=20, line_search_fn="strong_wolfe",
        )

        def objective() -> tuple[torch.Tensor, torch.Tensor]:
            prediction = model.score_vectors(vector, None, items)[0]
            mse = torch.mean((target - prediction) ** 2)
            return mse + regularization * vector.pow(2).sum(), mse

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            value, _ = objective()
            value.backward()
            return value

        optimizer.step(closure)
        iterations = int(optimizer.state[vector].get("n_iter", 0))
        with torch.no_grad():
            value, mse = objective()
    return FoldIn(
        vector.detach().cpu().numpy()[0].astype(np.float32),
        0.0,
        float(math.sqrt(float(mse))),
        iterations,
        float(value),
    )


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
    _check(np.zeros((len(item_idx), 1)), ratings, regularization)
    positive = ratings >= settings.positive_threshold
    if not positive.any():
        raise BadInputError(
            f"no rating reaches the model's ranking.positive_threshold {settings.positive_threshold:g}: "
            "a ranking model learns only from items a user rated at or above it"
        )
    positives = torch.as_tensor(item_idx[positive])
    weights = np.ones(int(positive.sum()))
    if settings.confidence == "rating":
        weights = 1.0 + settings.confidence_alpha * ratings[positive]
    weights = torch.as_tensor(weights / weights.sum(), dtype=torch.float32)
    n_items = model.n_items
    if settings.loss == "bpr":
        counts = settings.item_counts if settings.item_counts is not None else np.zeros(n_items)
        draw = (np.asarray(counts, dtype=np.float64) + 1.0) ** settings.sampling_alpha
        draw = torch.as_tensor(draw / draw.sum(), dtype=torch.float32)
        # A negative never equals its own positive: drop it and renormalise, per positive.
        negative_weights = draw.repeat(len(positives), 1)
        negative_weights[torch.arange(len(positives)), positives] = 0.0
        negative_weights = negative_weights / negative_weights.sum(dim=1, keepdim=True)
    elif settings.loss != "softmax":
        raise ValueError(f"unknown ranking loss {settings.loss!r}")
    items = torch.arange(n_items)
    with _frozen(model):
        if isinstance(model, EmbeddingNet):
            start = model.user_factors.weight.detach().mean(dim=0, keepdim=True).cpu()
        else:
            start = torch.zeros(1, model.user_factors.embedding_dim)
        vector = start.clone().requires_grad_(True)
        zero_bias = torch.zeros(1)
        optimizer = torch.optim.LBFGS(
            [vector], lr=1.0, max_iter=max_steps, tolerance_grad=1e-9, tolerance_change=1e-12,
            history_size=20, line_search_fn="strong_wolfe",
        )

        def loss_value() -> torch.Tensor:
            scores = model.score_vectors(vector, zero_bias, items)[0]
            if settings.loss == "softmax":
                fit = -(weights * torch.log_softmax(scores, dim=0)[positives]).sum()
            else:
                margins = scores[positives][:, None] - scores[None, :]
                fit = (weights[:, None] * negative_weights * torch.nn.functional.softplus(-margins)).sum()
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
        A trained :mod:`recspark.model` model; it is not changed.
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
    vectors = model.item_factors.weight.detach().cpu().numpy()[item_idx]
    if isinstance(model, DotBias):
        bias = model.item_bias.weight.detach().cpu().numpy()[item_idx, 0]
        return fold_in_dot_bias(vectors, bias, ratings, model.y_range, regularization)
    if isinstance(model, DotProduct):
        return fold_in_dot(vectors, ratings, regularization)
    raise TypeError(f"no fold-in for {type(model).__name__}")


def _ease_partners(model: EmbeddingModel) -> bool:
    return isinstance(model, Blend) and any(isinstance(p, EaseModel) for p in model.members[1:])


def fold_in_ease_blend(
    model: EmbeddingModel,
    item_idx: np.ndarray,
    ratings: np.ndarray,
    regularization: float,
    ranking: RankingFoldIn | None,
) -> FoldIn:
    """The user row of a blend with EASE partners: the main model's fold-in (and its user bias
    column), then each partner's row of the positives (module docstring)."""
    from recspark.model.ease import EaseModel

    main = model.main
    folded = fold_in(main, item_idx, ratings, regularization, ranking)
    parts = [folded.vector, *([[folded.bias]] if hasattr(main, "user_bias") else [])]
    threshold = ranking.positive_threshold if ranking is not None else -math.inf
    liked = item_idx[ratings >= threshold]
    for partner in model.members[1:]:
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
