"""The base of every model kind, :class:`EmbeddingModel`: one signature for all,
``forward(user_idx, item_idx) -> prediction``, plus table sizes, the index check, the L2 penalty
with its hand-derived gradient, the side-feature hook and the scoring contract.

Each model answers :meth:`EmbeddingModel.score_items`, the full ``users x items`` score block that
scoring and ranking evaluation need, through :meth:`EmbeddingModel.score_vectors` (user rows
against item rows), which dot models compute as one matrix product. :func:`scale_to_range` is the
one definition of fastai's ``y_range`` squashing. The kinds live in their own modules
(:mod:`recspark.model.mf`, :mod:`recspark.model.mlp`, :mod:`recspark.model.ensemble`, ...) and the
registry (:mod:`recspark.model.registry`) builds them; this module imports none of them.
"""

from __future__ import annotations

import abc
from typing import cast

import numpy as np
import torch
from torch import nn

from recspark.model.head import ListHead
from recspark.model.tables import FeaturedTable, Table, row_penalty


def scale_to_range(raw: torch.Tensor, y_range: tuple[float, float] | None) -> torch.Tensor:
    """``low + (high - low) * sigmoid(raw)`` for ``y_range = (low, high)``; ``raw`` itself for None.

    The one definition of fastai's ``y_range`` squashing: training, scoring and every kernel that
    finishes candidate scores use it, so a model scores the same wherever it runs.
    """
    if y_range is None:
        return raw
    low, high = y_range
    return torch.sigmoid(raw) * (high - low) + low


class EmbeddingModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class: table sizes, the index check, the L2 penalty and the side-feature hook.

    Parameters
    ----------
    n_users, n_items
        Table sizes, from the id maps.
    bias_penalty
        Multiplier of the L2 penalty on bias rows relative to factor rows (0 leaves biases free).
    """

    # Every kind sets these (an ensemble and an autoencoder as read-only views).
    user_factors: Table
    item_factors: Table
    # Only the kinds with biases set these (``hasattr`` tells).
    user_bias: Table
    item_bias: Table

    def __init__(self, n_users: int, n_items: int, bias_penalty: float = 1.0):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.bias_penalty = float(bias_penalty)
        self.lists_head: ListHead | None = None

    def add_lists_head(self, user_features: int = 0, item_features: int = 0) -> None:
        """Give the model a :class:`ListHead` over its item rows (built like its own tables)."""
        sparse = bool(getattr(self.item_factors, "sparse", False))
        self.lists_head = ListHead(
            self.n_users,
            self.n_items,
            self.item_factors.embedding_dim,
            user_features=user_features,
            item_features=item_features,
            sparse=sparse,
        )

    def required_head(self) -> ListHead:
        """The model's :class:`ListHead`.

        Raises
        ------
        ValueError
            When the model has none (it was built without ``lists_head``).
        """
        if self.lists_head is None:
            raise ValueError("this model has no ranking head: build it with lists_head=True")
        return self.lists_head

    def head_parameters(self) -> list[nn.Parameter]:
        """The :class:`ListHead`'s weights (none without one): the optimizer may step them at
        another learning rate (``lists.head_lr_scale``)."""
        return list(self.lists_head.parameters()) if self.lists_head is not None else []

    def check_indices(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> None:
        """Fail loudly on an index outside the tables instead of reading random memory."""
        for name, values, size in (
            ("user_idx", user_idx, self.n_users),
            ("item_idx", item_idx, self.n_items),
        ):
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= size):
                raise IndexError(
                    f"{name} outside [0, {size}): the data was indexed with another id map than "
                    "the model's; re-run prepare and train with the same paths.root and run_date"
                )

    def penalty(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, head_rows: int | None = None
    ) -> torch.Tensor:
        """Mean over the batch of the squared norms of the embedding rows it uses.

        The classic matrix-factorisation regulariser: a row is shrunk in proportion to how often
        it is seen, unlike optimizer weight decay, which shrinks every row at every step. Bias rows
        are weighted by ``bias_penalty``; side-feature rows count like the rows that carry them.
        The :class:`ListHead`'s rows count for the pairs the head trained on, the first
        ``head_rows`` (all when None), as a mean over those.
        """
        total = sum(
            multiplier * row_penalty(table, index).mean()
            for table, index, multiplier in self._penalised_rows(user_idx, item_idx, head_rows)
        )
        return cast(torch.Tensor, total)

    def _penalised_tables(self) -> list[tuple[Table, str, float, bool]]:
        """``(table, "user" | "item", weight, of the head)`` for every table :meth:`penalty`
        counts."""
        tables: list[tuple[Table, str, float, bool]] = [
            (self.user_factors, "user", 1.0, False),
            (self.item_factors, "item", 1.0, False),
        ]
        if self.lists_head is not None:
            tables.append((self.lists_head.user_factors, "user", 1.0, True))
        if self.bias_penalty:
            for side in ("user", "item"):
                if hasattr(self, f"{side}_bias"):
                    tables.append((getattr(self, f"{side}_bias"), side, self.bias_penalty, False))
            if self.lists_head is not None:
                tables.append((self.lists_head.item_bias, "item", self.bias_penalty, True))
        return tables

    def _penalised_rows(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, head_rows: int | None
    ) -> list[tuple[Table, torch.Tensor, float]]:
        """``(table, the indices it is penalised for, weight)`` for every penalised table."""
        rows = []
        for table, side, multiplier, of_head in self._penalised_tables():
            index = user_idx if side == "user" else item_idx
            rows.append((table, index[:head_rows] if of_head else index, multiplier))
        return rows

    def penalty_by_rows(self) -> bool:
        """Whether :meth:`add_penalty_gradient` can stand for the autograd :meth:`penalty`: every
        penalised table is a plain ``nn.Embedding`` (side-feature tables are not)."""
        return all(isinstance(table, nn.Embedding) for table, *_ in self._penalised_tables())

    @torch.no_grad()
    def add_penalty_gradient(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        weight: float,
        head_rows: int | None = None,
    ) -> None:
        """Add the gradient of ``weight * penalty(user_idx, item_idx, head_rows)`` to the tables'
        gradients.

        The same numbers autograd would add, without looking the rows up a second time in the
        graph: row ``r`` used ``n`` times among a table's ``B`` penalised lookups gets
        ``2 * weight * n / B * w_r``, added to the rows of a sparse gradient that looked the same
        indices up first, else appended to it as ``B`` more lookups (the optimizer sums them), or
        added into a dense one. Call it after ``backward``; only when :meth:`penalty_by_rows`
        holds.
        """
        for penalised, index, multiplier in self._penalised_rows(user_idx, item_idx, head_rows):
            table = cast(nn.Embedding, penalised)  # penalty_by_rows: plain tables only
            rows = table.weight.index_select(0, index).mul_(2.0 * weight * multiplier / len(index))
            grad = table.weight.grad
            if grad is None and table.sparse:
                grad = torch.sparse_coo_tensor(
                    index[None], rows, table.weight.shape, check_invariants=False
                )
            elif grad is None:
                grad = torch.zeros_like(table.weight).index_add_(0, index, rows)
            elif grad.is_sparse and torch.equal(grad._indices()[0, : len(index)], index):
                # The forward looked these very rows up first, in this order (one lookup per
                # pair, maybe followed by negatives): add to their gradient rows, so the
                # optimizer sums B rows, not 2B.
                grad._values()[: len(index)].add_(rows)
            elif grad.is_sparse:
                grad = torch.sparse_coo_tensor(
                    torch.cat([grad._indices(), index[None]], dim=1),
                    torch.cat([grad._values(), rows]),
                    table.weight.shape,
                    check_invariants=False,
                )
            else:
                grad.index_add_(0, index, rows)
            table.weight.grad = grad

    def set_side_features(
        self, user: np.ndarray | None = None, item: np.ndarray | None = None
    ) -> None:
        """Fill the side-feature buffers of the user and/or item tables (and their biases).

        Raises
        ------
        ValueError
            When features are given for a side the model was built without, or do not fit.
        """
        for side, weights in (("user", user), ("item", item)):
            if weights is None:
                continue
            tables = [getattr(self, f"{side}_factors"), getattr(self, f"{side}_bias", None)]
            if self.lists_head is not None:
                tables.append(getattr(self.lists_head, f"{side}_factors", None))
                tables.append(getattr(self.lists_head, f"{side}_bias", None))
            featured = [t for t in tables if isinstance(t, FeaturedTable)]
            if not featured:
                raise ValueError(
                    f"{side} side features given, but the model was built without them: build it "
                    f"with {side}_features={np.shape(weights)[-1]}"
                )
            for table in featured:
                table.set_features(weights)

    def cut_users(self) -> None:
        """Cut the user tables to one row: what scoring executors hold (they get user vectors)."""
        self.user_factors = nn.Embedding(1, self.user_factors.embedding_dim)
        if hasattr(self, "user_bias"):
            self.user_bias = nn.Embedding(1, 1)
        if self.lists_head is not None:
            self.lists_head.user_factors = nn.Embedding(
                1, self.lists_head.user_factors.embedding_dim
            )
        self.n_users = 1

    def score_items(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Scores of every (user, item) pair as a ``len(user_idx) x len(item_idx)`` block."""
        bias = self.user_bias(user_idx).squeeze(1) if hasattr(self, "user_bias") else None
        return self.score_vectors(self.user_factors(user_idx), bias, item_idx)

    @abc.abstractmethod
    def score_vectors(
        self, user_vectors: torch.Tensor, user_bias: torch.Tensor | None, item_idx: torch.Tensor
    ) -> torch.Tensor:
        """Scores of users given by their embedding rows against ``item_idx``.

        Scoring jobs use this: user rows arrive with their vectors (the effective rows of the
        user table), so executors hold only the item side of the model.
        """
