"""The model factory: :func:`build_model` builds every kind from its spec, the arguments a
published model stores (:class:`~recspark.model.published.ModelSpec`).

It sits above the kinds, not in :mod:`recspark.model.embedding` beside their base classes: the
kinds of other modules (:mod:`recspark.model.autorec`, :mod:`recspark.model.ease`) build on those
classes, and the factory builds them, so a factory in the base module would make the two import
each other.
"""

from __future__ import annotations

from recspark.core.choices import MODEL_KINDS
from recspark.core.errors import BadInputError
from recspark.model.autorec import AutoRec, Blend
from recspark.model.ease import EaseModel
from recspark.model.embedding import (
    DotBias,
    DotProduct,
    EmbeddingModel,
    EmbeddingNet,
    Ensemble,
    embedding_size,
)

#: Kinds an ensemble may average: their scores are one matrix product per member.
ENSEMBLE_KINDS = ("dot", "dot_bias")


def build_model(
    kind: str,
    n_users: int,
    n_items: int,
    factors: int = 32,
    y_range: tuple[float, float] | None = (1.0, 5.5),
    hidden: list[int] | None = None,
    dropouts: list[float] | None = None,
    embedding_dropout: float = 0.0,
    user_factors: int | None = None,
    item_factors: int | None = None,
    sparse: bool = False,
    user_features: int = 0,
    item_features: int = 0,
    bias_penalty: float = 1.0,
    members: int = 1,
    lists_head: bool = False,
    rating_mean: float = 0.0,
    parts: list[dict] | None = None,
    weights: list[float] | None = None,
) -> EmbeddingModel:
    """Build a model by name; table sizes come from the id maps, never from the batches.

    Parameters
    ----------
    kind
        ``dot``, ``dot_bias`` or ``mlp``; ``autorec``, ``ease`` and ``blend``
        (:mod:`recspark.model.autorec`, :mod:`recspark.model.ease`) as ``model.blend`` builds them.
    n_users, n_items
        Rows of the user and item tables.
    factors
        Embedding width of the dot models.
    y_range
        ``(low, high)`` of the sigmoid-scaled output (``dot_bias``, ``mlp``); None for raw scores.
    hidden, dropouts, embedding_dropout
        The ``mlp``'s layers, their dropout, and dropout on the concatenated embeddings.
    user_factors, item_factors
        The ``mlp``'s embedding widths; default to fastai's :func:`embedding_size`.
    sparse
        Embedding tables with sparse gradients (for the sparse optimizers).
    user_features, item_features
        Number of side features per user / item (0: none); their values are set afterwards with
        :meth:`EmbeddingModel.set_side_features`, or arrive with a state dict.
    bias_penalty
        Multiplier of ``train.weight_decay`` for bias rows.
    members
        Above 1: an :class:`Ensemble` of that many models of ``kind`` (``dot`` or ``dot_bias``).
    lists_head
        Give the model (every member) a :class:`~recspark.model.embedding.ListHead`, the ranking
        head its lists come from.
    rating_mean
        ``autorec``: where its user biases start.
    parts, weights
        ``blend``: the ``build_model`` arguments of each part (the main model first) and their
        weights in the prediction.
    """
    if n_users <= 0 or n_items <= 0:
        raise BadInputError(f"empty tables ({n_users} users, {n_items} items): prepare found no data")
    if user_features < 0 or item_features < 0:
        raise ValueError("user_features and item_features count features: they cannot be negative")
    extra = {
        "user_features": user_features,
        "item_features": item_features,
        "bias_penalty": bias_penalty,
    }
    if kind == "ease":
        return EaseModel(n_users, n_items)
    if kind in ("autorec", "blend"):
        if kind == "blend":
            return Blend([build_model(**part) for part in parts or []], list(weights or []))
        return AutoRec(n_users, n_items, factors, rating_mean, y_range)
    if members > 1:
        if kind not in ENSEMBLE_KINDS:
            raise ValueError(f"an ensemble averages {ENSEMBLE_KINDS} models, not {kind!r}")
        return Ensemble(
            [build_model(kind, n_users, n_items, factors, y_range, sparse=sparse,
                         lists_head=lists_head, **extra)
             for _ in range(members)]
        )
    model = _build_one(
        kind, n_users, n_items, factors, y_range, hidden, dropouts, embedding_dropout,
        user_factors, item_factors, sparse, extra,
    )
    if lists_head:
        model.add_lists_head(user_features, item_features)
    return model


def _build_one(
    kind, n_users, n_items, factors, y_range, hidden, dropouts, embedding_dropout,
    user_factors, item_factors, sparse, extra,
) -> EmbeddingModel:
    if kind == "dot":
        return DotProduct(n_users, n_items, factors, sparse, **extra)
    if kind == "dot_bias":
        return DotBias(n_users, n_items, factors, y_range, sparse, **extra)
    if kind == "mlp":
        hidden = list(hidden if hidden is not None else [64])
        return EmbeddingNet(
            n_users,
            n_items,
            user_factors or embedding_size(n_users),
            item_factors or embedding_size(n_items),
            hidden,
            list(dropouts if dropouts is not None else [0.0] * len(hidden)),
            embedding_dropout,
            y_range,
            sparse,
            **extra,
        )
    raise ValueError(f"unknown model kind {kind!r}; choose one of {MODEL_KINDS}")
