"""The synthetic generator's bookkeeping: exact totals, bounded activity, the noise floor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recspark.data.synthetic import SyntheticSpec, rating_moments, ratings_per_user


@pytest.mark.parametrize("blocks", [1, 3, 17])
def test_ratings_per_user_adds_up_exactly_across_blocks(blocks):
    rng = np.random.default_rng(0)
    activity = np.exp(rng.normal(size=blocks * 101))
    parts = np.array_split(activity, blocks)
    sums = [part.sum() for part in parts]  # summed per block, as the driver does
    total, extra = float(np.sum(sums)), 123_457
    offsets = np.concatenate([[0.0], np.cumsum(sums)[:-1]])
    counts = np.concatenate(
        [
            ratings_per_user(part, offsets[i], total, extra, last=i == blocks - 1)
            for i, part in enumerate(parts)
        ]
    )
    assert counts.sum() == len(activity) + extra
    assert counts.min() >= 1
    # Proportional: the most active user gets the most ratings.
    assert counts[np.argmax(activity)] == counts.max()


@pytest.mark.parametrize(
    ("users", "items", "ratings"), [(600, 200, 30_000), (4000, 1500, 800_000), (100, 50, 2400)]
)
def test_activity_cap_keeps_the_heaviest_user_within_the_catalogue(users, items, ratings):
    spec = SyntheticSpec(users, items, ratings, factors=4, noise=0.5, seed=1, activity_sigma=1.0)
    cap = spec.activity_cap
    assert cap <= 3.0  # may go negative for dense data: activity then nearly uniform
    mean = np.exp(
        spec.activity_sigma * np.minimum(np.random.default_rng(1).normal(size=200_000), cap)
    ).mean()
    heaviest = 1 + (ratings - users) * math.exp(spec.activity_sigma * cap) / (users * mean)
    assert heaviest <= items / 2 * 1.05


def test_rating_moments_match_simulation():
    mean = np.array([0.2, 2.7, 3.5, 4.9, 6.0])
    expected, variance = rating_moments(mean, 0.7)
    rng = np.random.default_rng(3)
    draws = np.clip(np.round(mean[:, None] + rng.normal(0, 0.7, size=(5, 400_000))), 1, 5)
    np.testing.assert_allclose(expected, draws.mean(axis=1), atol=0.01)
    np.testing.assert_allclose(variance, draws.var(axis=1), atol=0.01)
    noiseless, zero = rating_moments(mean, 0.0)
    np.testing.assert_array_equal(noiseless, [1, 3, 4, 5, 5])
    np.testing.assert_array_equal(zero, 0)
