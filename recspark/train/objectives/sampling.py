"""Negative sampling for the ranking objective: which items a positive is scored against.

Negatives are drawn with probability proportional to ``(count + 1) ** ranking.sampling_alpha``,
``count`` being an item's number of positives in the train split (one Spark aggregate,
:func:`item_popularity`): ``0`` samples uniformly, ``1`` as often as items are seen (word2vec uses
0.75). :class:`NegativeSampler` draws them from a seeded generator, redraws collisions with the
positive (BPR) and gives the log-Q correction of a sampled softmax; :func:`comparison_items` is
the fixed item sample a validation pass ranks each positive against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recspark.core.constants import ITEM_IDX, RATING

# How often BPR redraws negatives that hit their own positive before masking the rest.
REDRAW_ROUNDS = 4


def item_popularity(
    train: Any,
    n_items: int,
    positive_threshold: float = 0.0,
    item_col: str = ITEM_IDX,
    rating_col: str = RATING,
) -> np.ndarray:
    """Positives per item index in a prepared train table, by one Spark aggregate.

    Parameters
    ----------
    train
        DataFrame with ``item_col`` (dense index) and ``rating_col``.
    n_items
        Catalogue size (the item index's row count); items without positives count 0.
    positive_threshold
        Only rows with a rating at or above it count, as in training.

    Returns
    -------
    float64 array of length ``n_items``. Only one row per item reaches the driver.
    """
    from pyspark.sql import functions as F

    for column in (item_col, rating_col):
        if column not in train.columns:
            raise ValueError(f"the train table has no column {column!r}: re-run prepare")
    rows = (
        train.where(F.col(rating_col) >= positive_threshold)
        .groupBy(item_col)
        .agg(F.count(F.lit(1)).alias("positives"))
        .collect()
    )
    counts = np.zeros(n_items, dtype=np.float64)
    for row in rows:
        index = int(row[item_col])
        if not 0 <= index < n_items:
            raise ValueError(
                f"{item_col} {index} outside [0, {n_items}): the train table and the item index "
                "disagree; re-run prepare"
            )
        counts[index] = row["positives"]
    return counts


class NegativeSampler:
    """Draws item indices in proportion to ``(count + 1) ** alpha`` (uniform when ``alpha`` is 0).

    Sampling inverts the cumulative distribution with :func:`torch.searchsorted`, which works for
    catalogues of any size and on any device; with a seeded generator the draws are repeatable.
    """

    def __init__(
        self,
        n_items: int,
        item_counts: np.ndarray | None = None,
        alpha: float = 0.0,
        device: torch.device | str = "cpu",
    ):
        if n_items < 2:
            raise ValueError(f"ranking needs at least 2 items to sample negatives, got {n_items}")
        self.n_items = n_items
        self.device = torch.device(device)
        self.uniform = alpha == 0
        if self.uniform:
            probabilities = torch.full((n_items,), 1.0 / n_items, dtype=torch.float64)
        else:
            if item_counts is None:
                raise ValueError(
                    "popularity sampling (ranking.sampling_alpha > 0) needs item counts in the "
                    "objective: build it as RankingObjective(settings, item_counts)"
                )
            counts = torch.as_tensor(np.asarray(item_counts, dtype=np.float64))
            if counts.shape != (n_items,) or bool((counts < 0).any()):
                raise ValueError(f"item_counts must be {n_items} non-negative numbers")
            weights = (counts + 1.0).pow(alpha)
            probabilities = weights / weights.sum()
        self.probabilities = probabilities.to(self.device)
        cdf = torch.cumsum(probabilities, 0)
        self.cdf = (cdf / cdf[-1]).to(self.device)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Item indices of ``shape``, independent draws with replacement."""
        if self.uniform:
            return torch.randint(
                self.n_items, shape, generator=generator, device=self.device, dtype=torch.long
            )
        draws = torch.rand(shape, generator=generator, device=self.device, dtype=torch.float64)
        index = torch.searchsorted(self.cdf, draws.reshape(-1), right=True).reshape(shape)
        return index.clamp_(max=self.n_items - 1)

    def sample_excluding(
        self, positives: torch.Tensor, count: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` negatives per positive, none equal to it.

        Collisions are redrawn up to :data:`REDRAW_ROUNDS` times; any left (only when one item
        holds nearly all the probability) are flagged invalid.

        Returns
        -------
        (negatives ``len(positives) x count``, valid mask of the same shape)
        """
        negatives = self.sample((len(positives), count), generator)
        for _ in range(REDRAW_ROUNDS):
            hits = negatives == positives[:, None]
            if not bool(hits.any()):
                break
            negatives = torch.where(hits, self.sample(negatives.shape, generator), negatives)
        return negatives, negatives != positives[:, None]

    def log_expected_count(self, items: torch.Tensor, draws: int) -> torch.Tensor:
        """``log(draws * Q(item))``: the log-Q correction of a sampled softmax."""
        return torch.log(draws * self.probabilities[items]).float()


def comparison_items(n_items: int, count: int, seed: int, device: torch.device) -> torch.Tensor:
    """The fixed item sample validation ranks against: all items, or ``count`` of them by seed."""
    if count >= n_items:
        return torch.arange(n_items, device=device)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_items, generator=generator)[:count].sort().values.to(device)
