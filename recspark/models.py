"""The embedding models, one signature for all: ``forward(user_idx, item_idx) -> prediction``.

- ``dot``: the dot product of user and item embeddings.
- ``dot_bias``: dot product plus user and item biases, squashed by a sigmoid into ``y_range``
  (fastai's ``collab_learner`` default).
- ``mlp``: fastai's EmbeddingNet: concatenated user and item embeddings (sizes may differ), embedding
  dropout, hidden layers with ReLU and dropout, and a sigmoid-scaled output.

Each model also answers :meth:`score_items`, the full ``users x items`` score block that scoring
and ranking evaluation need; dot models compute it as one matrix product.
"""

from __future__ import annotations

import abc

import torch
from torch import nn


def embedding_size(count: int) -> int:
    """fastai's rule of thumb for an embedding width: ``min(600, round(1.6 * count ** 0.56))``."""
    return min(600, round(1.6 * count**0.56))


def _embedding(count: int, width: int, sparse: bool, std: float = 0.01) -> nn.Embedding:
    table = nn.Embedding(count, width, sparse=sparse)
    nn.init.trunc_normal_(table.weight, std=std, a=-2 * std, b=2 * std)
    return table


def _zero_embedding(count: int, sparse: bool) -> nn.Embedding:
    # Biases start at zero so the first predictions sit at the middle of y_range (spotlight).
    table = nn.Embedding(count, 1, sparse=sparse)
    nn.init.zeros_(table.weight)
    return table


def _scale(raw: torch.Tensor, y_range: tuple[float, float] | None) -> torch.Tensor:
    if y_range is None:
        return raw
    low, high = y_range
    return torch.sigmoid(raw) * (high - low) + low


class EmbeddingModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class: holds table sizes and the index check shared by every model."""

    def __init__(self, n_users: int, n_items: int):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items

    def check_indices(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> None:
        """Fail loudly on an index outside the tables instead of reading random memory."""
        for name, values, size in (("user_idx", user_idx, self.n_users), ("item_idx", item_idx, self.n_items)):
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= size):
                raise IndexError(
                    f"{name} outside [0, {size}): the data was indexed with another id map than "
                    "the model's; re-run prepare and train with the same paths.root and run_date"
                )

    def penalty(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the squared norms of the embedding rows it uses.

        The classic matrix-factorisation regulariser: a row is shrunk in proportion to how often
        it is seen, unlike optimizer weight decay, which shrinks every row at every step.
        """
        total = self.user_factors(user_idx).pow(2).sum(1) + self.item_factors(item_idx).pow(2).sum(1)
        for name, index in (("user_bias", user_idx), ("item_bias", item_idx)):
            if hasattr(self, name):
                total = total + getattr(self, name)(index).pow(2).sum(1)
        return total.mean()

    def score_items(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Scores of every (user, item) pair as a ``len(user_idx) x len(item_idx)`` block."""
        bias = self.user_bias(user_idx).squeeze(1) if hasattr(self, "user_bias") else None
        return self.score_vectors(self.user_factors(user_idx), bias, item_idx)

    @abc.abstractmethod
    def score_vectors(
        self, user_vectors: torch.Tensor, user_bias: torch.Tensor | None, item_idx: torch.Tensor
    ) -> torch.Tensor:
        """Scores of users given by their embedding rows against ``item_idx``.

        Scoring jobs use this: user rows arrive with their vectors, so executors hold only the
        item side of the model.
        """


class DotProduct(EmbeddingModel):
    """``p_u . q_i``: the plain matrix-factorisation model."""

    def __init__(self, n_users: int, n_items: int, factors: int, sparse: bool = False):
        super().__init__(n_users, n_items)
        self.user_factors = _embedding(n_users, factors, sparse)
        self.item_factors = _embedding(n_items, factors, sparse)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return (self.user_factors(user_idx) * self.item_factors(item_idx)).sum(dim=1)

    def score_vectors(self, user_vectors, user_bias, item_idx):
        return user_vectors @ self.item_factors(item_idx).T


class DotBias(DotProduct):
    """``sigmoid(p_u . q_i + b_u + b_i)`` scaled into ``y_range``."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int,
        y_range: tuple[float, float] | None = (1.0, 5.5),
        sparse: bool = False,
    ):
        super().__init__(n_users, n_items, factors, sparse)
        self.user_bias = _zero_embedding(n_users, sparse)
        self.item_bias = _zero_embedding(n_items, sparse)
        self.y_range = tuple(y_range) if y_range is not None else None

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        raw = (self.user_factors(user_idx) * self.item_factors(item_idx)).sum(dim=1)
        raw = raw + self.user_bias(user_idx).squeeze(1) + self.item_bias(item_idx).squeeze(1)
        return _scale(raw, self.y_range)

    def score_vectors(self, user_vectors, user_bias, item_idx):
        raw = user_vectors @ self.item_factors(item_idx).T
        raw = raw + user_bias[:, None] + self.item_bias(item_idx).T
        return _scale(raw, self.y_range)


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
        embedding_dropout: float = 0.0,
        y_range: tuple[float, float] | None = (1.0, 5.5),
        sparse: bool = False,
    ):
        super().__init__(n_users, n_items)
        self.user_factors = _embedding(n_users, user_factors, sparse)
        self.item_factors = _embedding(n_items, item_factors, sparse)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        layers: list[nn.Module] = []
        width = user_factors + item_factors
        for size, dropout in zip(hidden, dropouts, strict=True):
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)
        self.y_range = tuple(y_range) if y_range is not None else None

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self.user_factors(user_idx), self.item_factors(item_idx)], dim=1)
        raw = self.layers(self.embedding_dropout(joined)).squeeze(1)
        return _scale(raw, self.y_range)

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
        return _scale(self.layers(joined).squeeze(1), self.y_range).view(users, items)


MODEL_KINDS = ("dot", "dot_bias", "mlp")


def build_model(
    kind: str,
    n_users: int,
    n_items: int,
    factors: int = 32,
    y_range: tuple[float, float] | None = (1.0, 5.5),
    hidden: list[int] | None = None,
    dropouts: list[float] | None = None,
    embedding_dropout: float = 0.0,
    user_factors: int | None = None,
    item_factors: int | None = None,
    sparse: bool = False,
) -> EmbeddingModel:
    """Build a model by name; table sizes come from the id maps, never from the batches.

    For ``mlp``, ``user_factors``/``item_factors`` default to fastai's :func:`embedding_size`.
    """
    if n_users <= 0 or n_items <= 0:
        raise ValueError(f"empty tables ({n_users} users, {n_items} items): prepare found no data")
    if kind == "dot":
        return DotProduct(n_users, n_items, factors, sparse)
    if kind == "dot_bias":
        return DotBias(n_users, n_items, factors, y_range, sparse)
    if kind == "mlp":
        return EmbeddingNet(
            n_users,
            n_items,
            user_factors or embedding_size(n_users),
            item_factors or embedding_size(n_items),
            list(hidden or [64]),
            list(dropouts or [0.0] * len(hidden or [64])),
            embedding_dropout,
            y_range,
            sparse,
        )
    raise ValueError(f"unknown model kind {kind!r}; choose one of {MODEL_KINDS}")
