"""EASE as a ranking model's blend partner (``model.blend.kind: ease``): the model against
Steck's closed form, the blend's scores through the kernel contract, a new user's fold-in, the
config rules. End to end (train -> score -> recommend): tests/e2e/test_ranking.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recspark.core.config import load_config
from recspark.core.errors import BadInputError, ConfigError
from recspark.model.autorec import Blend
from recspark.model.ease import MAX_ITEMS, EaseModel, ease_weights
from recspark.model.lists import lists_model
from recspark.model.registry import build_model
from recspark.model.spec import make_spec
from recspark.serve.foldin import RankingFoldIn, fold_in
from recspark.serve.kernel import ScoringKernel

USERS, ITEMS = 30, 14


@pytest.fixture
def history() -> np.ndarray:
    return (np.random.default_rng(4).random((USERS, ITEMS)) < 0.3).astype(np.float32)


def _fitted(history: np.ndarray, regularization: float = 5.0) -> EaseModel:
    users, items = np.nonzero(history)
    model = build_model(make_spec(kind="ease", n_users=USERS, n_items=ITEMS))
    # Every pair twice: x is binary, so repeats change nothing.
    model.fit(np.r_[users, users], np.r_[items, items], regularization)
    return model.eval()


def _blend(history: np.ndarray, weight: float = 2 / 3) -> tuple[Blend, tuple]:
    """A ranking dot_bias (random rows) and EASE blended; the blend and its two parts."""
    torch.manual_seed(0)
    main_model = build_model(
        make_spec(kind="dot_bias", n_users=USERS, n_items=ITEMS, factors=4, y_range=None)
    )
    partner = _fitted(history)
    return Blend([main_model, partner], [1 - weight, weight]).eval(), (main_model, partner)


def test_ease_scores_are_the_closed_form(history):
    model = _fitted(history)
    weights = ease_weights(history.T.astype(np.float64) @ history, 5.0)
    assert np.all(np.diag(weights) == 0)
    with torch.no_grad():
        scores = model.score_items(torch.arange(USERS), torch.arange(ITEMS)).numpy()
    np.testing.assert_allclose(scores, history @ weights, atol=1e-5)
    # A user's row is the indicator of their items, and a new user's is written the same way.
    np.testing.assert_array_equal(model.user_factors.weight[7].numpy(), history[7])
    np.testing.assert_array_equal(model.user_row(np.nonzero(history[7])[0]), history[7])
    assert not any(p.requires_grad for p in model.parameters())


def test_a_catalogue_too_large_for_dense_tables_is_refused_before_any_allocation():
    with pytest.raises(BadInputError, match=r"model\.blend\.kind=ease.*at most 20,000 items"):
        EaseModel(10, MAX_ITEMS + 1)
    with pytest.raises(BadInputError, match="user cells"):
        EaseModel(20_000_000, 1_000)


def test_the_blend_scores_are_the_weighted_sum_through_the_kernel(history):
    blend, (main_model, partner) = _blend(history)
    users, items = torch.arange(USERS), torch.arange(ITEMS)
    with torch.no_grad():
        expected = (
            main_model.score_items(users, items) / 3 + 2 * partner.score_items(users, items) / 3
        )
        by_rows = blend.score_vectors(blend.user_factors(users), None, items)
    torch.testing.assert_close(by_rows, expected)
    # A ranking main model has no head: the blend is its own lists model.
    assert lists_model(blend)[0] is blend
    # The scoring kernel's block (rated items left out), from the blend's own user rows.
    kernel = ScoringKernel(blend, torch.device("cpu"))
    seen_rows, seen_items = np.nonzero(history)
    vectors = blend.user_factors(users).detach().numpy()
    index, _, valid = kernel.block(vectors, np.zeros(USERS, np.float32), 5, seen_rows, seen_items)
    masked = expected.masked_fill(torch.as_tensor(history, dtype=torch.bool), -torch.inf)
    for user in range(USERS):
        want = torch.argsort(masked[user], descending=True, stable=True)[: int(valid[user].sum())]
        assert index[user][valid[user]].tolist() == want.tolist(), user


def test_a_new_user_is_folded_into_the_main_model_and_gets_the_ease_row_of_their_positives(
    history,
):
    blend, (main_model, _) = _blend(history)
    items = np.array([1, 4, 9])
    ratings = np.array([5.0, 2.0, 4.0])
    settings = RankingFoldIn(positive_threshold=3.0)
    folded = fold_in(blend, items, ratings, 0.05, settings)
    alone = fold_in(main_model, items, ratings, 0.05, settings)
    assert folded.vector.shape == (blend.user_factors.embedding_dim,)
    np.testing.assert_allclose(folded.vector[:4], alone.vector)
    ease_row = folded.vector[5:]
    assert ease_row.tolist() == [1.0 if i in (1, 9) else 0.0 for i in range(ITEMS)]


def test_ease_partners_ranking_models_and_autorec_rating_models():
    config = load_config(None, ["model.objective=ranking", "model.blend.kind=ease"])
    assert config.model.blend.share == pytest.approx(2 / 3)
    assert load_config(None, ["model.blend.kind=autorec"]).model.blend.share == 0.3
    with pytest.raises(ConfigError, match=r"model\.blend\.kind=ease"):
        load_config(None, ["model.blend.kind=ease"])  # a rating model
