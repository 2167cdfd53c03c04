"""An :class:`Ensemble` (``model.ensemble`` > 1): the mean of several ``dot`` or ``dot_bias``
models trained side by side from different initialisations, whose tables read as one
(:class:`SideBySide`) so it scores through the same kernel as any model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import numpy as np
import torch
from torch import nn

from recspark.model.base import EmbeddingModel
from recspark.model.tables import Table


class SideBySide:
    """An ensemble's user or item side read like one table: every member's rows side by side.

    Each member contributes its factor columns and, when it has one, its bias as one more
    column, so a single vector per id carries everything the members need; scoring and the
    factor tables handle it like any other table. Not a module: the members own the weights.
    """

    def __init__(self, parts: list[Table]):
        self.parts = parts

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([part.weight for part in self.parts], dim=1)

    @property
    def embedding_dim(self) -> int:
        return sum(part.embedding_dim for part in self.parts)

    @property
    def num_embeddings(self) -> int:
        return self.parts[0].num_embeddings

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(index) for part in self.parts], dim=1)


class Ensemble(EmbeddingModel):
    """The mean prediction of several models of one kind, trained side by side.

    Members differ only in their random initialisation. Training sums the members' own losses
    on the same batches (:meth:`forward` with ``members=True``), so each member's gradient is the
    one it would get trained alone: they learn independently and their errors partly cancel in
    the mean, as averaging separately trained seeds does.

    ``user_factors`` and ``item_factors`` read the members' tables side by side (see
    :class:`SideBySide`): a member's bias is one column of the vector, so the ensemble has no
    ``user_bias``/``item_bias`` of its own and :meth:`score_vectors` ignores ``user_bias``.
    """

    def __init__(self, members: list[EmbeddingModel]):
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        first = members[0]
        super().__init__(first.n_users, first.n_items, first.bias_penalty)
        self.members = nn.ModuleList(members)
        self.y_range = getattr(first, "y_range", None)

    @property
    def models(self) -> list[EmbeddingModel]:
        """The members, typed (``members`` is their ``nn.ModuleList``)."""
        return cast(list[EmbeddingModel], list(self.members))

    def _side(self, side: str) -> list[Table]:
        parts = []
        for member in self.models:
            parts.append(getattr(member, f"{side}_factors"))
            if hasattr(member, f"{side}_bias"):
                parts.append(getattr(member, f"{side}_bias"))
        return parts

    # Read-only views where a single model has tables (the members own the weights).
    @property
    def user_factors(self) -> SideBySide:  # type: ignore[override]
        return SideBySide(self._side("user"))

    @property
    def item_factors(self) -> SideBySide:  # type: ignore[override]
        return SideBySide(self._side("item"))

    def forward(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, *, members: bool = False
    ) -> torch.Tensor:
        """The mean prediction; ``members=True``: every member's, ``members x batch``."""
        each = torch.stack([member(user_idx, item_idx) for member in self.models])
        return each if members else each.mean(dim=0)

    def penalty(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, head_rows: int | None = None
    ) -> torch.Tensor:
        """The sum of the members' penalties, as training sums their losses."""
        return torch.stack([m.penalty(user_idx, item_idx, head_rows) for m in self.models]).sum()

    def penalty_by_rows(self) -> bool:
        return all(member.penalty_by_rows() for member in self.models)

    def add_penalty_gradient(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        weight: float,
        head_rows: int | None = None,
    ) -> None:
        for member in self.models:
            member.add_penalty_gradient(user_idx, item_idx, weight, head_rows)

    def set_side_features(
        self, user: np.ndarray | None = None, item: np.ndarray | None = None
    ) -> None:
        for member in self.models:
            member.set_side_features(user, item)

    def cut_users(self) -> None:
        for member in self.models:
            member.cut_users()
        self.n_users = 1

    def score_vectors(
        self, user_vectors: torch.Tensor, user_bias: torch.Tensor | None, item_idx: torch.Tensor
    ) -> torch.Tensor:
        return torch.stack(list(self._member_scores(user_vectors, item_idx))).mean(dim=0)

    def _member_scores(
        self, user_vectors: torch.Tensor, item_idx: torch.Tensor
    ) -> Iterator[torch.Tensor]:
        """Each member's scores, its columns of ``user_vectors`` (factors, then its bias)."""
        offset = 0
        for member in self.models:
            width = member.user_factors.embedding_dim
            vectors = user_vectors[:, offset : offset + width]
            offset += width
            bias = None
            if hasattr(member, "user_bias"):
                bias = user_vectors[:, offset]
                offset += 1
            yield member.score_vectors(vectors, bias, item_idx)

    @property
    def lists_members(self) -> list[EmbeddingModel]:
        """The members whose ranking heads give the published lists (all of an ensemble's)."""
        return self.models

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for member in self.models for p in member.head_parameters()]
