"""One behaviour suite over every model kind, plain and with side features, plus known answers.

The suite (spotlight's parametrized ``test_api`` style) checks what every model promises: the one
``forward(user_idx, item_idx)`` signature, shapes, the index check, ``y_range`` bounds, zero-started
biases, ``score_items`` agreeing with ``forward``, a scoring payload that scores exactly as the
whole model, and repeatable construction. The known-answer tests train on tiny planted data in
memory: a low-rank matrix the dot models recover, and genre-determined ratings that only the
featured model can predict for films it never saw rated.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
from torch import nn

from recspark.core.choices import MODEL_KINDS
from recspark.core.errors import BadInputError
from recspark.model.ensemble import Ensemble
from recspark.model.registry import build_model
from recspark.model.saving import model_from_bytes
from recspark.model.spec import make_spec, spec_from_dict
from recspark.model.tables import FeaturedTable, embedding_size
from recspark.serve.scoring import item_side_payload

N_USERS, N_ITEMS, USER_FEATURES, ITEM_FEATURES = 7, 5, 3, 4
Y_RANGE = (1.0, 5.5)


def _spec(kind: str, featured: bool, **extra) -> dict:
    spec = {
        "kind": kind,
        "n_users": N_USERS,
        "n_items": N_ITEMS,
        "factors": 4,
        "y_range": list(Y_RANGE) if kind != "dot" else None,
        "hidden": [8, 6],
        "dropouts": [0.1, 0.1],
        "embedding_dropout": 0.1,
        "user_factors": 3,
        "item_factors": 5,
        "user_features": USER_FEATURES if featured else 0,
        "item_features": ITEM_FEATURES if featured else 0,
    }
    spec.update(extra)
    return spec


def _features(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 2, (N_USERS, USER_FEATURES)).astype(np.float32),
        rng.random((N_ITEMS, ITEM_FEATURES)).astype(np.float32),
    )


def _model(kind: str, featured: bool, seed: int = 0, scale: float = 0.5):
    """A model with every weight drawn at ``scale``, so outputs are far from their start."""
    torch.manual_seed(seed)
    model = build_model(spec_from_dict(_spec(kind, featured)))
    if featured:
        model.set_side_features(*_features())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, scale)
    return model.eval()


def _all_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    users = torch.arange(N_USERS).repeat_interleave(N_ITEMS)
    items = torch.arange(N_ITEMS).repeat(N_USERS)
    return users, items


SUITE = pytest.mark.parametrize(
    "kind,featured", [(k, f) for k in MODEL_KINDS for f in (False, True)], ids=lambda v: str(v)
)


@SUITE
def test_forward_takes_user_and_item_indices_and_returns_one_score_per_pair(kind, featured):
    model = _model(kind, featured)
    assert list(inspect.signature(model.forward).parameters) == ["user_idx", "item_idx"]
    users, items = _all_pairs()
    scores = model(users, items)
    assert scores.shape == (N_USERS * N_ITEMS,)
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all()


@SUITE
def test_indices_outside_the_tables_are_refused_with_a_message(kind, featured):
    model = _model(kind, featured)
    ok = torch.tensor([0, N_USERS - 1])
    model.check_indices(ok, torch.tensor([0, N_ITEMS - 1]))
    with pytest.raises(IndexError, match=r"user_idx outside \[0, 7\).*re-run prepare"):
        model.check_indices(torch.tensor([N_USERS]), torch.tensor([0]))
    with pytest.raises(IndexError, match=r"item_idx outside \[0, 5\)"):
        model.check_indices(torch.tensor([0]), torch.tensor([-1]))


@SUITE
def test_predictions_stay_inside_y_range(kind, featured):
    model = _model(kind, featured, scale=5.0)  # large weights push the sigmoid to its ends
    scores = model(*_all_pairs())
    if kind == "dot":
        assert scores.min() < Y_RANGE[0] or scores.max() > Y_RANGE[1]  # unbounded by design
    else:
        assert scores.min() >= Y_RANGE[0] and scores.max() <= Y_RANGE[1]
        assert scores.max() - scores.min() > 1.0  # and not collapsed to one value


@SUITE
def test_biases_and_feature_embeddings_start_at_zero(kind, featured):
    torch.manual_seed(0)
    model = build_model(spec_from_dict(_spec(kind, featured)))
    if featured:
        model.set_side_features(*_features())
    if kind == "dot_bias":
        assert torch.count_nonzero(model.user_bias.weight) == 0
        assert torch.count_nonzero(model.item_bias.weight) == 0
        users, items = _all_pairs()
        with torch.no_grad():
            assert model.eval()(users, items).sub(sum(Y_RANGE) / 2).abs().max() < 0.05
    for table in (model.user_factors, model.item_factors):
        assert table.weight.abs().max() <= 0.02  # truncated normal, std 0.01, cut at 2 std
        if featured:
            assert isinstance(table, FeaturedTable)
            assert torch.count_nonzero(table.feature_table.weight) == 0


@SUITE
def test_score_items_agrees_with_forward_on_every_pair(kind, featured):
    model = _model(kind, featured)
    users, items = torch.arange(N_USERS), torch.arange(N_ITEMS)
    with torch.no_grad():
        block = model.score_items(users, items)
        pairs = model(*_all_pairs()).view(N_USERS, N_ITEMS)
    assert block.shape == (N_USERS, N_ITEMS)
    torch.testing.assert_close(block, pairs, rtol=1e-5, atol=1e-5)


@SUITE
def test_the_scoring_payload_scores_exported_user_rows_as_the_whole_model(kind, featured):
    """Executors get the item side only and users' effective rows from the user table."""
    model = _model(kind, featured)
    spec = _spec(kind, featured)
    light, light_spec, _ = model_from_bytes(item_side_payload(model, spec, {}))
    assert light_spec["n_users"] == 1
    user_bias = model.user_bias.weight[:, 0] if hasattr(model, "user_bias") else None
    with torch.no_grad():
        scored = light.score_vectors(model.user_factors.weight, user_bias, torch.arange(N_ITEMS))
        expected = model(*_all_pairs()).view(N_USERS, N_ITEMS)
    torch.testing.assert_close(scored, expected, rtol=1e-5, atol=1e-5)


