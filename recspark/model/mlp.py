"""The ``mlp`` kind: fastai's EmbeddingNet (:class:`EmbeddingNet`): concatenated user and item
embeddings (sizes may differ), embedding dropout, hidden layers with ReLU and dropout, and a
sigmoid-scaled output.
"""

from __future__ import annotations

import torch
from torch import nn

from recspark.core.model_shape import DEFAULT_Y_RANGE
from recspark.model.base import EmbeddingModel, scale_to_range
from recspark.model.tables import make_table


class EmbeddingNet(EmbeddingModel):
    """An MLP over concatenated user and item embeddings (fastai's ``EmbeddingNN``)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        user_factors: int,
        item_factors: int,
        hidden: list[int],
        dropouts: list[float],
        *,
        embedding_dropout: float = 0.0,
        y_range: tuple[float, float] | None = DEFAULT_Y_RANGE,
        sparse: bool = False,
        user_features: int = 0,
        item_features: int = 0,
        bias_penalty: float = 1.0,
    ):
        super().__init__(n_users, n_items, bias_penalty)
        self.user_factors = make_table(n_users, user_factors, user_features, sparse)
        self.item_factors = make_table(n_items, item_factors, item_features, sparse)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        layers: list[nn.Module] = []
        width = user_factors + item_factors
        for size, dropout in zip(hidden, dropouts, strict=True):
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)
        self.y_range = (y_range[0], y_range[1]) if y_range is not None else None

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self.user_factors(user_idx), self.item_factors(item_idx)], dim=1)
        raw = self.layers(self.embedding_dropout(joined)).squeeze(1)
        return scale_to_range(raw, self.y_range)

    def score_vectors(self, user_vectors, user_bias, item_idx):
        # The network runs once per (user, item) pair: users x items rows through every layer.
        users, items = len(user_vectors), len(item_idx)
        item_vectors = self.item_factors(item_idx)
        joined = torch.cat(
            [
                user_vectors.repeat_interleave(items, dim=0),
                item_vectors.repeat(users, 1),
            ],
            dim=1,
        )
        return scale_to_range(self.layers(joined).squeeze(1), self.y_range).view(users, items)
