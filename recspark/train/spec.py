"""What a training run builds and how its loop is set: the :class:`~recspark.model.spec.ModelSpec`
from ``model.*`` and the prepared tables (:func:`model_spec`), the side features aligned with the
id maps (:func:`side_features`) and the loop's settings from ``train.*`` (:func:`train_settings`).

Table sizes come from the prepared manifest (the id maps), never from the batches.
"""

from __future__ import annotations

import dataclasses

from recspark.core.config import ListsConfig, ModelConfig, TrainConfig, carries_lists_head
from recspark.core.location import Location
from recspark.data.prepared import PreparedRun
from recspark.data.side_info import SideFeatures, load_side_features
from recspark.model.spec import ModelSpec
from recspark.train.loop import TrainSettings
from recspark.train.optim import is_sparse_optimizer

#: The ``model_spec`` keys every trained spec stores, as older versions stored them.
_STORED = (
    "factors",
    "y_range",
    "hidden",
    "dropouts",
    "embedding_dropout",
    "user_factors",
    "item_factors",
    "bias_penalty",
    "members",
)


def model_spec(
    model: ModelConfig,
    train: TrainConfig,
    lists: ListsConfig,
    manifest: PreparedRun,
    prepared: Location | None = None,
) -> ModelSpec:
    """The spec of the model ``model.*`` describes for these tables (``train.optimizer`` decides
    sparse gradients, ``lists.source`` a ranking head).

    The seam where model kinds that need more than ids (side information read from ``prepared``)
    add their arguments; the spec is stored in ``model.pt`` and rebuilds the model on its own.
    """
    low, high = manifest.rating_range
    y_range: list[float] | None = list(model.y_range) if model.y_range else [low, high + 0.5]
    if model.objective == "ranking":
        y_range = None  # ranking models train and score on raw, unbounded scores
    shape = model.shape()
    arguments = {
        "kind": model.kind,
        "n_users": manifest.users,
        "n_items": manifest.items,
        **{name: getattr(shape, name) for name in _STORED},
        "y_range": y_range,
        "sparse": is_sparse_optimizer(train.optimizer),
        **side_features(model, manifest, prepared).spec(),
        **({"lists_head": True} if carries_lists_head(model, lists) else {}),
    }
    return ModelSpec.from_stored(arguments)


def side_features(
    model: ModelConfig, manifest: PreparedRun, prepared: Location | None
) -> SideFeatures:
    """``model.side_info``'s features aligned with the prepared id maps (none when unset)."""
    side = model.side_info
    if side is None:
        return SideFeatures(user=None, item=None)
    if prepared is None:
        raise ValueError("model.side_info needs the prepared run's id maps: pass `prepared`")
    return load_side_features(
        side.format,
        side.path,
        prepared,
        n_users=manifest.users,
        n_items=manifest.items,
        users=side.users,
        items=side.items,
    )


def train_settings(train: TrainConfig, head_lr_scale: float | None = None) -> TrainSettings:
    """The loop's settings picked out of ``train.*``; ``head_lr_scale`` (``lists.head_lr_scale``)
    for a model with a ranking head."""
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    settings = {k: v for k, v in train.model_dump().items() if k in fields}
    if head_lr_scale is not None:
        settings["head_lr_scale"] = head_lr_scale
    return TrainSettings(**settings)
