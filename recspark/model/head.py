"""The ranking head a rating model may carry (``lists_head=True``, ``lists.source: head``).

A :class:`ListHead` sits beside the rating head and shares the model's item rows: it adds its
own user rows ``r_u`` and a per-item bias ``c_i`` and scores ``r_u . q_i + c_i``, trained with a
softmax over the catalogue on the same batches (:mod:`recspark.train.objectives.joint`). It holds
tables only; the model owns it (:meth:`~recspark.model.base.EmbeddingModel.add_lists_head`), and
:mod:`recspark.model.lists` turns a model with one into the model its lists rank by.
"""

from __future__ import annotations

from torch import nn

from recspark.model.tables import make_table


class ListHead(nn.Module):
    """The ranking head of a rating model: user rows of the item rows' width and an item bias.

    It scores ``r_u . q_i + c_i`` with the model's own item rows ``q_i``; the rows are penalised
    like the model's (:meth:`EmbeddingModel.penalty`) and take side features like them.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        width: int,
        *,
        user_features: int = 0,
        item_features: int = 0,
        sparse: bool = False,
    ):
        super().__init__()
        self.user_factors = make_table(n_users, width, user_features, sparse)
        self.item_bias = make_table(n_items, 1, item_features, sparse, zero=True)
