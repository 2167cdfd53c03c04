"""EASE as a part of a blend (``model.blend.kind: ease``): Steck's item x item model in the
embedding models' contract.

EASE (Steck, WWW 2019) scores user ``u`` and item ``i`` as ``x_u . B[:, i]``, ``x_u`` the user's
row of the binary user x item matrix of the train positives and ``B`` the closed-form item x item
weights (:func:`ease_weights`, which the benchmark's EASE contender solves with too). That
is a dot product whose rows are ``n_items`` wide: a user's row is ``x_u``, an item's row is
column ``i`` of ``B``. :class:`EaseModel` holds them as the two tables of a :class:`DotProduct`,
so a :class:`~recspark.model.autorec.Blend` of a ranking model and EASE scores through the same
kernel contract (``score_vectors``: one matrix product per part), publishes as one model, and folds
a new user in by writing their row (:meth:`EaseModel.user_row`): EASE has nothing to solve for a
user.

It is fitted, never trained: :meth:`EaseModel.fit` sets both tables from the train positives. The
tables are dense, ``users x items`` and ``items x items`` float32, so the model is for catalogues
like MovieLens': :func:`check_size` refuses larger ones with the figures.
"""

from __future__ import annotations

import numpy as np
import torch

from recspark.core.errors import BadInputError
from recspark.model.mf import DotProduct

#: Most items EASE takes: its solve inverts an items x items matrix (``benchmark.ease_max_items``'s
#: default).
MAX_ITEMS = 20_000
#: Most cells of its dense user table (users x items, float32: 1 GiB).
MAX_USER_CELLS = 1 << 28


def check_size(n_users: int, n_items: int) -> None:
    """Refuse catalogues whose dense EASE tables would not fit, saying why and what to do."""
    if n_items > MAX_ITEMS or n_users * n_items > MAX_USER_CELLS:
        raise BadInputError(
            f"model.blend.kind=ease keeps a dense {n_users:,} x {n_items:,} user table and a "
            f"{n_items:,} x {n_items:,} item table; it takes at most {MAX_ITEMS:,} items and "
            f"{MAX_USER_CELLS:,} user cells: remove model.blend for a catalogue this size"
        )


def ease_weights(gram: np.ndarray, regularization: float) -> np.ndarray:
    """EASE's ``B`` from the Gram matrix: ``P = (G + lambda I)^-1``, ``B_ij = -P_ij / P_jj``,
    ``B_jj = 0``; float32."""
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a square matrix, got shape {gram.shape}")
    if regularization <= 0:
        raise ValueError(f"regularization must be positive, got {regularization}")
    matrix = np.array(gram, dtype=np.float64)
    matrix[np.diag_indices_from(matrix)] += regularization
    precision = np.linalg.inv(matrix)
    del matrix
    weights = precision / -np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


class EaseModel(DotProduct):
    """EASE's scores ``x_u . B[:, i]`` as a dot product of ``n_items``-wide rows (module doc)."""

    def __init__(self, n_users: int, n_items: int):
        check_size(n_users, n_items)
        super().__init__(n_users, n_items, n_items)
        for table in (self.user_factors, self.item_factors):
            table.weight.requires_grad_(False)
            table.weight.data.zero_()

    @torch.no_grad()
    def fit(self, users: np.ndarray, items: np.ndarray, regularization: float) -> None:
        """Set the tables from the positive ``(users[k], items[k])`` pairs of the train split.

        Repeated pairs count once (``x`` is binary); ``regularization`` is EASE's lambda.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if len(users) != len(items):
            raise ValueError(f"{len(users)} users but {len(items)} items")
        if len(users) and (
            users.min() < 0
            or users.max() >= self.n_users
            or items.min() < 0
            or items.max() >= self.n_items
        ):
            raise IndexError(f"a pair lies outside the {self.n_users} x {self.n_items} tables")
        history = np.zeros((self.n_users, self.n_items), dtype=np.float32)
        history[users, items] = 1.0
        gram = history.T.astype(np.float64) @ history
        self.user_factors.weight.copy_(torch.from_numpy(history))
        self.item_factors.weight.copy_(torch.from_numpy(ease_weights(gram, regularization).T))

    def user_row(self, items: np.ndarray) -> np.ndarray:
        """A user's row from the items they like: what :meth:`fit` writes for a train user."""
        row = np.zeros(self.n_items, dtype=np.float32)
        row[np.asarray(items, dtype=np.int64)] = 1.0
        return row

    def penalty(self, user_idx, item_idx, head_rows=None) -> torch.Tensor:
        return torch.zeros((), device=self.item_factors.weight.device)
