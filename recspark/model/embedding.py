"""The embedding models, one signature for all: ``forward(user_idx, item_idx) -> prediction``.

- ``dot``: the dot product of user and item embeddings.
- ``dot_bias``: dot product plus user and item biases, squashed by a sigmoid into ``y_range``
  (fastai's ``collab_learner`` default).
- ``mlp``: fastai's EmbeddingNet: concatenated user and item embeddings (sizes may differ), embedding
  dropout, hidden layers with ReLU and dropout, and a sigmoid-scaled output.

Any of them may take side features (``user_features``/``item_features`` > 0): each user and item
table then becomes a :class:`FeaturedTable`, whose row is the id's own embedding plus a weighted
sum of embeddings of its fixed features (a film's genres; a user's age band, gender and
occupation). The features are a buffer of the model, filled at training time from
:mod:`recspark.data.side_info`, so the signature and the jobs stay the same, and a table's ``weight``
is the *effective* matrix: the factor tables written for scoring and downstream use hold what the
model actually multiplies.

An :class:`Ensemble` (``model.ensemble`` > 1) averages several ``dot`` or ``dot_bias`` models
trained side by side from different initialisations.

Each model also answers :meth:`EmbeddingModel.score_items`, the full ``users x items`` score block
that scoring and ranking evaluation need; dot models compute it as one matrix product.

A rating model may carry a :class:`ListHead` (``lists_head=True``, ``lists.source: head``): a
ranking head beside the rating head that shares the item rows. It adds its own user rows ``r_u``
and a per-item bias ``c_i`` and scores ``r_u . q_i + c_i``, trained with a softmax over the
catalogue on the same batches (:mod:`recspark.train.objectives.joint`): it learns which items a
user picks, which a rating model never sees, and the shared item rows learn from it too.
:func:`lists_model` turns such a model into the plain ``dot_bias`` model (raw scores) whose top-N
are the published lists: the head's score plus ``rating_weight`` times the rating head's logit
``p_u . q_i + b_i``, still one dot product per pair.
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch import nn


def embedding_size(count: int) -> int:
    """fastai's rule of thumb for an embedding width: ``min(600, round(1.6 * count ** 0.56))``."""
    return min(600, round(1.6 * count**0.56))


def _embedding(count: int, width: int, sparse: bool, std: float = 0.01) -> nn.Embedding:
    table = nn.Embedding(count, width, sparse=sparse)
    nn.init.trunc_normal_(table.weight, std=std, a=-2 * std, b=2 * std)
    return table


def _zero_embedding(count: int, sparse: bool, width: int = 1) -> nn.Embedding:
    # Biases start at zero so the first predictions sit at the middle of y_range (spotlight).
    table = nn.Embedding(count, width, sparse=sparse)
    nn.init.zeros_(table.weight)
    return table


def scale_to_range(raw: torch.Tensor, y_range: tuple[float, float] | None) -> torch.Tensor:
    """``low + (high - low) * sigmoid(raw)`` for ``y_range = (low, high)``; ``raw`` itself for None.

    The one definition of fastai's ``y_range`` squashing: training, scoring and every kernel that
    finishes candidate scores use it, so a model scores the same wherever it runs.
    """
    if y_range is None:
        return raw
    low, high = y_range
    return torch.sigmoid(raw) * (high - low) + low


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

    def __init__(self, rows: int, width: int, features: int, sparse: bool = False, zero: bool = False):
        super().__init__()
        if features <= 0:
            raise ValueError(f"a featured table needs at least one feature, got {features}")
        self.own = _zero_embedding(rows, sparse, width) if zero else _embedding(rows, width, sparse)
        self.feature_table = _zero_embedding(features, False, width)
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


def _table(rows: int, width: int, features: int, sparse: bool, zero: bool = False) -> nn.Module:
    """A plain embedding table, or a :class:`FeaturedTable` when there are side features."""
    if features:
        return FeaturedTable(rows, width, features, sparse, zero)
    return _zero_embedding(rows, sparse, width) if zero else _embedding(rows, width, sparse)


