"""The model registry: :func:`build_model`, the one factory, builds every kind from its
:class:`~recspark.model.spec.ModelSpec` through :data:`BUILDERS`, a table of kind -> builder.

Adding a kind is a spec case (:mod:`recspark.model.spec`) and one row here. The registry sits above
the kinds, never in a base module they import: the kinds (:mod:`recspark.model.mf`,
:mod:`recspark.model.autorec`, ...) build on the base classes, and the factory builds the kinds, so
a factory beside the base classes would make the two import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recspark.core.choices import BUILT_MODEL_KINDS
from recspark.core.errors import BadInputError
from recspark.model.autorec import AutoRec, Blend
from recspark.model.base import EmbeddingModel
from recspark.model.ease import EaseModel
from recspark.model.ensemble import Ensemble
from recspark.model.mf import DotBias, DotProduct
from recspark.model.mlp import EmbeddingNet
from recspark.model.spec import (
    AutoRecSpec,
    BlendSpec,
    FactorSpec,
    ModelSpec,
)
from recspark.model.tables import embedding_size


def _features(spec: FactorSpec) -> dict[str, Any]:
    return {
        "user_features": spec.user_features,
        "item_features": spec.item_features,
        "bias_penalty": spec.bias_penalty,
    }


def _dot(spec: ModelSpec) -> EmbeddingModel:
    assert isinstance(spec, FactorSpec)
    return DotProduct(
        spec.n_users, spec.n_items, spec.factors, sparse=spec.sparse, **_features(spec)
    )


def _dot_bias(spec: ModelSpec) -> EmbeddingModel:
    assert isinstance(spec, FactorSpec)
    return DotBias(
        spec.n_users,
        spec.n_items,
        spec.factors,
        spec.y_range,
        sparse=spec.sparse,
        **_features(spec),
    )


def _mlp(spec: ModelSpec) -> EmbeddingModel:
    assert isinstance(spec, FactorSpec)
    return EmbeddingNet(
        spec.n_users,
        spec.n_items,
        spec.user_factors or embedding_size(spec.n_users),
        spec.item_factors or embedding_size(spec.n_items),
        list(spec.hidden),
        list(spec.layer_dropouts),
        embedding_dropout=spec.embedding_dropout,
        y_range=spec.y_range,
        sparse=spec.sparse,
        **_features(spec),
    )


def _autorec(spec: ModelSpec) -> EmbeddingModel:
    assert isinstance(spec, AutoRecSpec)
    return AutoRec(spec.n_users, spec.n_items, spec.factors, spec.rating_mean, spec.y_range)


def _ease(spec: ModelSpec) -> EmbeddingModel:
    return EaseModel(spec.n_users, spec.n_items)


def _blend(spec: ModelSpec) -> EmbeddingModel:
    assert isinstance(spec, BlendSpec)
    return Blend([build_model(part) for part in spec.parts], list(spec.weights))


#: Kind -> the function that builds one model of it (ensembles and heads are added around it).
BUILDERS: dict[str, Callable[[ModelSpec], EmbeddingModel]] = {
    "dot": _dot,
    "dot_bias": _dot_bias,
    "mlp": _mlp,
    "autorec": _autorec,
    "ease": _ease,
    "blend": _blend,
}
assert set(BUILDERS) == set(BUILT_MODEL_KINDS), "the registry builds what choices names"


def build_model(spec: ModelSpec) -> EmbeddingModel:
    """Build the model ``spec`` describes; table sizes come from the id maps, never the batches.

    Parameters
    ----------
    spec
        A :class:`~recspark.model.spec.ModelSpec`: from the config
        (:func:`recspark.train.spec.model_spec`), from a stored ``model.pt``
        (:func:`~recspark.model.spec.spec_from_dict`), or made by hand
        (:func:`~recspark.model.spec.make_spec`).

    Raises
    ------
    BadInputError
        For empty tables (prepare found no data).
    ValueError
        For an unknown kind, an argument its kind does not take, or an impossible shape.
    """
    if spec.n_users <= 0 or spec.n_items <= 0:
        raise BadInputError(
            f"empty tables ({spec.n_users} users, {spec.n_items} items): prepare found no data"
        )
    if isinstance(spec, FactorSpec) and spec.members > 1:
        single = spec.replace(members=1)
        return Ensemble([build_model(single) for _ in range(spec.members)])
    model = BUILDERS[spec.kind](spec)
    if isinstance(spec, FactorSpec) and spec.lists_head:
        model.add_lists_head(spec.user_features, spec.item_features)
    return model
