"""The ranking head beside a rating model (``lists.source: head``): its scores, the lists model
score/evaluate/recommend rank by, its loss, its learning rate, and what it learns.

The known-answer test trains in memory on planted data where which items a user rates depends on
the user (as on MovieLens), and checks that the head's lists find the held-out items far better
than the rating head's own ranking, while the rating head still predicts ratings.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from recspark.core.config import Config
from recspark.model.ensemble import Ensemble
from recspark.model.lists import HeadView, has_lists_head, lists_model
from recspark.model.registry import build_model
from recspark.model.saving import model_from_bytes
from recspark.model.spec import make_spec, spec_from_dict
from recspark.model.tables import FeaturedTable
from recspark.serve.scoring import item_side_payload
from recspark.train.objectives.joint import JointObjective
from recspark.train.objectives.ranking import RankingObjective, RankingSettings
from recspark.train.optim import Schedule, make_optimizer

N_USERS, N_ITEMS = 9, 6


def _model(kind: str = "dot_bias", members: int = 1, featured: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(
        make_spec(
            kind,
            N_USERS,
            N_ITEMS,
            factors=4,
            y_range=None if kind == "dot" else (1.0, 5.5),
            hidden=[5],
            dropouts=[0.0],
            item_factors=4,
            user_factors=3,
            members=members,
            lists_head=True,
            user_features=2 if featured else 0,
            item_features=3 if featured else 0,
        )
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    if featured:
        rng = np.random.default_rng(1)
        model.set_side_features(
            rng.integers(0, 2, (N_USERS, 2)).astype(np.float32),
            rng.random((N_ITEMS, 3)).astype(np.float32),
        )
    return model.eval()


def _logit(member) -> torch.Tensor:
    users, items = torch.arange(N_USERS), torch.arange(N_ITEMS)
    raw = member.user_factors(users) @ member.item_factors(items).T
    return raw + member.item_bias(items).T if hasattr(member, "item_bias") else raw


@pytest.mark.parametrize("kind", ["dot", "dot_bias"])
@pytest.mark.parametrize("featured", [False, True])
def test_the_lists_model_scores_head_plus_rating_weight_times_the_rating_logit(kind, featured):
    model = _model(kind, featured=featured)
    lists, spec = lists_model(model, rating_weight=0.7)
    users, items = torch.arange(N_USERS), torch.arange(N_ITEMS)
    head = HeadView(model).score_items(users, items)
    expected = head + 0.7 * _logit(model)
    assert spec["kind"] == "dot_bias" and spec["y_range"] is None
    assert torch.allclose(lists.score_items(users, items), expected, atol=1e-5)
    # A plain model: its own spec rebuilds it, and the scoring payload scores as it does.
    rebuilt = build_model(spec_from_dict(spec))
    rebuilt.load_state_dict(lists.state_dict())
    assert torch.allclose(rebuilt.score_items(users, items), expected, atol=1e-5)
    light, _, _ = model_from_bytes(item_side_payload(lists, spec, {"objective": "ranking"}))
    vectors = lists.user_factors(users)
    assert torch.allclose(light.score_vectors(vectors, None, items), expected, atol=1e-5)


def test_an_ensembles_lists_are_the_mean_of_its_members_lists():
    model = _model("dot_bias", members=3)
    lists, spec = lists_model(model, rating_weight=0.5)
    users, items = torch.arange(N_USERS), torch.arange(N_ITEMS)
    each = [HeadView(m).score_items(users, items) + 0.5 * _logit(m) for m in model.members]
    assert isinstance(lists, Ensemble) and spec["members"] == 3
    assert torch.allclose(lists.score_items(users, items), torch.stack(each).mean(0), atol=1e-5)


def test_an_mlps_lists_are_its_head_alone():
    model = _model("mlp")
    lists, _ = lists_model(model, rating_weight=0.5)
    users, items = torch.arange(N_USERS), torch.arange(N_ITEMS)
    head = HeadView(model).score_items(users, items)
    assert torch.allclose(lists.score_items(users, items), head, atol=1e-5)


def test_a_model_without_a_head_is_its_own_lists_model():
    model = build_model(make_spec("dot_bias", N_USERS, N_ITEMS, factors=4))
    assert not has_lists_head(model)
    assert lists_model(model, 0.5) == (model, None)


def test_the_head_rows_are_penalised_and_cut_like_the_models_own():
    model = _model("dot_bias")
    users, items = torch.tensor([0, 3, 3]), torch.tensor([1, 1, 5])
    head = model.lists_head
    own = (
        model.user_factors(users).pow(2).sum(1)
        + model.item_factors(items).pow(2).sum(1)
        + model.user_bias(users).pow(2).sum(1)
        + model.item_bias(items).pow(2).sum(1)
    )
    extra = head.user_factors(users).pow(2).sum(1) + head.item_bias(items).pow(2).sum(1)
    assert torch.allclose(model.penalty(users, items), (own + extra).mean())
    model.cut_users()
    assert head.user_factors.num_embeddings == 1


def test_side_features_reach_the_heads_tables():
    model = _model("dot_bias", featured=True)
    head = model.lists_head
    for table, side in ((head.user_factors, "user"), (head.item_bias, "item")):
        assert isinstance(table, FeaturedTable)
        assert torch.equal(table.feature_weights, getattr(model, f"{side}_factors").feature_weights)
        expected = table.own.weight + table.feature_weights @ table.feature_table.weight
        assert torch.allclose(table.weight, expected, atol=1e-6)
        assert table.feature_weights.abs().sum() > 0


def test_the_joint_loss_is_the_rating_mse_plus_the_weighted_head_softmax():
    model = _model("dot_bias").train()
    batch = {
        "user_idx": torch.tensor([0, 1, 2, 2]),
        "item_idx": torch.tensor([3, 0, 5, 1]),
        "rating": torch.tensor([4.0, 2.0, 5.0, 1.0]),
    }
    settings = RankingSettings(loss="softmax", negatives=N_ITEMS, positive_threshold=3.0)
    objective = JointObjective(RankingObjective(settings), head_weight=0.4)
    from recspark.train.objectives.base import RunContext

    objective.start_epoch(model, torch.device("cpu"), RunContext(N_USERS, N_ITEMS, seed=1))
    loss = objective.batch_loss(model, batch, torch.device("cpu")).loss
    users, items = batch["user_idx"], batch["item_idx"]
    mse = nn.functional.mse_loss(model(users, items), batch["rating"])
    # Every row is a positive of the head's softmax over the whole catalogue (the threshold of
    # ranking.positive_threshold is the ranking objective's, not the head's).
    scores = HeadView(model).score_items(users, torch.arange(N_ITEMS))
    softmax = nn.functional.cross_entropy(scores, items)
    assert math.isclose(loss.item(), (mse + 0.4 * softmax).item(), rel_tol=1e-5)


@pytest.mark.parametrize(
    ("members", "featured", "sparse", "negatives", "head_rows"),
    [
        (1, False, True, 4, None),
        (3, False, True, 4, None),
        (2, True, False, 4, None),
        (2, False, False, N_ITEMS, None),
        (1, False, True, 4, 4),
        (2, True, False, N_ITEMS, 3),
    ],
)
def test_the_one_pass_joint_loss_equals_the_two_passes_and_their_gradients(
    members, featured, sparse, negatives, head_rows
):
    """The one-pass loss (DotProduct.joint_scores) against the rating and ranking objectives'
    own passes over the model and its HeadView, penalty included; with ``head_rows`` the head
    trains on, and is penalised for, the batch's first rows only."""
    from recspark.train.objectives.base import RunContext

    torch.manual_seed(0)
    model = build_model(
        make_spec(
            "dot_bias",
            N_USERS,
            N_ITEMS,
            factors=4,
            sparse=sparse,
            members=members,
            lists_head=True,
            user_features=2 if featured else 0,
            item_features=3 if featured else 0,
        )
    )
    if featured:
        rng = np.random.default_rng(1)
        model.set_side_features(
            rng.integers(0, 2, (N_USERS, 2)).astype(np.float32),
            rng.random((N_ITEMS, 3)).astype(np.float32),
        )
    batch = {
        "user_idx": torch.tensor([0, 1, 2, 2, 8, 4]),
        "item_idx": torch.tensor([3, 0, 5, 1, 3, 2]),
        "rating": torch.tensor([4.0, 2.0, 5.0, 1.0, 3.0, 5.0]),
    }
    counts = np.array([5.0, 1.0, 0.0, 9.0, 2.0, 3.0])
    settings = RankingSettings(loss="softmax", negatives=negatives, sampling_alpha=0.75)
    objective = JointObjective(RankingObjective(settings, counts), 0.7, head_rows)
    context = RunContext(N_USERS, N_ITEMS, seed=3, epoch=2)
    cpu = torch.device("cpu")
    objective.start_epoch(model, cpu, context)
    assert objective._fused_loss(model, batch, cpu) is not None  # the one pass runs here
    two_passes = JointObjective(RankingObjective(settings, counts), 0.7, head_rows)
    two_passes._fused_loss = lambda *args: None
    results = []
    for chosen in (objective, two_passes):
        model.zero_grad(set_to_none=True)
        chosen.start_epoch(model, cpu, context)
        step = chosen.batch_loss(model, batch, cpu)
        assert step.head_rows == (head_rows or 6)
        loss = step.loss + 0.1 * model.penalty(step.users, step.items, step.head_rows)
        loss.backward()
        grads = {
            name: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone()
            for name, p in model.named_parameters()
            if p.grad is not None
        }
        results.append((loss.item(), float(step.reported_sum / step.counted), grads))
    (fused, fused_mse, fused_grads), (plain, plain_mse, plain_grads) = results
    assert math.isclose(fused, plain, rel_tol=1e-6)
    assert math.isclose(fused_mse, plain_mse, rel_tol=1e-6)
    assert fused_grads.keys() == plain_grads.keys() and len(fused_grads) > 4
    for name, grad in fused_grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)
    # The head's user rows learn from the users of its rows alone.
    head_users = fused_grads[next(n for n in fused_grads if "lists_head.user_factors" in n)]
    touched = set(torch.nonzero(head_users.abs().sum(dim=1)).flatten().tolist())
    assert touched == set(batch["user_idx"][: head_rows or 6].tolist())


