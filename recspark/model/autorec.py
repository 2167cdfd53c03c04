"""An item-based autoencoder (I-AutoRec, Sedhain et al. 2015) and the blend that averages it in.

I-AutoRec encodes each item from its column of train ratings, ``h_i = sigmoid(V^T r_i + mu)`` (the
sum of the raters' rows of ``V`` weighted by their ratings), and decodes the rating of user ``u``
as ``W_u . h_i + b_u``. It errs differently from matrix factorisation: an item is described by who
rated it and how, not by a row learnt per item. Averaged with a ``dot_bias`` model the errors partly
cancel; :class:`Blend` is that average (``model.blend``), and what is published.

Both keep the scoring kernel's contract (``score_vectors``: user rows against item rows, one matrix
product): the autoencoder's item rows are its codes ``h_i``, fixed once trained, its user rows
``W_u`` and bias ``b_u``; a blend's rows are its parts' side by side, as an :class:`Ensemble`'s.
The codes need the train ratings only while training: :meth:`AutoRec.set_ratings` gives them (the
trainer's process holds them, 12 bytes a rating), and switching the model to eval mode stores the
codes of the current weights in ``item_codes``, the buffer a published model keeps instead.
Predictions are clamped to ``y_range`` outside training, the rating scale a sigmoid gives the
other models.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from recspark.model.base import EmbeddingModel
from recspark.model.ensemble import Ensemble


class _Codes:
    """An :class:`AutoRec`'s item side read like an embedding table: its codes.

    In training, from the train ratings under the current encoder (with gradients); otherwise the
    stored ``item_codes``. Not a module: the model owns the weights.
    """

    def __init__(self, model: AutoRec):
        self.model = model

    @property
    def weight(self) -> torch.Tensor:
        return self.model.item_codes

    @property
    def embedding_dim(self) -> int:
        return self.model.item_codes.shape[1]

    @property
    def num_embeddings(self) -> int:
        return self.model.n_items

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        model = self.model
        if not (model.training and model.has_ratings):
            return model.item_codes[index]
        items, inverse = torch.unique(index, return_inverse=True)
        return model.encode(items)[inverse]


class AutoRec(EmbeddingModel):
    """I-AutoRec: ``W_u . sigmoid(V^T r_i + mu) + b_u``, an autoencoder of item rating columns.

    Parameters
    ----------
    n_users, n_items
        Table sizes, from the id maps.
    hidden
        Width of the code ``h_i``, the item rows of the scoring contract.
    mean
        Where the user biases ``b_u`` start (the train mean rating).
    y_range
        ``(low, high)`` predictions are clamped to outside training; None: unclamped.

    The L2 penalty (:meth:`penalty`) is the paper's, over the whole encoder and decoder matrices,
    spread over the train ratings: ``weight_decay`` times it, summed over an epoch, is
    ``weight_decay * (|V|^2 + |W|^2)`` beside the summed squared errors.
    """

    # Buffers: the stored codes, and the train ratings by item (offsets into users and values).
    item_codes: torch.Tensor
    rating_offsets: torch.Tensor
    rating_users: torch.Tensor
    rating_values: torch.Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        hidden: int = 500,
        mean: float = 0.0,
        y_range: tuple[float, float] | None = None,
    ):
        super().__init__(n_users, n_items, bias_penalty=0.0)
        self.encoder = nn.Embedding(n_users, hidden)
        self.encoder_bias = nn.Parameter(torch.zeros(hidden))
        self.user_factors = nn.Embedding(n_users, hidden)
        self.user_bias = nn.Embedding(n_users, 1)
        with torch.no_grad():  # as nn.Linear layers of these shapes start
            self.encoder.weight.uniform_(-(n_users**-0.5), n_users**-0.5)
            self.user_factors.weight.uniform_(-(hidden**-0.5), hidden**-0.5)
            self.user_bias.weight.fill_(mean)
        # Detached: a buffer that kept the sigmoid's graph would tie every later use of the codes
        # (a fold-in's repeated backward passes) to this one.
        codes = torch.sigmoid(self.encoder_bias.detach()).repeat(n_items, 1)
        self.register_buffer("item_codes", codes)
        self.register_buffer("rating_offsets", torch.zeros(n_items + 1, dtype=torch.long), False)
        self.register_buffer("rating_users", torch.zeros(0, dtype=torch.long), False)
        self.register_buffer("rating_values", torch.zeros(0), False)
        self.y_range = (y_range[0], y_range[1]) if y_range is not None else None

    @property
    def item_factors(self) -> _Codes:  # type: ignore[override]  # a read-only view of the codes
        return _Codes(self)

    @property
    def has_ratings(self) -> bool:
        """Whether :meth:`set_ratings` gave the train ratings (a loaded model has only codes)."""
        return len(self.rating_users) > 0

    def set_ratings(self, user_idx: np.ndarray, item_idx: np.ndarray, ratings: np.ndarray) -> None:
        """Hold the train ratings the codes are computed from, by item (each item's column).

        Raises
        ------
        IndexError
            When an index is outside the model's tables.
        """
        users = torch.as_tensor(np.asarray(user_idx), dtype=torch.long)
        items = torch.as_tensor(np.asarray(item_idx), dtype=torch.long)
        self.check_indices(users, items)
        order = torch.argsort(items * self.n_users + users)
        device = self.item_codes.device
        counts = torch.bincount(items, minlength=self.n_items)
        self.rating_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(device)
        self.rating_users = users[order].to(device)
        self.rating_values = torch.as_tensor(np.asarray(ratings), dtype=torch.float32)[order].to(
            device
        )
        if not self.training:
            self.store_codes()

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """The codes of ``items`` from their train ratings under the current encoder."""
        starts = self.rating_offsets[items]
        lengths = self.rating_offsets[items + 1] - starts
        bag_starts = lengths.cumsum(0) - lengths
        # Position k of bag j is rating starts[j] + k: one gather for every bag's ratings.
        positions = torch.repeat_interleave(starts - bag_starts, lengths) + torch.arange(
            int(lengths.sum()), device=items.device
        )
        summed = functional.embedding_bag(
            self.rating_users[positions],
            self.encoder.weight,
            bag_starts,
            mode="sum",
            per_sample_weights=self.rating_values[positions],
        )
        return torch.sigmoid(summed + self.encoder_bias)

    @torch.no_grad()
    def store_codes(self, block: int = 4096) -> None:
        """Store every item's code under the current weights in ``item_codes``."""
        for start in range(0, self.n_items, block):
            items = torch.arange(
                start, min(start + block, self.n_items), device=self.item_codes.device
            )
            self.item_codes[items] = self.encode(items)

    def train(self, mode: bool = True) -> AutoRec:
        """Switching to eval mode stores the codes of the weights trained so far."""
        super().train(mode)
        if not mode and self.has_ratings:
            self.store_codes()
        return self

    def _clamp(self, scores: torch.Tensor) -> torch.Tensor:
        if self.y_range is None or self.training:
            return scores
        return scores.clamp(*self.y_range)

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        scores = (self.user_factors(user_idx) * self.item_factors(item_idx)).sum(dim=1)
        return self._clamp(scores + self.user_bias(user_idx).squeeze(1))

    def score_vectors(self, user_vectors, user_bias, item_idx):
        scores = user_vectors @ self.item_codes[item_idx].T
        if user_bias is not None:
            scores = scores + user_bias[:, None]
        return self._clamp(scores)

    def penalty(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, head_rows: int | None = None
    ) -> torch.Tensor:
        """``(|V|^2 + |W|^2)`` over the number of train ratings (see the class docstring)."""
        size = self.encoder.weight.pow(2).sum() + self.user_factors.weight.pow(2).sum()
        return size / max(len(self.rating_users), 1)

    def penalty_by_rows(self) -> bool:
        return False

    def cut_users(self) -> None:
        super().cut_users()
        self.encoder = nn.Embedding(1, self.encoder.embedding_dim)


class Blend(Ensemble):
    """The weighted mean of models of different kinds trained apart (``model.blend``).

    ``parts[0]`` is the main model (its :class:`~recspark.model.head.ListHead`, when it has
    one, gives the published lists: :func:`~recspark.model.lists.lists_model`), the others
    its partners. The parts' rows sit side by side as an ensemble's, so the blend scores through
    the same kernel, and each part keeps its own prediction (a sigmoid-scaled ``dot_bias``, a
    clamped autoencoder) before they are averaged with ``weights``.
    """

    weights: torch.Tensor  # a buffer: each part's weight in the prediction

    def __init__(self, parts: list[EmbeddingModel], weights: list[float]):
        if len(weights) != len(parts):
            raise ValueError(f"a blend of {len(parts)} parts needs as many weights, got {weights}")
        if any(weight < 0 for weight in weights) or not np.isclose(sum(weights), 1.0):
            raise ValueError(f"blend weights must be non-negative and sum to 1, got {weights}")
        super().__init__(parts)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), False)
        self.y_range = getattr(parts[0], "y_range", None)

    @property
    def main(self) -> EmbeddingModel:
        return self.models[0]

    @property
    def lists_members(self) -> list[EmbeddingModel]:
        return [self.main]

    def forward(
        self, user_idx: torch.Tensor, item_idx: torch.Tensor, *, members: bool = False
    ) -> torch.Tensor:
        each = torch.stack([part(user_idx, item_idx) for part in self.members])
        return each if members else self.weights @ each

    def score_vectors(self, user_vectors, user_bias, item_idx):
        each = torch.stack(list(self._member_scores(user_vectors, item_idx)))
        return torch.tensordot(self.weights, each, dims=1)

    def set_side_features(
        self, user: np.ndarray | None = None, item: np.ndarray | None = None
    ) -> None:
        self.main.set_side_features(user, item)

    def head_parameters(self) -> list[nn.Parameter]:
        return self.main.head_parameters()
