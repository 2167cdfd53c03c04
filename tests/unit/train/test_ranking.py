"""The ranking objective: its losses, its negative sampler, its epochs, and the whole pipeline. The
tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_ranking.py.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recspark.core.config import load_config
from recspark.core.errors import ConfigError
from recspark.model.registry import build_model
from recspark.model.spec import make_spec
from recspark.train.loop import TrainSettings, fit
from recspark.train.objectives import for_name, ranking
from recspark.train.objectives.base import RunContext
from recspark.train.objectives.losses import bpr_loss, shared_negative_hits, softmax_loss
from recspark.train.objectives.ranking import RankingObjective, RankingSettings
from recspark.train.objectives.sampling import NegativeSampler, comparison_items
from recspark.train.optim import make_optimizer
from recspark.train.steps import train_epoch


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------------------------
# Losses, by hand
def test_bpr_loss_matches_hand_computed_values():
    positive = torch.tensor([2.0, 0.0])
    negative = torch.tensor([[1.0, 3.0], [0.0, -1.0]])
    row0 = (-math.log(_sigmoid(1.0)) - math.log(_sigmoid(-1.0))) / 2
    row1 = (-math.log(_sigmoid(0.0)) - math.log(_sigmoid(1.0))) / 2
    assert bpr_loss(positive, negative).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # Weights weigh rows; an invalid negative takes no part in its row's mean.
    weights = torch.tensor([3.0, 1.0])
    assert bpr_loss(positive, negative, weights).item() == pytest.approx(
        (3 * row0 + row1) / 4, rel=1e-6
    )
    valid = torch.tensor([[True, False], [True, True]])
    assert bpr_loss(positive, negative, valid=valid).item() == pytest.approx(
        (-math.log(_sigmoid(1.0)) + row1) / 2, rel=1e-6
    )


@pytest.mark.parametrize("seed", range(5))
def test_shared_negative_hits_are_the_entries_equal_to_the_rows_positive(seed):
    generator = torch.Generator().manual_seed(seed)
    items = torch.randint(0, 7, (40,), generator=generator)
    negatives = torch.randint(0, 7, (9,), generator=generator)  # duplicates on purpose
    rows, columns = shared_negative_hits(items, negatives)
    found = torch.zeros(40, 9, dtype=torch.bool)
    found[rows, columns] = True
    assert len(rows) == int(found.sum())  # each entry found once
    assert torch.equal(found, negatives[None, :] == items[:, None])


def test_softmax_loss_matches_hand_computed_values():
    positive = torch.tensor([1.0])
    negative = torch.tensor([[0.0, 2.0]])
    expected = math.log(math.e + 1.0 + math.e**2) - 1.0
    assert softmax_loss(positive, negative).item() == pytest.approx(expected, rel=1e-6)
    # An accidental hit is left out of the denominator.
    valid = torch.tensor([[True, False]])
    assert softmax_loss(positive, negative, valid=valid).item() == pytest.approx(
        math.log(math.e + 1.0) - 1.0, rel=1e-6
    )
    # log-Q correction: logits become s - log(n * Q).
    positive_log_q = torch.tensor([math.log(0.5)])
    negative_log_q = torch.tensor([math.log(2.0), math.log(0.25)])
    corrected = softmax_loss(
        positive, negative, positive_log_q=positive_log_q, negative_log_q=negative_log_q
    ).item()
    logits = [1.0 - math.log(0.5), 0.0 - math.log(2.0), 2.0 - math.log(0.25)]
    by_hand = math.log(sum(math.exp(v) for v in logits)) - logits[0]
    assert corrected == pytest.approx(by_hand, rel=1e-6)
    # Shared negatives broadcast over rows.
    shared = softmax_loss(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0]), reduce=False)
    assert shared.tolist() == pytest.approx([expected, expected], rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Negative sampling
def test_popularity_sampling_follows_count_plus_one_to_the_alpha():
    counts = np.array([0.0, 1.0, 3.0, 7.0])
    sampler = NegativeSampler(4, counts, alpha=1.0)
    draws = sampler.sample((200_000,), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=4).double() / len(draws)
    assert frequencies.tolist() == pytest.approx([1 / 15, 2 / 15, 4 / 15, 8 / 15], abs=0.005)
    half = NegativeSampler(4, counts, alpha=0.5).probabilities
    expected = np.sqrt(counts + 1) / np.sqrt(counts + 1).sum()
    assert half.tolist() == pytest.approx(expected.tolist())
    uniform = NegativeSampler(4, counts, alpha=0.0)
    draws = uniform.sample((40_000,), torch.Generator().manual_seed(0))
    assert (torch.bincount(draws, minlength=4).double() / 40_000).tolist() == pytest.approx(
        [0.25] * 4, abs=0.01
    )


def test_bpr_negatives_never_equal_their_positive():
    counts = np.array([1000.0, 1.0, 1.0, 1.0, 1.0])  # item 0 takes ~99.5% of the draws
    sampler = NegativeSampler(5, counts, alpha=1.0)
    positives = torch.tensor([0, 1, 2, 0, 4] * 40)
    negatives, valid = sampler.sample_excluding(positives, 20, torch.Generator().manual_seed(3))
    assert negatives.shape == (200, 20)
    assert not bool((negatives[valid] == positives[:, None].expand(-1, 20)[valid]).any())
    # Rows whose positive is not the dominant item are all valid, and mostly drew item 0.
    others = positives != 0
    assert bool(valid[others].all())
    assert (negatives[others] == 0).double().mean() > 0.9


def test_sampling_is_repeatable_by_seed():
    sampler = NegativeSampler(50, np.arange(50.0), alpha=0.75)
    first = sampler.sample((1000,), torch.Generator().manual_seed(11))
    again = sampler.sample((1000,), torch.Generator().manual_seed(11))
    other = sampler.sample((1000,), torch.Generator().manual_seed(12))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(comparison_items(50, 10, 5, "cpu"), comparison_items(50, 10, 5, "cpu"))
    assert comparison_items(50, 100, 5, "cpu").tolist() == list(range(50))


def test_popularity_sampling_without_counts_fails_loudly():
    with pytest.raises(ValueError, match="item counts"):
        NegativeSampler(10, None, alpha=0.5)


CLUSTERS, CLUSTER_SIZE = 6, 20


# Skewed membership makes the first cluster's items the most popular overall.
SHARES = [0.35, 0.25, 0.15, 0.1, 0.1, 0.05]


def planted_interactions(users: int = 240, seen: int = 8, held_out: int = 2, seed: int = 0):
    """Users in item clusters: each saw ``seen`` of its cluster's items and one stray item.

    Returns (train frame, validation frame, each user's cluster).
    """
    rng = np.random.default_rng(seed)
    items = CLUSTERS * CLUSTER_SIZE
    cluster_of = rng.choice(CLUSTERS, size=users, p=SHARES)
    train, validation = [], []
    for user, cluster in enumerate(cluster_of):
        members = cluster * CLUSTER_SIZE + rng.permutation(CLUSTER_SIZE)
        train += [(user, int(item), 5.0) for item in members[:seen]]
        validation += [(user, int(item), 5.0) for item in members[seen : seen + held_out]]
        stray = int(rng.integers(items))
        if stray // CLUSTER_SIZE != cluster:
            train.append((user, stray, 2.0))
    columns = ["user_idx", "item_idx", "rating"]
    train_frame = pd.DataFrame(train, columns=columns)
    return train_frame, pd.DataFrame(validation, columns=columns), cluster_of


def batches_of(frame: pd.DataFrame, size: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(frame))
    for start in range(0, len(frame), size):
        part = frame.iloc[order[start : start + size]]
        yield {
            "user_idx": torch.as_tensor(part["user_idx"].to_numpy()),
            "item_idx": torch.as_tensor(part["item_idx"].to_numpy()),
            "rating": torch.as_tensor(part["rating"].to_numpy(), dtype=torch.float32),
        }


def planted_precision(scores: np.ndarray, train: pd.DataFrame, cluster_of: np.ndarray, k: int = 10):
    """Mean share of each user's top ``k`` unseen items that lie in the user's own cluster."""
    scores = scores.astype(np.float64).copy()
    scores[train["user_idx"].to_numpy(), train["item_idx"].to_numpy()] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(((top // CLUSTER_SIZE) == cluster_of[:, None]).mean())


def train_planted(kind: str, settings: RankingSettings, epochs: int, lr: float, seed: int = 0):
    train, _, _ = planted_interactions()
    torch.manual_seed(0)  # the same starting weights: runs differ only by the sampling seed
    model = build_model(
        make_spec(
            kind,
            240,
            CLUSTERS * CLUSTER_SIZE,
            factors=16,
            y_range=None,
            hidden=[32],
            dropouts=[0.0],
            user_factors=16,
            item_factors=16,
        )
    )
    optimizer = make_optimizer(model, "adam", lr)
    counts = np.bincount(train["item_idx"], minlength=CLUSTERS * CLUSTER_SIZE)
    objective = RankingObjective(settings, counts)
    losses = []
    for epoch in range(1, epochs + 1):
        context = RunContext(n_items=CLUSTERS * CLUSTER_SIZE, seed=seed, epoch=epoch)
        loss, rows = train_epoch(
            model,
            batches_of(train, 256, epoch),
            optimizer,
            None,
            torch.device("cpu"),
            weight_decay=0.01,
            objective=objective,
            context=context,
        )
        assert rows == len(train)
        losses.append(loss)
    return model, losses


@pytest.mark.parametrize(
    ("kind", "settings", "epochs", "lr"),
    [
        ("dot", RankingSettings(loss="softmax", negatives=500), 25, 0.01),
        ("dot_bias", RankingSettings(loss="bpr", negatives=4, sampling_alpha=0.5), 25, 0.01),
        ("mlp", RankingSettings(loss="softmax", negatives=40, sampling_alpha=0.75), 40, 0.01),
    ],
    ids=["dot-softmax-catalogue", "dot_bias-bpr-popularity", "mlp-sampled-softmax"],
)
def test_ranking_recovers_the_planted_clusters_far_better_than_popularity(
    kind, settings, epochs, lr
):
    train, _, cluster_of = planted_interactions()
    model, losses = train_planted(kind, settings, epochs, lr)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        scores = model.score_items(torch.arange(240), torch.arange(CLUSTERS * CLUSTER_SIZE)).numpy()
    learned = planted_precision(scores, train, cluster_of)
    popularity = np.bincount(train["item_idx"], minlength=CLUSTERS * CLUSTER_SIZE).astype(float)
    by_popularity = planted_precision(np.tile(popularity, (240, 1)), train, cluster_of)
    # Popularity serves only the biggest cluster's users (about a third); the model serves all.
    assert by_popularity < 0.45
    assert learned > 0.9, (learned, by_popularity)


def test_ranking_epochs_are_repeatable_and_depend_on_the_sampling_seed():
    settings = RankingSettings(loss="bpr", negatives=3, sampling_alpha=0.5)
    first, _ = train_planted("dot", settings, epochs=2, lr=0.05, seed=7)
    again, _ = train_planted("dot", settings, epochs=2, lr=0.05, seed=7)
    other, _ = train_planted("dot", settings, epochs=2, lr=0.05, seed=8)
    for name, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[name])
    assert not torch.equal(first.item_factors.weight, other.item_factors.weight)


def test_validation_ranks_positives_against_a_fixed_sample():
    _, validation, _ = planted_interactions()
    model, _ = train_planted("dot", RankingSettings(negatives=500), 25, 0.01)
    untrained = build_model(make_spec("dot", 240, CLUSTERS * CLUSTER_SIZE, factors=16))
    objective = RankingObjective(RankingSettings(validation_items=50))
    context = RunContext(n_items=CLUSTERS * CLUSTER_SIZE, seed=1)
    cpu = torch.device("cpu")
    figures = objective.validation(model, batches_of(validation, 100, 0), cpu, context)
    again = objective.validation(model, batches_of(validation, 37, 5), cpu, context)
    assert figures.rows == len(validation) and again.rows == figures.rows
    # Batch size and order don't matter.
    assert (figures.loss, figures.auc) == pytest.approx((again.loss, again.auc), rel=1e-5)
    assert figures.mse is None and figures.mae is None and figures.rmse is None
    base = objective.validation(untrained, batches_of(validation, 100, 0), cpu, context)
    # An untrained model ranks a positive at random: an AUC about 0.5, and a loss near log(50);
    # the trained one ranks held-out cluster members near the top.
    assert base.auc == pytest.approx(0.5, abs=0.1)
    assert base.loss == pytest.approx(math.log(50), abs=0.2)
    assert figures.auc > 0.85 and figures.loss < base.loss - 0.5
    strict = RankingObjective(RankingSettings(positive_threshold=6.0))
    with pytest.raises(ValueError, match="positive_threshold"):
        strict.validation(model, batches_of(validation, 100, 0), cpu, context)


def test_threshold_and_confidence_pick_and_weigh_the_positives():
    # Two positives; the row rated 1 is below the threshold and must not move the model at all.
    batch = {
        "user_idx": torch.tensor([0, 1, 2]),
        "item_idx": torch.tensor([0, 1, 2]),
        "rating": torch.tensor([5.0, 4.0, 1.0]),
    }
    settings = RankingSettings(
        loss="softmax",
        negatives=10,
        positive_threshold=4.0,
        confidence="rating",
        confidence_alpha=1.0,
    )
    model = build_model(make_spec("dot", 3, 4, factors=4))
    before = model.user_factors.weight.detach().clone()
    optimizer = make_optimizer(model, "sgd", 0.1, momentum=0.0)
    context = RunContext(n_items=4, seed=0, epoch=1)
    _, rows = train_epoch(
        model,
        [batch],
        optimizer,
        None,
        torch.device("cpu"),
        objective=RankingObjective(settings),
        context=context,
    )
    assert rows == 3
    moved = (model.user_factors.weight.detach() - before).abs().sum(dim=1)
    assert moved[0] > 0 and moved[1] > 0 and moved[2] == 0
    weighted = RankingObjective(RankingSettings(confidence="weight"))
    with pytest.raises(ValueError, match="no 'weight' column"):
        train_epoch(
            model,
            [batch],
            optimizer,
            None,
            torch.device("cpu"),
            objective=weighted,
            context=RunContext(n_items=4),
        )
    assert weighted.feed_fields[-1] == "weight"


def test_the_ranking_batch_loss_is_the_softmax_over_the_catalogue_by_hand():
    """A strategy, not a loop: one batch's loss, what it counts, and nothing stepped."""
    assert not hasattr(ranking, "train_epoch") and not hasattr(ranking, "validation_loss")
    torch.manual_seed(0)
    model = build_model(make_spec("dot", 3, 5, factors=4, y_range=None))
    batch = {
        "user_idx": torch.tensor([0, 1, 2, 1]),
        "item_idx": torch.tensor([4, 0, 2, 3]),
        "rating": torch.tensor([5.0, 4.0, 1.0, 3.0]),
    }
    # At least as many negatives as items: the softmax runs over the whole catalogue, no sampling.
    objective = RankingObjective(RankingSettings(negatives=10, positive_threshold=3.0))
    cpu = torch.device("cpu")
    with pytest.raises(RuntimeError, match="start_epoch"):
        objective.batch_loss(model, batch, cpu)
    objective.start_epoch(model, cpu, RunContext(n_items=5, seed=1, epoch=1))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    step = objective.batch_loss(model, batch, cpu)
    with torch.no_grad():
        scores = model.score_items(torch.tensor([0, 1, 2, 1]), torch.arange(5))
    kept = [0, 1, 3]  # the row rated 1 is below the threshold
    by_hand = []
    for row in kept:
        positive = int(batch["item_idx"][row])
        others = [scores[row, j] for j in range(5) if j != positive]
        logits = torch.stack([scores[row, positive], *others])
        by_hand.append(float(torch.logsumexp(logits, 0) - scores[row, positive]))
    assert step.loss.item() == pytest.approx(sum(by_hand) / 3, rel=1e-5)
    assert (step.counted, step.rows) == (3, 4)
    assert step.users.tolist() == [0, 1, 1] and step.items.tolist() == [4, 0, 3]
    assert step.reported_sum.item() == pytest.approx(3 * step.loss.item(), rel=1e-6)
    assert step.loss.requires_grad and not step.reported_sum.requires_grad
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # the loop steps, not the objective


# ---------------------------------------------------------------------------------------------
# Through the trainer's loop (Petastorm feed) and the whole pipeline
def write_table(folder: Path, frame: pd.DataFrame, parts: int = 2) -> str:
    folder.mkdir(parents=True)
    bounds = np.linspace(0, len(frame), parts + 1).astype(int)
    for number, (start, stop) in enumerate(itertools.pairwise(bounds)):
        part = frame.iloc[start:stop]
        table = pa.table(
            {
                "user_idx": part["user_idx"].to_numpy(np.int32),
                "item_idx": part["item_idx"].to_numpy(np.int32),
                "rating": part["rating"].to_numpy(np.float32),
            }
        )
        pq.write_table(table, folder / f"part-{number:05d}.parquet")
    return str(folder)


def test_fit_trains_the_ranking_objective_from_parquet(tmp_path):
    train, validation, cluster_of = planted_interactions()
    train_path = write_table(tmp_path / "train", train.sample(frac=1.0, random_state=0))
    validation_path = write_table(tmp_path / "validation", validation)
    model = build_model(
        make_spec("dot_bias", 240, CLUSTERS * CLUSTER_SIZE, factors=16, y_range=None)
    )
    counts = np.bincount(train["item_idx"], minlength=CLUSTERS * CLUSTER_SIZE)
    settings = TrainSettings(epochs=20, batch_size=256, lr=0.05, weight_decay=1e-4, patience=20)
    objective = for_name(
        "ranking", ranking=RankingSettings(negatives=60, sampling_alpha=0.5), item_counts=counts
    )
    assert isinstance(objective, RankingObjective)
    result = fit(
        model, train_path, validation_path, settings, torch.device("cpu"), objective=objective
    )
    losses = [record.validation_loss for record in result.history]
    assert losses[result.best_epoch - 1] == min(losses) < losses[0]
    # The records name the ranking figures: no RMSE of ratings it never predicted, an AUC.
    assert all(r.validation_rmse is None and r.validation_mae is None for r in result.history)
    assert result.history[-1].validation_auc > result.history[0].validation_auc + 0.2
    with torch.no_grad():
        scores = model.score_items(torch.arange(240), torch.arange(CLUSTERS * CLUSTER_SIZE)).numpy()
    assert planted_precision(scores, train, cluster_of) > 0.9


def test_a_ranking_model_must_not_have_a_y_range():
    with pytest.raises(ConfigError, match=r"model\.y_range"):
        load_config(None, ["model.objective=ranking", "model.y_range=[1, 5]"])
    with pytest.raises(ConfigError, match=r"ranking\.loss"):
        load_config(None, ["ranking.loss=warp"])
    config = load_config(None, ["model.objective=ranking", "ranking.negatives=7"])
    assert config.ranking.negatives == 7 and config.ranking.loss == "softmax"


def test_the_validation_share_above_counts_as_comparisons_do():
    """The sign-sum count: each row's share of the sample scored above its positive, ties half,
    its own item left out (and masked for the softmax), as counting comparisons gives it."""
    generator = torch.Generator().manual_seed(0)
    sample = torch.tensor([1, 4, 6, 7, 9])  # sorted and distinct, as comparison_items gives
    items = torch.randint(0, 10, (300,), generator=generator)
    scores = torch.randint(0, 3, (300, 5), generator=generator).float()  # many ties
    positive = torch.randint(0, 3, (300,), generator=generator).float()
    valid = sample[None, :] != items[:, None]
    above = ((scores > positive[:, None]) & valid).double().sum(dim=1)
    ties = ((scores == positive[:, None]) & valid).double().sum(dim=1)
    expected = (above + 0.5 * ties) / valid.double().sum(dim=1)
    expected_loss = softmax_loss(positive, scores, valid=valid, reduce=False)
    masked = scores.clone()
    assert torch.equal(ranking._share_above(masked, positive, items, sample), expected)
    assert torch.equal(softmax_loss(positive, masked, reduce=False), expected_loss)
    assert bool((~valid).any())  # some rows' own item is in the sample