@SUITE
def test_a_saved_state_rebuilds_the_same_model_from_its_spec(kind, featured):
    model = _model(kind, featured)
    rebuilt = build_model(spec_from_dict(_spec(kind, featured)))
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(*_all_pairs()), model(*_all_pairs()))


@SUITE
@pytest.mark.parametrize("build_on", ["cpu", "meta"])
def test_model_bytes_load_back_exactly_whichever_device_builds_them(
    kind, featured, build_on, monkeypatch
):
    """Small models are built on the CPU before their state is loaded, large ones on the meta
    device (``META_BUILD_PARAMETERS``): either way every tensor comes back as saved."""
    from recspark.model import saving as model_io

    model = _model(kind, featured)
    monkeypatch.setattr(model_io, "META_BUILD_PARAMETERS", 0 if build_on == "meta" else 1 << 24)
    saved = model_io.model_bytes(model, _spec(kind, featured), {"a": 1})
    torch.manual_seed(5)
    loaded, spec, meta = model_from_bytes(saved)
    after_loading = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after_loading, torch.rand(3))  # loading left the random stream as it was
    assert spec == _spec(kind, featured) and meta == {"a": 1} and not loaded.training
    state = loaded.state_dict()
    assert all(
        torch.equal(state[k], v) and state[k].device.type == "cpu"
        for k, v in model.state_dict().items()
    )


def test_unfilled_tables_skip_only_the_random_start_and_a_state_must_fill_them():
    """``unfilled()`` (loading a model, building its lists model) leaves the random tables' draw
    out and moves no random stream; outside it the start is the truncated normal as before; a
    state that lacks a table is refused, so no unfilled row is ever used."""
    from recspark.model.tables import random_table, unfilled

    torch.manual_seed(3)
    drawn = random_table(50, 4, sparse=False).weight
    torch.manual_seed(3)
    with unfilled():
        empty = random_table(50, 4, sparse=False)
    assert torch.equal(random_table(50, 4, sparse=False).weight, drawn)  # no draw was taken
    assert drawn.abs().max() <= 0.02 and drawn.std() > 0.005
    assert empty.weight.shape == (50, 4) and empty.weight.requires_grad
    spec = spec_from_dict(_spec("dot_bias", False))
    with unfilled():
        model = build_model(spec)
    state = {k: v for k, v in build_model(spec).state_dict().items() if "item_factors" not in k}
    with pytest.raises(RuntimeError, match="item_factors"):
        model.load_state_dict(state)


