"""Fast ranking keys for the scoring kernel: a dot model's block by one matrix product, an MLP's
with its first layer split, each checked against the model's own ``score_vectors``.

Cost per block of ``u`` users over ``i`` items:

- ``dot`` / ``dot_bias`` (:class:`DotKeys`): one ``u x f`` by ``f x i`` matrix product
  (``u * i * f`` multiply-adds) and, for ``dot_bias``, one in-place addition of the item biases.
  The user bias and the sigmoid do not change the order within a user's row, so they are applied
  only to each user's ``k + 1`` candidates.
- ``mlp`` (:class:`SplitMLP`): the network runs over every (user, item) pair. The first layer acts
  on the concatenated embeddings, so it splits into a user part (``u x h1``, per block) and an
  item part (``i x h1``, once per worker); each pair then costs ``h1`` additions and the remaining
  layers (``h1*h2 + ... + h_last`` multiply-adds), in chunks that keep ``pairs x h1`` floats near
  :data:`MLP_PAIRS_PER_CHUNK`.

Each ``build`` returns None when its shortcut does not reproduce the model's scores (a changed
network, user rows of another width), so the kernel falls back to the model's own code.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from recspark.model.base import EmbeddingModel, scale_to_range
from recspark.serve.topk import Finish

#: (user, item) pairs per chunk when the MLP runs over a block; bounds memory to ~pairs x h1 floats.
MLP_PAIRS_PER_CHUNK = 1 << 18


def table(model: nn.Module, name: str) -> nn.Embedding:
    """The model's embedding table ``name`` (``user_factors``, ``item_bias``, ...), typed: torch's
    ``Module.__getattr__`` gives ``Tensor | Module``."""
    return cast(nn.Embedding, getattr(model, name))


def layers(model: nn.Module) -> nn.Sequential:
    """An MLP's layers after the embeddings (``EmbeddingNet.layers``), typed."""
    return cast(nn.Sequential, model.layers)


class DotKeys:
    """A dot model's block as ranking keys, finished into scores for the chosen items only.

    ``dot_bias`` scores are ``scale(q . p + b_i + b_u)`` with a non-decreasing ``scale`` (the
    sigmoid into ``y_range``); ``b_u`` is the same along a user's row, so ranking by
    ``q . p + b_i`` (one matrix product and one in-place addition) ranks by score, and the bias
    and sigmoid are applied to the ``k + 1`` candidates per user instead of to every item. The item
    rows are gathered once per worker. :meth:`build` checks on a probe that finishing the whole
    block gives the model's own ``score_vectors`` bit for bit, and returns None otherwise, so the
    kernel falls back to the model's code.
    """

    def __init__(self, model: EmbeddingModel):
        item_factors = table(model, "item_factors")
        items = torch.arange(model.n_items, device=item_factors.weight.device)
        self.item_matrix = item_factors(items).detach()
        biased = hasattr(model, "item_bias") and hasattr(model, "user_bias")
        self.item_bias = table(model, "item_bias")(items).T.detach() if biased else None
        self.y_range: tuple[float, float] | None = (
            getattr(model, "y_range", None) if biased else None
        )

    @classmethod
    def build(cls, model: EmbeddingModel) -> DotKeys | None:
        with torch.no_grad():
            fast = cls(model)
            device = fast.item_matrix.device
            width = fast.item_matrix.shape[1]
            if table(model, "user_factors").embedding_dim != width:
                return None  # user rows of another width (a blend's): only the model's code
            users = torch.linspace(-1.5, 1.5, 4 * width, device=device).view(4, width)
            bias = torch.linspace(-0.5, 0.5, 4, device=device)
            expected = model.score_vectors(users, bias, torch.arange(model.n_items, device=device))
            keys, finish = fast.keys(users), fast.finisher(bias)
            got = keys if finish is None else finish(keys, torch.arange(4, device=device))
            return fast if torch.equal(got, expected.float()) else None

    def keys(self, user_vectors: torch.Tensor) -> torch.Tensor:
        raw = user_vectors @ self.item_matrix.T
        if self.item_bias is not None:
            raw.add_(self.item_bias)
        return raw

    def finisher(self, user_bias: torch.Tensor | None) -> Finish | None:
        if self.item_bias is None:
            return None
        y_range = self.y_range

        def finish(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            # The model's own operations in its order: (raw + b_i) + b_u, then the scaling.
            raw = values + user_bias[rows, None] if user_bias is not None else values
            if y_range is None:
                return raw
            return torch.where(torch.isneginf(values), values, scale_to_range(raw, y_range))

        return finish


class SplitMLP:
    """An EmbeddingNet's pair scores with its first layer split into user and item halves.

    ``W [u; i] + b = W_u u + (W_i i + b)``: the item half is computed once, the user half once per
    block, and only the layers after the first run per pair. :meth:`build` checks the split against
    the model's own ``score_vectors`` and returns None when they disagree (a changed network), so
    the kernel falls back to the model's own code.
    """

    def __init__(self, model: EmbeddingModel):
        first = cast(nn.Linear, layers(model)[0])
        width = table(model, "user_factors").embedding_dim
        self.user_weight = first.weight[:, :width]
        item_weight = table(model, "item_factors").weight
        self.item_hidden = item_weight @ first.weight[:, width:].T + first.bias
        self.rest = layers(model)[1:]
        self.y_range: tuple[float, float] | None = getattr(model, "y_range", None)

    @classmethod
    def build(cls, model: EmbeddingModel) -> SplitMLP | None:
        if not isinstance(layers(model)[0], nn.Linear):
            return None
        with torch.no_grad():
            split = cls(model)
            device = table(model, "item_factors").weight.device
            items = torch.arange(min(model.n_items, 64), device=device)
            probe = torch.linspace(-0.05, 0.05, 3 * table(model, "user_factors").embedding_dim)
            users = probe.view(3, -1).to(items.device)
            expected = model.score_vectors(users, None, items).float()
            got = split(users)[:, : len(items)]
        return split if torch.allclose(got, expected, rtol=1e-4, atol=1e-5) else None

    def __call__(self, user_vectors: torch.Tensor) -> torch.Tensor:
        user_hidden = user_vectors @ self.user_weight.T
        items = self.item_hidden.shape[0]
        step = max(1, MLP_PAIRS_PER_CHUNK // max(1, items))
        blocks = []
        for start in range(0, len(user_hidden), step):
            pairs = user_hidden[start : start + step, None, :] + self.item_hidden[None, :, :]
            raw = scale_to_range(self.rest(pairs).squeeze(-1), self.y_range)
            blocks.append(raw.float())
        return torch.cat(blocks) if blocks else user_hidden.new_zeros((0, items))
