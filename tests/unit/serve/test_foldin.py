"""Fold-in solvers against known answers: models built by hand, users whose rows are planted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recspark.core.errors import BadInputError
from recspark.model.mf import DotBias, DotProduct
from recspark.model.mlp import EmbeddingNet
from recspark.model.registry import build_model
from recspark.model.spec import make_spec
from recspark.serve.foldin import (
    RankingFoldIn,
    fold_in,
    fold_in_dot_bias,
    parse_ratings,
    score_user,
)


def _dot_model(kind: str, items: int = 80, factors: int = 4, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    model = build_model(
        make_spec(kind, n_users=3, n_items=items, factors=factors, y_range=(0.5, 5.5))
    )
    with torch.no_grad():
        model.item_factors.weight.copy_(torch.randn(items, factors, generator=generator) * 0.6)
        if isinstance(model, DotBias):
            model.item_bias.weight.copy_(torch.randn(items, 1, generator=generator) * 0.3)
    return model.eval()


def test_parse_ratings_reads_pairs_in_order():
    assert parse_ratings(" 1=5, 95=4.5 ,abc=1") == [("1", 5.0), ("95", 4.5), ("abc", 1.0)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("1=5,,2=3", "empty pair"),
        ("1:5", "not ITEM=RATING"),
        ("=5", "not ITEM=RATING"),
        ("1=", "not ITEM=RATING"),
        ("1=five", "not a number"),
        ("1=nan", "not finite"),
        ("1=5,1=4", "rated twice"),
    ],
)
def test_parse_ratings_rejects_malformed_input(text, message):
    with pytest.raises(BadInputError, match=message):
        parse_ratings(text)


def test_dot_fold_in_recovers_a_planted_row_exactly():
    model = _dot_model("dot")
    planted = np.array([0.8, -0.5, 0.3, 1.1], dtype=np.float32)
    rated = np.arange(0, 40, 2)
    ratings = score_user(model, planted, 0.0)[rated]
    user = fold_in(model, rated, ratings, regularization=1e-8)
    np.testing.assert_allclose(user.vector, planted, atol=1e-3)
    assert user.rmse < 1e-4 and user.bias == 0.0


def test_dot_bias_fold_in_inverts_the_sigmoid_link():
    model = _dot_model("dot_bias")
    planted, planted_bias = np.array([0.9, -0.7, 0.4, 0.2], dtype=np.float32), 0.35
    rated = np.arange(1, 60, 3)
    ratings = score_user(model, planted, planted_bias)[rated]
    user = fold_in(model, rated, ratings, regularization=1e-8)
    np.testing.assert_allclose(user.vector, planted, atol=2e-3)
    assert user.bias == pytest.approx(planted_bias, abs=2e-3)
    assert user.rmse < 1e-4


def test_dot_bias_fold_in_is_a_stationary_point_of_the_exact_loss():
    """With noisy ratings the answer is where the gradient of the exact objective vanishes."""
    model = _dot_model("dot_bias", seed=3)
    rng = np.random.default_rng(5)
    rated = rng.choice(80, size=12, replace=False)
    ratings = np.clip(np.round(rng.normal(3.8, 1.0, size=12)), 1, 5)
    regularization = 0.05
    user = fold_in(model, rated, ratings, regularization)
    theta = torch.tensor(np.append(user.vector, user.bias), dtype=torch.float64, requires_grad=True)
    q = model.item_factors.weight.detach().double()[rated]
    c = model.item_bias.weight.detach().double()[rated, 0]
    prediction = 0.5 + 5.0 * torch.sigmoid(q @ theta[:-1] + theta[-1] + c)
    loss = (
        torch.mean((torch.tensor(ratings) - prediction) ** 2) + regularization * theta.pow(2).sum()
    )
    loss.backward()
    assert float(theta.grad.abs().max()) < 1e-5
    assert user.objective == pytest.approx(loss.item(), rel=1e-5)
    # Gauss-Newton improved on the logit-space start, which ignores the squashing.
    start = fold_in_dot_bias(q.numpy(), c.numpy(), ratings, (0.5, 5.5), regularization, max_steps=0)
    assert user.objective < start.objective


def test_more_regularization_shrinks_the_row_towards_zero():
    model = _dot_model("dot_bias")
    rated = np.array([0, 5, 9, 14, 20])
    ratings = np.array([5.0, 4.0, 5.0, 1.0, 2.0])
    norms = [
        np.linalg.norm(np.append(u.vector, u.bias))
        for u in (fold_in(model, rated, ratings, lam) for lam in (0.001, 0.1, 10.0))
    ]
    assert norms[0] > norms[1] > norms[2]
    assert norms[2] < 0.2


def test_fold_in_needs_a_positive_regularization_and_known_items():
    model = _dot_model("dot")
    with pytest.raises(ValueError, match="regularization must be positive"):
        fold_in(model, np.array([1, 2]), np.array([4.0, 3.0]), 0.0)
    with pytest.raises(IndexError, match="item_idx outside"):
        fold_in(model, np.array([1, 80]), np.array([4.0, 3.0]), 0.1)


def test_mlp_fold_in_predicts_the_planted_users_other_ratings():
    torch.manual_seed(11)
    model = build_model(
        make_spec(
            "mlp",
            n_users=50,
            n_items=120,
            user_factors=6,
            item_factors=6,
            hidden=[32],
            dropouts=[0.0],
            y_range=(0.5, 5.5),
        )
    ).eval()
    assert isinstance(model, EmbeddingNet)
    with torch.no_grad():
        model.item_factors.weight.normal_(0.0, 1.0)
        model.user_factors.weight.normal_(0.0, 1.0)
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(3.0)
    planted = np.random.default_rng(2).normal(0.0, 1.0, size=6).astype(np.float32)
    truth = score_user(model, planted, 0.0)
    rated = np.arange(0, 120, 3)
    user = fold_in(model, rated, truth[rated], regularization=1e-4)
    assert user.rmse < 0.1 * truth[rated].std()
    others = np.setdiff1d(np.arange(120), rated)
    predicted = score_user(model, user.vector, 0.0)[others]
    assert np.corrcoef(predicted, truth[others])[0, 1] > 0.9
    # Deterministic: the same answer twice, and the model is left as it was.
    again = fold_in(model, rated, truth[rated], regularization=1e-4)
    np.testing.assert_array_equal(user.vector, again.vector)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_ranking_fold_in_prefers_the_cluster_the_user_rated(loss):
    """Items in three tight clusters; a user who rated three of cluster 1 gets cluster 1 first."""
    rng = np.random.default_rng(4)
    centres = np.eye(3, 6) * 2.0
    cluster = np.repeat(np.arange(3), 20)
    model = DotProduct(n_users=2, n_items=60, factors=6).eval()
    with torch.no_grad():
        vectors = centres[cluster] + rng.normal(0.0, 0.15, size=(60, 6))
        model.item_factors.weight.copy_(torch.as_tensor(vectors, dtype=torch.float32))
    rated = np.array([20, 25, 33])
    settings = RankingFoldIn(loss=loss, positive_threshold=4.0)
    user = fold_in(model, rated, np.array([5.0, 4.0, 5.0]), 0.01, ranking=settings)
    scores = score_user(model, user.vector, user.bias)
    scores[rated] = -np.inf
    top = np.argsort(-scores, kind="stable")[:17]
    assert (cluster[top] == 1).all()
    assert user.rmse is None and user.rank_share < 0.3
    # Ratings under the threshold are not positives, as in training.
    with pytest.raises(BadInputError, match="positive_threshold"):
        fold_in(model, rated, np.array([1.0, 2.0, 3.0]), 0.01, ranking=settings)
