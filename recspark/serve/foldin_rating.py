"""Folding a new user into a rating model: ridge and Gauss-Newton for the dot models, L-BFGS for
a network, and the :class:`FoldIn` record every fold-in returns.

:mod:`recspark.serve.foldin` gives the objective and why each solver answers it; the ranking
models' fold-in (:mod:`recspark.serve.foldin_ranking`) shares :class:`FoldIn`, the input checks
and :func:`frozen`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from recspark.core.errors import BadInputError
from recspark.model.base import EmbeddingModel

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


def _ridge(design: np.ndarray, target: np.ndarray, regularization: float) -> np.ndarray:
    """argmin ``mean((target - design @ x)**2) + regularization * |x|**2``, in float64."""
    n, width = design.shape
    gram = design.T @ design / n + regularization * np.eye(width)
    return np.linalg.solve(gram, design.T @ target / n)


def check_inputs(item_vectors: np.ndarray, ratings: np.ndarray, regularization: float) -> None:
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
    check_inputs(item_vectors, ratings, regularization)
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
    check_inputs(item_vectors, ratings, regularization)
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
        theta, current, residual, squashed = (
            candidate,
            value,
            candidate_residual,
            candidate_squashed,
        )
        if gain <= tolerance * max(current, 1e-12):
            break
    rmse = float(np.sqrt(np.mean(residual**2)))
    return FoldIn(theta[:-1].astype(np.float32), float(theta[-1]), rmse, steps, current)


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
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


def lbfgs(vector: torch.Tensor, max_steps: int) -> torch.optim.LBFGS:
    """The L-BFGS both iterative fold-ins take, over the user row ``vector`` alone: strong Wolfe
    line search, tolerances tight enough that a fixed start gives a deterministic answer."""
    return torch.optim.LBFGS(
        [vector],
        lr=1.0,
        max_iter=max_steps,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )


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
    check_inputs(np.zeros((len(item_idx), 1)), target.numpy(), regularization)
    items = torch.as_tensor(item_idx)
    with frozen(model):
        start = model.user_factors.weight.detach().mean(dim=0, keepdim=True).cpu()
        device = model.user_factors.weight.device
        vector = start.clone().to(device).requires_grad_(True)
        items, target = items.to(device), target.to(device)
        optimizer = lbfgs(vector, max_steps)

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
