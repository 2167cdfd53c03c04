"""The item autoencoder (I-AutoRec) and the blend that averages it into a model's predictions
(``model.blend``): its codes by hand, the scoring contract, saving, what the blend publishes,
and the train job with a blend end to end (its figures, its lists, a warm start from it). The
tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_autorec.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recspark.core.config import load_config
from recspark.core.errors import ConfigError
from recspark.model.autorec import AutoRec, Blend
from recspark.model.lists import has_lists_head, lists_model
from recspark.model.saving import model_bytes, model_from_bytes
from recspark.train.loop import init_model
from tests.unit.train.test_training import planted_ratings

USERS, ITEMS = 40, 25


@pytest.fixture
def ratings() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    user_idx, item_idx, rating = planted_ratings(USERS, ITEMS, 400, seed=5)
    return user_idx, item_idx, rating


def _autorec(ratings, hidden: int = 6, y_range=(1.0, 5.0)) -> AutoRec:
    torch.manual_seed(0)
    model = AutoRec(USERS, ITEMS, hidden, mean=3.0, y_range=y_range)
    with torch.no_grad():  # codes away from sigmoid(0) everywhere
        model.encoder_bias.normal_()
    model.set_ratings(*ratings)
    return model


def test_an_items_code_is_the_sigmoid_of_its_raters_rows_weighted_by_their_ratings(ratings):
    model = _autorec(ratings)
    user_idx, item_idx, rating = ratings
    item = int(np.bincount(item_idx).argmax())
    raters = item_idx == item
    by_hand = torch.sigmoid(
        (torch.as_tensor(rating[raters])[:, None] * model.encoder.weight[user_idx[raters]]).sum(0)
        + model.encoder_bias
    )
    torch.testing.assert_close(model.encode(torch.tensor([item]))[0], by_hand)
    # An item nobody rated codes as sigmoid(mu).
    unrated = sorted(set(range(ITEMS)) - set(item_idx.tolist()))
    if unrated:
        torch.testing.assert_close(
            model.encode(torch.tensor(unrated[:1]))[0], torch.sigmoid(model.encoder_bias)
        )
    # The prediction: the user's decoder row against the code, plus the user's bias.
    user = int(user_idx[raters][0])
    predicted = model(torch.tensor([user]), torch.tensor([item]))
    expected = model.user_factors.weight[user] @ by_hand + model.user_bias.weight[user, 0]
    torch.testing.assert_close(predicted[0], expected)


def test_eval_mode_stores_the_codes_and_scores_through_the_kernel_contract(ratings):
    model = _autorec(ratings)
    users, items = torch.arange(USERS), torch.arange(ITEMS)
    with torch.no_grad():
        model.encoder.weight.mul_(3.0)  # codes change after set_ratings: eval stores the new ones
        fresh = model.encode(items)
    model.eval()
    torch.testing.assert_close(model.item_codes, fresh)
    block = model.score_vectors(model.user_factors(users), model.user_bias(users).squeeze(1), items)
    pairs = torch.cartesian_prod(users, items)
    torch.testing.assert_close(block.reshape(-1), model(pairs[:, 0], pairs[:, 1]))
    assert block.min() >= 1.0 and block.max() <= 5.0  # clamped to y_range outside training

    # A saved model keeps the codes, not the ratings, and predicts the same without them.
    loaded, _, _ = model_from_bytes(
        model_bytes(
            model,
            {
                "kind": "autorec",
                "n_users": USERS,
                "n_items": ITEMS,
                "factors": 6,
                "y_range": [1.0, 5.0],
            },
            {"index_date": "2026-01-01"},
        )
    )
    assert isinstance(loaded, AutoRec) and not loaded.has_ratings
    torch.testing.assert_close(loaded(pairs[:, 0], pairs[:, 1]), model(pairs[:, 0], pairs[:, 1]))
    loaded.cut_users()  # what scoring executors hold: the item side scores exported user rows
    torch.testing.assert_close(
        loaded.score_vectors(model.user_factors(users), model.user_bias(users).squeeze(1), items),
        block,
    )


def test_the_autoencoder_learns_planted_ratings_better_than_the_user_means():
    user_idx, item_idx, rating = planted_ratings(120, 60, 5000, seed=2)
    cut = 4000
    model = AutoRec(120, 60, 16, mean=float(rating[:cut].mean()), y_range=(1.0, 5.0))
    model.set_ratings(user_idx[:cut], item_idx[:cut], rating[:cut])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    users, items = torch.as_tensor(user_idx), torch.as_tensor(item_idx)
    target = torch.as_tensor(rating, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        for rows in torch.randperm(cut, generator=generator).split(256):
            loss = torch.nn.functional.mse_loss(model(users[rows], items[rows]), target[rows])
            loss = loss + 0.5 * model.penalty(users[rows], items[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        rmse = float((model(users[cut:], items[cut:]) - target[cut:]).pow(2).mean().sqrt())
    frame = pd.DataFrame({"user": user_idx[:cut], "rating": rating[:cut]})
    user_mean = frame.groupby("user").rating.mean().reindex(range(120)).fillna(rating[:cut].mean())
    baseline = float(np.sqrt(np.mean((user_mean.to_numpy()[user_idx[cut:]] - rating[cut:]) ** 2)))
    assert rmse < baseline - 0.1, (rmse, baseline)


def test_a_blend_is_the_weighted_mean_of_its_parts_and_lists_by_its_main_models_head(ratings):
    main_spec = {
        "kind": "dot_bias",
        "n_users": USERS,
        "n_items": ITEMS,
        "factors": 4,
        "y_range": [0.5, 5.5],
        "lists_head": True,
    }
    part_spec = {
        "kind": "autorec",
        "n_users": USERS,
        "n_items": ITEMS,
        "factors": 6,
        "rating_mean": 3.0,
        "y_range": [1.0, 5.0],
    }
    spec = {
        "kind": "blend",
        "n_users": USERS,
        "n_items": ITEMS,
        "parts": [main_spec, part_spec],
        "weights": [0.7, 0.3],
        "lists_head": True,
    }
    blend = init_model(spec, seed=1)
    assert isinstance(blend, Blend)
    main, partner = blend.members
    partner.set_ratings(*ratings)
    blend.eval()
    users, items = torch.arange(USERS), torch.arange(ITEMS)
    pairs = torch.cartesian_prod(users, items)
    mean = 0.7 * main(pairs[:, 0], pairs[:, 1]) + 0.3 * partner(pairs[:, 0], pairs[:, 1])
    torch.testing.assert_close(blend(pairs[:, 0], pairs[:, 1]), mean)
    # One vector per user and per item, side by side: the scoring kernel's block is the blend.
    block = blend.score_vectors(blend.user_factors(users), None, items)
    torch.testing.assert_close(block.reshape(-1), mean)
    # The lists are the main model's (its head), with or without the autoencoder beside it.
    assert has_lists_head(blend)
    lists, lists_spec = lists_model(blend, 0.5)
    alone, alone_spec = lists_model(main, 0.5)
    assert lists_spec == alone_spec
    torch.testing.assert_close(lists.score_items(users, items), alone.score_items(users, items))
    # Saved and loaded from its spec alone.
    loaded, _, _ = model_from_bytes(model_bytes(blend, spec, {"index_date": "2026-01-01"}))
    torch.testing.assert_close(loaded(pairs[:, 0], pairs[:, 1]), mean)
    with pytest.raises(ValueError, match="sum to 1"):
        Blend([main, partner], [0.7, 0.7])


def test_a_blend_needs_a_rating_model():
    with pytest.raises(ConfigError, match=r"model\.blend"):
        load_config(None, ["model.objective=ranking", "model.blend.kind=autorec"])