def _row_penalty(table: nn.Module, index: torch.Tensor) -> torch.Tensor:
    if isinstance(table, FeaturedTable):
        return table.row_penalty(index)
    return table(index).pow(2).sum(1)


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
        user_features: int = 0,
        item_features: int = 0,
        sparse: bool = False,
    ):
        super().__init__()
        self.user_factors = _table(n_users, width, user_features, sparse)
        self.item_bias = _table(n_items, 1, item_features, sparse, zero=True)


class HeadView(nn.Module):
    """A model's :class:`ListHead` seen as a ranking model: ``forward`` and ``score_items`` give
    the head's scores. It owns no weights (they stay the model's), so a loss on it trains them;
    the ranking objective takes it like any model (:mod:`recspark.train.objectives.joint`)."""

    def __init__(self, model: EmbeddingModel):
        super().__init__()
        self.model = model
        self.n_users, self.n_items = model.n_users, model.n_items

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        head = self.model.lists_head
        users, items = head.user_factors(user_idx), self.model.item_factors(item_idx)
        return (users * items).sum(dim=1) + head.item_bias(item_idx).squeeze(1)

    def score_items(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        head = self.model.lists_head
        scores = head.user_factors(user_idx) @ self.model.item_factors(item_idx).T
        return scores + head.item_bias(item_idx).T


class EmbeddingModel(nn.Module, metaclass=abc.ABCMeta):
    """Base class: table sizes, the index check, the L2 penalty and the side-feature hook.

    Parameters
    ----------
    n_users, n_items
        Table sizes, from the id maps.
    bias_penalty
        Multiplier of the L2 penalty on bias rows relative to factor rows (0 leaves biases free).
    """

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
            user_features,
            item_features,
            sparse,
        )

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
        return sum(
            multiplier * _row_penalty(table, index).mean()
            for table, index, multiplier in self._penalised_rows(user_idx, item_idx, head_rows)
        )

    def _penalised_tables(self) -> list[tuple[nn.Module, str, float, bool]]:
        """``(table, "user" | "item", weight, of the head)`` for every table :meth:`penalty`
        counts."""
        tables = [(self.user_factors, "user", 1.0, False), (self.item_factors, "item", 1.0, False)]
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
    ) -> list[tuple[nn.Module, torch.Tensor, float]]:
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
        for table, index, multiplier in self._penalised_rows(user_idx, item_idx, head_rows):
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
            self.lists_head.user_factors = nn.Embedding(1, self.lists_head.user_factors.embedding_dim)
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