@SUITE
def test_construction_is_repeatable_under_a_seed(kind, featured):
    def weights(seed):
        torch.manual_seed(seed)
        return build_model(spec_from_dict(_spec(kind, featured))).state_dict()

    first, again, other = weights(11), weights(11), weights(12)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@SUITE
def test_penalty_is_the_mean_squared_norm_of_the_rows_a_batch_uses(kind, featured):
    model = _model(kind, featured)
    users, items = torch.tensor([0, 3, 3]), torch.tensor([1, 1, 4])
    user_rows = _own(model.user_factors)[users].pow(2).sum(1)
    item_rows = _own(model.item_factors)[items].pow(2).sum(1)
    expected = user_rows + item_rows
    if featured:
        user_weights, item_weights = _features()
        expected = expected + torch.as_tensor(user_weights)[
            users
        ] @ model.user_factors.feature_table.weight.pow(2).sum(1)
        expected = expected + torch.as_tensor(item_weights)[
            items
        ] @ model.item_factors.feature_table.weight.pow(2).sum(1)
    if kind == "dot_bias":
        model.bias_penalty = 0.5
        for table, index in ((model.user_bias, users), (model.item_bias, items)):
            rows = _own(table)[index].pow(2).sum(1)
            if featured:
                weights = _features()[0 if table is model.user_bias else 1]
                rows = rows + torch.as_tensor(weights)[index] @ table.feature_table.weight.pow(
                    2
                ).sum(1)
            expected = expected + 0.5 * rows
    with torch.no_grad():
        torch.testing.assert_close(model.penalty(users, items), expected.mean())


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(
    "kind,extra",
    [("dot_bias", {}), ("mlp", {}), ("dot_bias", {"members": 3})],
    ids=["dot_bias", "mlp", "ensemble"],
)
def test_the_penalty_gradient_by_rows_is_the_autograd_one(kind, extra, sparse):
    """add_penalty_gradient (the loop's shortcut for one process) adds exactly what backward of
    ``weight * penalty`` would, for dense and sparse tables, rows used several times included."""
    torch.manual_seed(0)
    spec = {
        "kind": kind,
        "n_users": 50,
        "n_items": 30,
        "factors": 4,
        "y_range": (1.0, 5.5),
        "sparse": sparse,
        "bias_penalty": 0.5,
        **extra,
    }
    graph, by_rows = build_model(spec_from_dict(spec)), build_model(spec_from_dict(spec))
    by_rows.load_state_dict(graph.state_dict())
    users, items = torch.randint(0, 50, (64,)), torch.randint(0, 30, (64,))
    ratings = torch.rand(64) * 4 + 1
    (
        nn.functional.mse_loss(graph(users, items), ratings) + 0.07 * graph.penalty(users, items)
    ).backward()
    nn.functional.mse_loss(by_rows(users, items), ratings).backward()
    assert by_rows.penalty_by_rows()
    by_rows.add_penalty_gradient(users, items, 0.07)
    for (name, expected), got in zip(graph.named_parameters(), by_rows.parameters(), strict=True):
        dense = [g.to_dense() if g.is_sparse else g for g in (expected.grad, got.grad)]
        torch.testing.assert_close(dense[1], dense[0], atol=1e-7, rtol=1e-6, msg=name)


def test_side_feature_tables_keep_the_autograd_penalty():
    assert not _model("dot_bias", True).penalty_by_rows()
    assert _model("dot_bias", False).penalty_by_rows()


def _own(table) -> torch.Tensor:
    return table.own.weight if isinstance(table, FeaturedTable) else table.weight


def test_a_featured_row_is_its_own_row_plus_its_weighted_feature_embeddings():
    table = FeaturedTable(rows=3, width=2, features=2)
    with torch.no_grad():
        table.own.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        table.feature_table.weight.copy_(torch.tensor([[10.0, 20.0], [100.0, 200.0]]))
    table.set_features(np.array([[0, 0], [1, 0], [0.5, 0.5]]))
    expected = torch.tensor([[1.0, 0.0], [10.0, 21.0], [56.0, 111.0]])
    torch.testing.assert_close(table.weight, expected)
    torch.testing.assert_close(table(torch.tensor([2, 1])), expected[[2, 1]])
    assert table.embedding_dim == 2 and table.num_embeddings == 3


