"""The oracle's pieces against the generator they model: inclusion probabilities against the
generator's own item sampling, relevance against simulated noisy ratings, the lists' exclusions
and order, and when ``data/truth`` counts as describing a prepared run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recspark.core.constants import BIAS, FACTORS, ITEM_IDX, RANK, USER_IDX
from recspark.core.storage import Layout
from recspark.data.listing import fingerprint
from recspark.data.prepared import PreparedInput, PreparedRun
from recspark.data.synthetic import SyntheticSpec, _sample_items, item_truth
from recspark.evaluate.oracle import (
    HELD,
    LAMBDA,
    SEEN,
    ItemSide,
    _top_k,
    inclusion_rates,
    matching_truth,
    oracle_scores,
    relevance_probability,
)


def test_inclusion_rates_match_the_generators_item_draws():
    spec = SyntheticSpec(users=1, items=300, ratings=1, factors=2, noise=0.5, seed=3)
    popularity = item_truth(spec).popularity
    count, users = 60, 3000
    rng = np.random.default_rng(0)
    owner, item = _sample_items(rng, np.full(users, count), np.cumsum(popularity), spec.items)
    assert np.bincount(owner).tolist() == [count] * users
    observed = np.bincount(item, minlength=spec.items) / users
    rate = inclusion_rates(popularity, np.array([count, spec.items]))
    expected = -np.expm1(-rate[0] * popularity)
    assert expected.sum() == pytest.approx(count, rel=1e-6)
    assert np.abs(observed - expected).max() < 0.03  # 3000 draws: sd of a share <= 0.0092
    assert rate[1] == np.inf  # the whole catalogue: every item is drawn


@pytest.mark.parametrize("threshold", [3.5, 4, 5])
def test_relevance_probability_matches_simulated_ratings(threshold):
    mean = np.linspace(1.0, 6.0, 11)
    noise = 0.7
    draws = np.random.default_rng(1).normal(0.0, noise, size=(200_000, len(mean)))
    ratings = np.clip(np.round(mean + draws), 1, 5)
    simulated = (ratings >= threshold).mean(axis=0)
    exact = relevance_probability(torch.from_numpy(mean), noise, threshold).numpy()
    assert np.abs(exact - simulated).max() < 0.005


def test_relevance_probability_edges():
    mean = torch.tensor([2.0, 4.2])
    assert relevance_probability(mean, 0.5, 0).tolist() == [1.0, 1.0]
    assert relevance_probability(mean, 0.5, 6).tolist() == [0.0, 0.0]
    assert relevance_probability(mean, 0.0, 4).tolist() == [0.0, 1.0]


def _items(n: int, popularity: np.ndarray, bias: np.ndarray) -> ItemSide:
    return ItemSide(np.zeros((n, 2)), bias, popularity, np.ones(n, dtype=bool))


def _users(seen: list[list[int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_IDX: np.arange(len(seen)),
            BIAS: 0.0,
            FACTORS: [np.zeros(2)] * len(seen),
            LAMBDA: 50.0,
            HELD: 0.2,
            SEEN: seen,
        }
    )


def test_lists_trade_popularity_against_the_rating():
    # Item 0: loved but rarely drawn; item 1: liked and popular; item 2: popular but disliked.
    popularity = np.array([0.001, 0.05, 0.05, 0.02])
    bias = np.array([1.5, 0.8, -2.0, 0.5])
    items = _items(4, popularity, bias)
    users = _users([[], [1]])
    scores = oracle_scores(users, items, 0.5, 4)
    lists = _top_k(scores, users, items, 3)
    first = lists[lists[USER_IDX] == 0].sort_values(RANK)[ITEM_IDX].tolist()
    assert first == [1, 3, 0]  # popularity x P(relevant), not the planted rating alone
    second = lists[lists[USER_IDX] == 1].sort_values(RANK)[ITEM_IDX].tolist()
    assert 1 not in second and second[0] == 3  # its training item is never listed


def test_lists_leave_out_ineligible_items_and_break_ties_to_the_lower_item():
    items = _items(4, np.full(4, 0.25), np.zeros(4))
    items.eligible[2] = False
    users = _users([[0]])
    lists = _top_k(oracle_scores(users, items, 0.5, 4), users, items, 4)
    assert lists.sort_values(RANK)[ITEM_IDX].tolist() == [1, 3]
    assert lists[RANK].tolist() == [1, 2]


def _prepared_from(tmp_path: Path, input_format: str = "synthetic", rows: int = 3):
    layout = Layout(str(tmp_path))
    ratings = tmp_path / "data" / "ratings"
    ratings.mkdir(parents=True)
    (ratings / "part-0.parquet").write_bytes(b"x" * rows)
    truth = tmp_path / "data" / "truth"
    truth.mkdir()
    spec = SyntheticSpec(users=2, items=3, ratings=3, factors=2, noise=0.5, seed=7)
    (truth / "truth.json").write_text(json.dumps({"spec": spec.__dict__, "ratings": 3}))
    manifest = PreparedRun(
        run_date="2026-01-15",
        users=2,
        items=3,
        rating_range=(1, 5),
        input=PreparedInput(
            path=str(ratings), format=input_format, fingerprint=fingerprint([str(ratings)])
        ),
        counts={"input_rows": rows},
    )
    return layout, manifest, spec, ratings


def test_truth_matches_the_ratings_it_was_generated_with(tmp_path):
    layout, manifest, spec, _ = _prepared_from(tmp_path)
    assert matching_truth(layout, manifest) == spec


def test_no_truth_for_other_inputs_or_changed_ratings(tmp_path):
    layout, manifest, _, ratings = _prepared_from(tmp_path / "csv", input_format="csv")
    assert matching_truth(layout, manifest) is None
    layout, manifest, _, ratings = _prepared_from(tmp_path / "other", rows=4)
    assert matching_truth(layout, manifest) is None  # truth.json counts 3 ratings, prepare read 4
    layout, manifest, _, ratings = _prepared_from(tmp_path / "changed")
    (ratings / "part-1.parquet").write_bytes(b"y")  # generated again after prepare
    assert matching_truth(layout, manifest) is None
    layout, manifest, _, _ = _prepared_from(tmp_path / "gone")
    (tmp_path / "gone" / "data" / "truth" / "truth.json").unlink()
    assert matching_truth(layout, manifest) is None