class DotProduct(EmbeddingModel):
    """``p_u . q_i``: the plain matrix-factorisation model."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        factors: int,
        sparse: bool = False,
        user_features: int = 0,
        item_features: int = 0,
        bias_penalty: float = 1.0,
    ):
        super().__init__(n_users, n_items, bias_penalty)
        self.user_factors = _table(n_users, factors, user_features, sparse)
        self.item_factors = _table(n_items, factors, item_features, sparse)

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
        head = self.lists_head
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
        y_range: tuple[float, float] | None = (1.0, 5.5),
        sparse: bool = False,
        user_features: int = 0,
        item_features: int = 0,
        bias_penalty: float = 1.0,
    ):
        super().__init__(
            n_users, n_items, factors, sparse, user_features, item_features, bias_penalty
        )
        self.user_bias = _table(n_users, 1, user_features, sparse, zero=True)
        self.item_bias = _table(n_items, 1, item_features, sparse, zero=True)
        self.y_range = tuple(y_range) if y_range is not None else None

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
        user_features: int = 0,
        item_features: int = 0,
        bias_penalty: float = 1.0,
    ):
        super().__init__(n_users, n_items, bias_penalty)
        self.user_factors = _table(n_users, user_factors, user_features, sparse)
        self.item_factors = _table(n_items, item_factors, item_features, sparse)
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


class _SideBySide:
    """An ensemble's user or item side read like one table: every member's rows side by side.

    Each member contributes its factor columns and, when it has one, its bias as one more
    column, so a single vector per id carries everything the members need; scoring and the
    factor tables handle it like any other table. Not a module: the members own the weights.
    """

    def __init__(self, parts: list[nn.Module]):
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
    :class:`_SideBySide`): a member's bias is one column of the vector, so the ensemble has no
    ``user_bias``/``item_bias`` of its own and :meth:`score_vectors` ignores ``user_bias``.
    """

    def __init__(self, members: list[EmbeddingModel]):
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        first = members[0]
        super().__init__(first.n_users, first.n_items, first.bias_penalty)
        self.members = nn.ModuleList(members)
        self.y_range = getattr(first, "y_range", None)

    def _side(self, side: str) -> list[nn.Module]:
        parts = []
        for member in self.members:
            parts.append(getattr(member, f"{side}_factors"))
            if hasattr(member, f"{side}_bias"):
                parts.append(getattr(member, f"{side}_bias"))
        return parts

    @property
    def user_factors(self) -> _SideBySide:
        return _SideBySide(self._side("user"))

    @property
    def item_factors(self) -> _SideBySide:
        return _SideBySide(self._side("item"))

    def forward(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, *, members: bool = False
    ) -> torch.Tensor:
        """The mean prediction; ``members=True``: every member's, ``members x batch``."""
        each = torch.stack([member(user_idx, item_idx) for member in self.members])
        return each if members else each.mean(dim=0)

    def penalty(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, head_rows: int | None = None
    ) -> torch.Tensor:
        """The sum of the members' penalties, as training sums their losses."""
        return torch.stack([m.penalty(user_idx, item_idx, head_rows) for m in self.members]).sum()

    def penalty_by_rows(self) -> bool:
        return all(member.penalty_by_rows() for member in self.members)

    def add_penalty_gradient(
        self,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
        weight: float,
        head_rows: int | None = None,
    ) -> None:
        for member in self.members:
            member.add_penalty_gradient(user_idx, item_idx, weight, head_rows)

    def set_side_features(
        self, user: np.ndarray | None = None, item: np.ndarray | None = None
    ) -> None:
        for member in self.members:
            member.set_side_features(user, item)

    def cut_users(self) -> None:
        for member in self.members:
            member.cut_users()
        self.n_users = 1

    def score_vectors(self, user_vectors, user_bias, item_idx):
        return torch.stack(list(self._member_scores(user_vectors, item_idx))).mean(dim=0)

    def _member_scores(self, user_vectors: torch.Tensor, item_idx: torch.Tensor):
        """Each member's scores, its columns of ``user_vectors`` (factors, then its bias)."""
        offset = 0
        for member in self.members:
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
        return list(self.members)

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for member in self.members for p in member.head_parameters()]


def has_lists_head(model: nn.Module) -> bool:
    """Whether ``model`` (or every member of an ensemble) carries a :class:`ListHead`."""
    if isinstance(model, Ensemble):
        return all(has_lists_head(member) for member in model.lists_members)
    return getattr(model, "lists_head", None) is not None


@torch.no_grad()
def _member_lists_model(model: EmbeddingModel, rating_weight: float) -> DotBias:
    head = model.lists_head
    users = head.user_factors.weight.detach().clone()
    items = model.item_factors.weight.detach().clone()
    bias = head.item_bias.weight.detach().clone()
    if rating_weight and isinstance(model, DotProduct):
        # The rating head's logit p_u . q_i + b_i (+ b_u, the same for every item of a user).
        users += rating_weight * model.user_factors.weight
        if hasattr(model, "item_bias"):
            bias += rating_weight * model.item_bias.weight
    lists = DotBias(model.n_users, model.n_items, items.shape[1], y_range=None)
    lists.user_factors.weight.copy_(users)
    lists.item_factors.weight.copy_(items)
    lists.item_bias.weight.copy_(bias)
    return lists.eval()


def lists_model(model: EmbeddingModel, rating_weight: float = 0.0) -> tuple[EmbeddingModel, dict]:
    """The model whose top-N are the published lists of ``model``, and its spec.

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
        members = [_member_lists_model(member, rating_weight) for member in model.lists_members]
        lists: EmbeddingModel = Ensemble(members).eval()
    else:
        lists = _member_lists_model(model, rating_weight)
    first = lists.members[0] if isinstance(lists, Ensemble) else lists
    spec = {
        "kind": "dot_bias",
        "n_users": model.n_users,
        "n_items": model.n_items,
        "factors": first.item_factors.embedding_dim,
        "y_range": None,
        "members": len(lists.members) if isinstance(lists, Ensemble) else 1,
    }
    return lists, spec