@pytest.mark.parametrize("head_rows", [None, 2])
def test_the_penalty_by_rows_adds_into_the_one_pass_lookups_of_the_item_rows(head_rows):
    """After the one-pass loss, the item rows' sparse gradient holds the pairs' rows, then the
    negatives'; the penalty's gradient goes into the pairs' rows instead of appending more, and
    equals autograd's, the head's rows penalised for the rows it trained on."""
    from recspark.train.objectives.base import RunContext

    torch.manual_seed(0)
    model = build_model(
        make_spec("dot_bias", N_USERS, N_ITEMS, factors=4, sparse=True, lists_head=True)
    )
    users, items = torch.tensor([0, 1, 2, 2]), torch.tensor([3, 0, 5, 3])
    batch = {"user_idx": users, "item_idx": items, "rating": torch.tensor([4.0, 2.0, 5.0, 1.0])}
    settings = RankingSettings(negatives=3)
    objective = JointObjective(RankingObjective(settings), 0.5, head_rows)
    objective.start_epoch(model, torch.device("cpu"), RunContext(N_USERS, N_ITEMS, seed=1))
    step = objective.batch_loss(model, batch, torch.device("cpu"))
    step.loss.backward()
    model.add_penalty_gradient(users, items, 0.1, step.head_rows)
    by_rows = {name: p.grad.to_dense().clone() for name, p in model.named_parameters()}
    used = head_rows or len(items)
    assert model.item_factors.weight.grad._indices().shape[1] == len(items) + 3
    assert model.lists_head.item_bias.weight.grad._indices().shape[1] == used + 3
    assert model.lists_head.user_factors.weight.grad._indices().shape[1] == used
    model.zero_grad(set_to_none=True)
    objective.start_epoch(model, torch.device("cpu"), RunContext(N_USERS, N_ITEMS, seed=1))
    loss = objective.batch_loss(model, batch, torch.device("cpu")).loss
    (loss + 0.1 * model.penalty(users, items, step.head_rows)).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(by_rows[name], p.grad.to_dense(), msg=name)


