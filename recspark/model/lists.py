"""The model a published list ranks by: :func:`lists_model` turns a model with a
:class:`~recspark.model.head.ListHead` into the plain ``dot_bias`` model (raw scores) whose top-N
are the published lists: the head's score plus ``rating_weight`` times the rating head's logit
``p_u . q_i + b_i``, still one dot product per pair. :class:`HeadView` shows the head as a
ranking model for training (:mod:`recspark.train.objectives.joint`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recspark.model.base import EmbeddingModel
from recspark.model.ensemble import Ensemble
from recspark.model.mf import DotBias, DotProduct
from recspark.model.spec import DotBiasSpec
from recspark.model.tables import unfilled


class HeadView(nn.Module):
    """A model's :class:`ListHead` seen as a ranking model: ``forward`` and ``score_items`` give
    the head's scores. It owns no weights (they stay the model's), so a loss on it trains them;
    the ranking objective takes it like any model (:mod:`recspark.train.objectives.joint`)."""

    def __init__(self, model: EmbeddingModel):
        super().__init__()
        self.model = model
        self.n_users, self.n_items = model.n_users, model.n_items

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        head = self.model.required_head()
        users, items = head.user_factors(user_idx), self.model.item_factors(item_idx)
        return (users * items).sum(dim=1) + head.item_bias(item_idx).squeeze(1)

    def score_items(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        head = self.model.required_head()
        scores = head.user_factors(user_idx) @ self.model.item_factors(item_idx).T
        return scores + head.item_bias(item_idx).T


def has_lists_head(model: nn.Module) -> bool:
    """Whether ``model`` (or every member of an ensemble) carries a :class:`ListHead`."""
    if isinstance(model, Ensemble):
        return all(has_lists_head(member) for member in model.lists_members)
    return getattr(model, "lists_head", None) is not None


@torch.no_grad()
def _member_lists_model(model: EmbeddingModel, rating_weight: float) -> DotBias:
    head = model.required_head()
    users = head.user_factors.weight.detach().clone()
    items = model.item_factors.weight.detach().clone()
    bias = head.item_bias.weight.detach().clone()
    if rating_weight and isinstance(model, DotProduct):
        # The rating head's logit p_u . q_i + b_i (+ b_u, the same for every item of a user).
        users += rating_weight * model.user_factors.weight
        if hasattr(model, "item_bias"):
            bias += rating_weight * model.item_bias.weight
    with unfilled():  # every table but the zero user bias is copied in below
        lists = DotBias(model.n_users, model.n_items, items.shape[1], y_range=None)
    lists.user_factors.weight.copy_(users)
    lists.item_factors.weight.copy_(items)
    lists.item_bias.weight.copy_(bias)
    return lists.eval()


def lists_model(
    model: EmbeddingModel, rating_weight: float = 0.0
) -> tuple[EmbeddingModel, dict[str, Any] | None]:
    """The model whose top-N are the published lists of ``model``, and its stored spec
    (:meth:`~recspark.model.spec.ModelSpec.as_dict` of a :class:`DotBiasSpec`).

    A model with a :class:`ListHead` gives a plain ``dot_bias`` model on raw scores (an ensemble:
    one per member, averaged): ``(r_u + w p_u) . q_i + (c_i + w b_i)`` with ``w`` =
    ``rating_weight`` for the dot kinds, ``r_u . q_i + c_i`` for ``mlp`` (its rating head is not
    a dot product). The tables hold the effective rows, side features included, so scoring,
    fold-in and the similar-items table need nothing else. Any other model is its own lists model
    (its spec is then None: keep the published one).
    """
    if not has_lists_head(model):
        return model, None
    if isinstance(model, Ensemble) and len(model.lists_members) == 1:
        model = model.lists_members[0]  # a blend's: its main model's head
    if isinstance(model, Ensemble):
        members: list[EmbeddingModel] = [
            _member_lists_model(member, rating_weight) for member in model.lists_members
        ]
        lists: EmbeddingModel = Ensemble(members).eval()
    else:
        lists = _member_lists_model(model, rating_weight)
    first = lists.models[0] if isinstance(lists, Ensemble) else lists
    spec = DotBiasSpec(
        n_users=model.n_users,
        n_items=model.n_items,
        factors=first.item_factors.embedding_dim,
        y_range=None,
        members=len(lists.members) if isinstance(lists, Ensemble) else 1,
        given=frozenset({"factors", "y_range", "members"}),
    )
    return lists, spec.as_dict()
