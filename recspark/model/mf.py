"""The matrix-factorisation kinds: ``dot`` (:class:`DotProduct`, ``p_u . q_i``) and ``dot_bias``
(:class:`DotBias`: plus user and item biases, squashed by a sigmoid into ``y_range``, fastai's
``collab_learner`` default). Their scores are one matrix product, and
:meth:`DotProduct.joint_scores` gives what the joint objective trains a ranking head on in one pass.
"""

from __future__ import annotations

import torch

from recspark.core.model_shape import DEFAULT_Y_RANGE
from recspark.model.base import EmbeddingModel, scale_to_range
from recspark.model.tables import make_table


class DotProduct(EmbeddingModel):
    """``p_u . q_i``: the plain matrix-factorisation model."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int,
        *,
        sparse: bool = False,
        user_features: int = 0,
        item_features: int = 0,
        bias_penalty: float = 1.0,
    ):
        super().__init__(n_users, n_items, bias_penalty)
        self.user_factors = make_table(n_users, factors, user_features, sparse)
        self.item_factors = make_table(n_items, factors, item_features, sparse)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        return self._predict(user_idx, item_idx, self.item_factors(item_idx))

    def _predict(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, item_rows: torch.Tensor
    ) -> torch.Tensor:
        """The prediction of each pair given its item rows, already looked up."""
        return (self.user_factors(user_idx) * item_rows).sum(dim=1)

    def joint_scores(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        negatives: torch.Tensor,
        negative_bias: torch.Tensor | None = None,
        head_rows: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What :class:`~recspark.train.objectives.joint.JointObjective` trains on, in one pass:
        the prediction of each pair, and the :class:`ListHead`'s scores of the first
        ``head_rows`` pairs' items ``(head_rows,)`` and of ``negatives`` shared by the batch
        ``(head_rows, len(negatives))`` (all pairs when None), plus ``negative_bias`` per
        negative when given (a sampled softmax's log-Q correction, added inside the matrix
        product rather than over its result).

        The same numbers as ``forward`` and :class:`HeadView`, but the item rows and head biases
        of the pairs and the negatives are each looked up once, so their sparse gradients hold
        ``rows + negatives`` rows in that order, not three lookups' worth: the optimizer's step,
        the largest part of a CPU step, grows by the head's own user rows only.
        """
        rows = len(item_idx)
        head_rows = rows if head_rows is None else min(rows, head_rows)
        item_rows = self.item_factors(torch.cat([item_idx, negatives]))
        head = self.required_head()
        head_users = head.user_factors(user_idx[:head_rows])
        head_bias = head.item_bias(torch.cat([item_idx[:head_rows], negatives])).squeeze(1)
        negative_bias_all = head_bias[head_rows:]
        if negative_bias is not None:
            negative_bias_all = negative_bias_all + negative_bias
        return (
            self._predict(user_idx, item_idx, item_rows[:rows]),
            (head_users * item_rows[:head_rows]).sum(dim=1) + head_bias[:head_rows],
            torch.addmm(negative_bias_all[None, :], head_users, item_rows[rows:].T),
        )

    def score_vectors(self, user_vectors, user_bias, item_idx):
        return user_vectors @ self.item_factors(item_idx).T


class DotBias(DotProduct):
    """``sigmoid(p_u . q_i + b_u + b_i)`` scaled into ``y_range``."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int,
        y_range: tuple[float, float] | None = DEFAULT_Y_RANGE,
        *,
        sparse: bool = False,
        user_features: int = 0,
        item_features: int = 0,
        bias_penalty: float = 1.0,
    ):
        super().__init__(
            n_users,
            n_items,
            factors,
            sparse=sparse,
            user_features=user_features,
            item_features=item_features,
            bias_penalty=bias_penalty,
        )
        self.user_bias = make_table(n_users, 1, user_features, sparse, zero=True)
        self.item_bias = make_table(n_items, 1, item_features, sparse, zero=True)
        self.y_range = (y_range[0], y_range[1]) if y_range is not None else None

    def _predict(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, item_rows: torch.Tensor
    ) -> torch.Tensor:
        raw = (self.user_factors(user_idx) * item_rows).sum(dim=1)
        raw = raw + self.user_bias(user_idx).squeeze(1) + self.item_bias(item_idx).squeeze(1)
        return scale_to_range(raw, self.y_range)

    def score_vectors(self, user_vectors, user_bias, item_idx):
        raw = user_vectors @ self.item_factors(item_idx).T + self.item_bias(item_idx).T
        if user_bias is not None:
            raw = raw + user_bias[:, None]
        return scale_to_range(raw, self.y_range)