@pytest.mark.parametrize("optimizer", ["adam", "sparse_adam"])
def test_the_heads_rows_learn_at_lr_times_head_lr_scale(optimizer):
    torch.manual_seed(0)
    model = build_model(
        make_spec(
            "dot_bias",
            N_USERS,
            N_ITEMS,
            factors=4,
            sparse=optimizer == "sparse_adam",
            lists_head=True,
        )
    )
    optimizers = make_optimizer(model, optimizer, lr=0.01, head_lr_scale=0.25)
    head = {id(p) for p in model.head_parameters()}
    groups = optimizers.param_groups
    assert {g["lr"] for g in groups if all(id(p) in head for p in g["params"])} == {0.0025}
    assert {g["lr"] for g in groups if not any(id(p) in head for p in g["params"])} == {0.01}
    schedule = Schedule(optimizers, "one_cycle", 0.01, epochs=1, steps_per_epoch=10)
    peaks: dict[float, float] = {}
    for _ in range(10):
        for g in groups:
            peaks[g["lr_scale"]] = max(peaks.get(g["lr_scale"], 0.0), g["lr"])
        optimizers.step()
        schedule.step()
    assert math.isclose(peaks[0.25] / peaks[1.0], 0.25, rel_tol=1e-6)


def test_the_config_gives_rating_models_a_head_and_ranking_models_none():
    assert Config().lists_head
    assert not Config.model_validate({"lists": {"source": "ratings"}}).lists_head
    assert not Config.model_validate({"model": {"objective": "ranking"}}).lists_head


