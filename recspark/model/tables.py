"""Embedding tables: the plain and zero-initialised ``nn.Embedding`` every kind builds its rows
from, and :class:`FeaturedTable`, whose rows add embeddings of fixed side features.

Any kind may take side features (``user_features``/``item_features`` > 0): each user and item
table then becomes a :class:`FeaturedTable`, whose row is the id's own embedding plus a weighted
sum of embeddings of its fixed features (a film's genres; a user's age band, gender and
occupation). The features are a buffer of the model, filled at training time from
:mod:`recspark.data.side_info`, so the signature and the jobs stay the same, and a table's
``weight`` is the *effective* matrix: the factor tables written for scoring and downstream use
hold what the model actually multiplies.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
from torch import nn


class Table(Protocol):
    """What a model, scoring and the factor tables read of a table: an ``nn.Embedding``, a
    :class:`FeaturedTable`, an ensemble's side-by-side view or an autoencoder's codes."""

    @property
    def weight(self) -> torch.Tensor: ...

    @property
    def embedding_dim(self) -> int: ...

    @property
    def num_embeddings(self) -> int: ...

    def __call__(self, index: torch.Tensor) -> torch.Tensor: ...


def embedding_size(count: int) -> int:
    """fastai's rule of thumb for an embedding width: ``min(600, round(1.6 * count ** 0.56))``."""
    return min(600, round(1.6 * count**0.56))


_UNFILLED = contextvars.ContextVar("recspark_unfilled_tables", default=False)


@contextlib.contextmanager
def unfilled() -> Iterator[None]:
    """Build models whose weights are loaded or copied in next: their random tables skip the
    random start. The truncated normal draw of a 100k-user model's tables was 90% of the time
    ``score`` spent loading it (0.9 of 1.0 s); a strict ``load_state_dict`` still refuses a
    state that leaves any of them unset."""
    token = _UNFILLED.set(True)
    try:
        yield
    finally:
        _UNFILLED.reset(token)


def random_table(count: int, width: int, sparse: bool, std: float = 0.01) -> nn.Embedding:
    if _UNFILLED.get():
        return nn.Embedding(count, width, sparse=sparse, _weight=torch.empty(count, width))
    table = nn.Embedding(count, width, sparse=sparse)
    nn.init.trunc_normal_(table.weight, std=std, a=-2 * std, b=2 * std)
    return table


def zero_table(count: int, sparse: bool, width: int = 1) -> nn.Embedding:
    # Biases start at zero so the first predictions sit at the middle of y_range (spotlight).
    table = nn.Embedding(count, width, sparse=sparse)
    nn.init.zeros_(table.weight)
    return table


class FeaturedTable(nn.Module):
    """An embedding table whose rows add embeddings of fixed side features.

    Row ``r`` is ``own[r] + sum_f feature_weights[r, f] * feature_table[f]``. ``feature_weights``
    (rows x features) is a buffer: a one-hot per attribute group for users, ``1/n`` over a film's
    ``n`` genres for items. The feature embeddings start at zero, so an untrained featured model
    predicts what the plain one does.

    The table reads like an ``nn.Embedding`` to the rest of recspark: calling it gathers rows,
    :attr:`weight` is the whole effective matrix, :attr:`embedding_dim` its width. A state dict of
    a plain table (``weight`` only, as in a scoring payload whose user rows were cut away) loads
    into it as the own part with no features, which computes the same rows.

    Parameters
    ----------
    rows, width
        Rows (ids) and width of the table.
    features
        How many side features; must be positive.
    sparse
        Sparse gradients for the own rows (the feature table is small and stays dense).
    zero
        Start the own rows at zero (bias tables) instead of a small truncated normal.
    """

    feature_weights: torch.Tensor  # a buffer, rows x features

    def __init__(
        self, rows: int, width: int, features: int, sparse: bool = False, zero: bool = False
    ):
        super().__init__()
        if features <= 0:
            raise ValueError(f"a featured table needs at least one feature, got {features}")
        self.own = zero_table(rows, sparse, width) if zero else random_table(rows, width, sparse)
        self.feature_table = zero_table(features, False, width)
        self.register_buffer("feature_weights", torch.zeros(rows, features))

    @property
    def embedding_dim(self) -> int:
        return self.own.embedding_dim

    @property
    def num_embeddings(self) -> int:
        return self.own.num_embeddings

    @property
    def weight(self) -> torch.Tensor:
        """The effective table, ``rows x width``: own rows plus their features' embeddings."""
        return self.own.weight + self.feature_weights @ self.feature_table.weight

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.own(index) + self.feature_weights[index] @ self.feature_table.weight

    def row_penalty(self, index: torch.Tensor) -> torch.Tensor:
        """Per row of ``index``: squared norm of its own row plus its features' rows, weighted.

        A feature embedding is shrunk in proportion to how often rows carrying it are seen, as
        the own rows are.
        """
        features = self.feature_weights[index].abs() @ self.feature_table.weight.pow(2).sum(1)
        return self.own(index).pow(2).sum(1) + features

    @torch.no_grad()
    def set_features(self, weights: np.ndarray | torch.Tensor) -> None:
        """Fill the feature buffer; ``weights`` must be ``rows x features``."""
        values = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if tuple(values.shape) != tuple(self.feature_weights.shape):
            raise ValueError(
                f"side features of shape {tuple(values.shape)} do not fit a table of shape "
                f"{tuple(self.feature_weights.shape)}: they must come from the same id maps and "
                "feature vocabulary as the model's spec"
            )
        if not torch.isfinite(values).all():
            raise ValueError("side features hold NaN or infinite weights")
        self.feature_weights.copy_(values.to(self.feature_weights.device))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        plain = prefix + "weight"
        if plain in state_dict and prefix + "own.weight" not in state_dict:
            # A plain table holds effective rows already: they become own rows with no features.
            rows = state_dict.pop(plain)
            state_dict[prefix + "own.weight"] = rows
            state_dict[prefix + "feature_weights"] = rows.new_zeros(
                rows.shape[0], self.feature_weights.shape[1]
            )
            state_dict[prefix + "feature_table.weight"] = torch.zeros_like(
                self.feature_table.weight, device=rows.device
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def make_table(
    rows: int, width: int, features: int, sparse: bool, zero: bool = False
) -> nn.Embedding | FeaturedTable:
    """A plain embedding table, or a :class:`FeaturedTable` when there are side features."""
    if features:
        return FeaturedTable(rows, width, features, sparse, zero)
    return zero_table(rows, sparse, width) if zero else random_table(rows, width, sparse)


def row_penalty(table: Table, index: torch.Tensor) -> torch.Tensor:
    if isinstance(table, FeaturedTable):
        return table.row_penalty(index)
    return table(index).pow(2).sum(1)