def test_side_features_that_do_not_fit_are_refused():
    featured = build_model(spec_from_dict(_spec("dot_bias", True)))
    with pytest.raises(ValueError, match="do not fit"):
        featured.set_side_features(user=np.ones((N_USERS, USER_FEATURES + 1)))
    with pytest.raises(ValueError, match="NaN"):
        featured.set_side_features(item=np.full((N_ITEMS, ITEM_FEATURES), np.nan))
    plain = build_model(spec_from_dict(_spec("dot_bias", False)))
    with pytest.raises(ValueError, match="built without them"):
        plain.set_side_features(user=np.ones((N_USERS, USER_FEATURES)))


def test_build_model_refuses_empty_tables_and_unknown_kinds():
    with pytest.raises(BadInputError, match="empty tables"):
        build_model(make_spec("dot", 0, 3))
    with pytest.raises(ValueError, match="unknown model kind 'svd'"):
        build_model(make_spec("svd", 3, 3))


def test_the_mlp_embedding_widths_follow_fastais_rule():
    model = build_model(make_spec("mlp", 943, 1682))
    assert model.user_factors.embedding_dim == embedding_size(943) == 74
    assert model.item_factors.embedding_dim == embedding_size(1682) == 102
    assert embedding_size(10**9) == 600


def _train_in_memory(model, users, items, ratings, steps=600, lr=0.05, weight_decay=0.0):
    """Full-batch Adam; the jobs' loop is tested in test_training.py, the model here."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(users, items), ratings)
        if weight_decay:
            loss = loss + weight_decay * model.penalty(users, items)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("kind", ["dot", "dot_bias"])
def test_the_dot_models_recover_a_planted_low_rank_matrix(kind):
    """Rank-2 ratings, 60% observed: the held-out 40% are predicted almost exactly."""
    rng = np.random.default_rng(0)
    n_users, n_items, rank = 40, 30, 2
    truth = rng.normal(0, 1, (n_users, rank)) @ rng.normal(0, 1, (rank, n_items))
    if kind == "dot_bias":
        truth = truth + rng.normal(0, 0.5, (n_users, 1)) + rng.normal(0, 0.5, (1, n_items))
    users, items = np.divmod(np.arange(n_users * n_items), n_items)
    observed = rng.random(n_users * n_items) < 0.6
    values = torch.tensor(truth[users, items], dtype=torch.float32)
    u, i = torch.as_tensor(users), torch.as_tensor(items)
    torch.manual_seed(0)
    model = build_model(make_spec(kind, n_users, n_items, factors=rank, y_range=None))
    with torch.no_grad():  # a larger start than the default 0.01 so 600 full-batch steps suffice
        model.user_factors.weight.normal_(0, 0.3)
        model.item_factors.weight.normal_(0, 0.3)
    model = _train_in_memory(model, u[observed], i[observed], values[observed], steps=1500)
    with torch.no_grad():
        held_out = model(u[~observed], i[~observed]) - values[~observed]
    assert held_out.pow(2).mean().sqrt() < 0.05 * values.std()
    with torch.no_grad():  # a model that knows nothing does no better than the mean
        assert values[~observed].sub(values[observed].mean()).pow(2).mean().sqrt() > 0.5


def test_side_features_predict_films_nobody_rated_from_their_genre():
    """Ratings set by genre alone (A: 5, B: 1); the films of the last two columns are never rated.

    Only the featured model can place them: it learns genre biases, and a new film's bias is the
    mean of its genres'. The plain model predicts the middle of y_range for both.
    """
    n_users, n_items = 20, 10
    genre_b = np.arange(n_items) % 2 == 1
    item_weights = np.stack([~genre_b, genre_b], axis=1).astype(np.float32)
    truth = np.where(genre_b, 1.0, 5.0)
    users, items = np.divmod(np.arange(n_users * n_items), n_items)
    seen = items < n_items - 2
    u, i = torch.as_tensor(users[seen]), torch.as_tensor(items[seen])
    r = torch.tensor(truth[items[seen]], dtype=torch.float32)
    new_films = torch.tensor([n_items - 2, n_items - 1])  # genre A, genre B
    predictions = {}
    for featured in (False, True):
        torch.manual_seed(0)
        model = build_model(
            make_spec(
                "dot_bias",
                n_users,
                n_items,
                factors=2,
                y_range=(0.5, 5.5),
                item_features=2 if featured else 0,
            )
        )
        if featured:
            model.set_side_features(item=item_weights)
        model = _train_in_memory(model, u, i, r, steps=400, weight_decay=0.01)
        with torch.no_grad():
            predictions[featured] = model(torch.zeros(2, dtype=torch.long), new_films)
    assert predictions[True][0] > 4.0 and predictions[True][1] < 2.0
    assert (predictions[False] - 3.0).abs().max() < 0.5


@pytest.mark.parametrize("featured", [False, True], ids=["plain", "featured"])
def test_an_ensemble_is_its_members_mean_everywhere_the_jobs_read_it(featured):
    """forward, score_items, the exported rows through the scoring payload, and a rebuild."""
    spec = _spec("dot_bias", featured, members=3)
    torch.manual_seed(0)
    model = build_model(spec_from_dict(spec))
    assert isinstance(model, Ensemble) and len(model.members) == 3
    if featured:
        model.set_side_features(*_features())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    model.eval()
    users, items = _all_pairs()
    with torch.no_grad():
        each = torch.stack([member(users, items) for member in model.members])
        torch.testing.assert_close(model(users, items), each.mean(0))
        torch.testing.assert_close(model(users, items, members=True), each)
        block = model.score_items(torch.arange(N_USERS), torch.arange(N_ITEMS))
        torch.testing.assert_close(block.reshape(-1), each.mean(0), rtol=1e-5, atol=1e-5)
        # One vector per user: each member's factors and its bias side by side.
        assert model.user_factors.weight.shape == (N_USERS, 3 * (4 + 1))
        light, light_spec, _ = model_from_bytes(item_side_payload(model, spec, {}))
        assert light_spec["n_users"] == 1
        scored = light.score_vectors(model.user_factors.weight, None, torch.arange(N_ITEMS))
        torch.testing.assert_close(scored.reshape(-1), each.mean(0), rtol=1e-5, atol=1e-5)
        rebuilt = build_model(spec_from_dict(spec))
        rebuilt.load_state_dict(model.state_dict())
        torch.testing.assert_close(rebuilt.eval()(users, items), model(users, items))


def test_ensemble_members_learn_as_if_each_were_trained_alone():
    """The loop gives every member its own loss: Adam steps equal those of lone members."""
    from recspark.train.optim import Optimizers
    from recspark.train.steps import train_epoch

    spec = _spec("dot_bias", False, members=2)
    torch.manual_seed(5)
    ensemble = build_model(spec_from_dict(spec))
    alone = [copy.deepcopy(member) for member in ensemble.members]
    rng = np.random.default_rng(0)
    batches = [
        {
            "user_idx": torch.as_tensor(rng.integers(0, N_USERS, 16)),
            "item_idx": torch.as_tensor(rng.integers(0, N_ITEMS, 16)),
            "rating": torch.as_tensor(rng.integers(1, 6, 16).astype(np.float32)),
        }
        for _ in range(5)
    ]
    cpu = torch.device("cpu")
    train_epoch(
        ensemble,
        batches,
        Optimizers([torch.optim.Adam(ensemble.parameters(), lr=0.05)]),
        None,
        cpu,
        weight_decay=0.1,
    )
    for member in alone:
        train_epoch(
            member,
            batches,
            Optimizers([torch.optim.Adam(member.parameters(), lr=0.05)]),
            None,
            cpu,
            weight_decay=0.1,
        )
    for trained, reference in zip(ensemble.members, alone, strict=True):
        for (name, got), expected in zip(
            trained.state_dict().items(), reference.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(
        ensemble.members[0].user_factors.weight, ensemble.members[1].user_factors.weight
    )


def test_an_ensemble_of_mlps_is_refused():
    with pytest.raises(ValueError, match="ensemble averages"):
        build_model(spec_from_dict(_spec("mlp", False, members=2)))