def _planted(seed: int = 0):
    """Users of two tastes rate mostly the items of their taste (which items they rate depends on
    who they are), and rate every item alike: the rating head cannot tell which items a user
    will rate next, the ranking head can."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 120, 40
    taste = rng.integers(0, 2, n_users)
    kind = np.arange(n_items) % 2
    rows = []
    for user in range(n_users):
        mine = np.flatnonzero(kind == taste[user])
        others = np.flatnonzero(kind != taste[user])
        chosen = np.concatenate(
            [rng.choice(mine, 12, replace=False), rng.choice(others, 2, replace=False)]
        )
        for item in chosen:
            rows.append((user, item, float(rng.integers(3, 6))))
    data = np.array(rows)
    rng.shuffle(data)
    return n_users, n_items, taste, kind, data


def test_the_head_learns_which_items_a_user_picks_and_the_rating_head_still_predicts():
    n_users, n_items, taste, kind, data = _planted()
    torch.manual_seed(0)
    model = build_model(
        make_spec("dot_bias", n_users, n_items, factors=4, y_range=(1.0, 5.5), lists_head=True)
    )
    settings = RankingSettings(loss="softmax", negatives=n_items)
    objective = JointObjective(RankingObjective(settings), head_weight=1.0)
    optimizers = make_optimizer(model, "adam", lr=0.05)
    from recspark.train.objectives.base import RunContext

    objective.start_epoch(model, torch.device("cpu"), RunContext(n_users, n_items, seed=0))
    users = torch.tensor(data[:, 0], dtype=torch.long)
    items = torch.tensor(data[:, 1], dtype=torch.long)
    ratings = torch.tensor(data[:, 2], dtype=torch.float32)
    model.train()
    for _ in range(150):
        batch = {"user_idx": users, "item_idx": items, "rating": ratings}
        optimizers.zero_grad()
        objective.batch_loss(model, batch, torch.device("cpu")).loss.backward()
        optimizers.step()
    model.eval()
    with torch.no_grad():
        lists, _ = lists_model(model, rating_weight=0.5)
        top = lists.score_items(torch.arange(n_users), torch.arange(n_items)).topk(5).indices
        own_taste = (kind[top.numpy()] == taste[:, None]).mean()
        mse = float(nn.functional.mse_loss(model(users, items), ratings))
    assert own_taste > 0.9, own_taste  # chance is 0.5
    assert mse < float(ratings.var()), (mse, float(ratings.var()))


def _half_batch(rank: int | None) -> dict:
    generator = torch.Generator().manual_seed(0)
    users = torch.randint(0, 20, (64,), generator=generator)
    items = torch.randint(0, 15, (64,), generator=generator)
    ratings = torch.randint(1, 6, (64,), generator=generator).float()
    if rank is not None:
        users, items, ratings = users[rank::2], items[rank::2], ratings[rank::2]
    return {"user_idx": users, "item_idx": items, "rating": ratings}


def _joint_gradients(model: nn.Module, batch: dict) -> None:
    from recspark.train.objectives.base import RunContext

    objective = JointObjective(RankingObjective(RankingSettings(negatives=15)), head_weight=1.0)
    objective.start_epoch(model, torch.device("cpu"), RunContext(20, 15, seed=0))
    objective.batch_loss(model, batch, torch.device("cpu")).loss.backward()


def _ddp_worker(rank: int, port: int, folder: str) -> None:
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(1)
        model = build_model(make_spec("dot_bias", 20, 15, factors=4, lists_head=True))
        _joint_gradients(DistributedDataParallel(model), _half_batch(rank))
        grads = [
            p.grad.clone()
            for p in (
                model.lists_head.user_factors.weight,
                model.lists_head.item_bias.weight,
                model.item_factors.weight,
            )
        ]
        torch.save(grads, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_data_parallel_processes_share_the_heads_gradients(tmp_path):
    """The head scores through the unwrapped model's tables, outside DistributedDataParallel's
    forward; its gradients must still be averaged across processes like the rest."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2)
    torch.manual_seed(1)
    model = build_model(make_spec("dot_bias", 20, 15, factors=4, lists_head=True))
    each = []
    for rank in (0, 1):
        model.zero_grad()
        _joint_gradients(model, _half_batch(rank))
        each.append(
            [
                p.grad.clone()
                for p in (
                    model.lists_head.user_factors.weight,
                    model.lists_head.item_bias.weight,
                    model.item_factors.weight,
                )
            ]
        )
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for index in range(3):
        mean = (each[0][index] + each[1][index]) / 2
        assert torch.allclose(ranks[0][index], mean, atol=1e-6)
        assert torch.allclose(ranks[1][index], mean, atol=1e-6)
        assert not torch.allclose(each[0][index], mean, atol=1e-6)  # the halves differ
