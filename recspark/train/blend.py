"""``model.blend``: a partner fitted beside the trained main model and averaged into it.

The partner reads the train split in this process (pyarrow, 12 bytes a rating): an autoencoder
(``kind: autorec``) trains with its own settings (``model.blend.*``) and the rating objective,
early stopping keeping its best epoch; EASE (``kind: ease``) is solved in closed form from the
train positives. :func:`fit_blend` returns the published :class:`~recspark.model.autorec.Blend`,
its spec and what the blend measured (``metrics.json``'s ``blend``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import numpy as np
import torch

from recspark.core.config import BlendConfig, RankingConfig, TrainConfig
from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.core.location import Location
from recspark.core.storage import read_parquet
from recspark.core.torch_utils import resolve_device
from recspark.data.prepared import PreparedRun
from recspark.model.autorec import AutoRec, Blend
from recspark.model.base import EmbeddingModel
from recspark.model.ease import EaseModel
from recspark.model.spec import AutoRecSpec, BlendSpec, EaseSpec, ModelSpec
from recspark.train.loop import fit, init_model
from recspark.train.objectives import for_name
from recspark.train.objectives.ranking import RankingSettings
from recspark.train.publication_gate import ValidationScores
from recspark.train.records import validation_fields
from recspark.train.spec import train_settings
from recspark.train.validation import evaluate_split


class BlendFit(NamedTuple):
    """What :func:`fit_blend` gives: the published model, its spec and what the blend measured."""

    model: EmbeddingModel
    spec: BlendSpec
    best: ValidationScores  # the main model's loss, the blend's other figures
    metrics: dict[str, Any]  # metrics.json's ``blend``, written as it is


class _Partner(NamedTuple):
    model: EmbeddingModel
    spec: ModelSpec
    figures: dict[str, Any]  # what fitting it measured, for metrics.json's ``blend``


def fit_blend(
    blend: BlendConfig,
    train: TrainConfig,
    ranking: RankingConfig,
    *,
    main: EmbeddingModel,
    main_spec: ModelSpec,
    manifest: PreparedRun,
    prepared: Location,
    best: ValidationScores,
) -> BlendFit:
    """Fit ``model.blend``'s partner and average it into ``main`` (trained, on the CPU).

    ``best`` is the main model's best figures: the returned ones keep its loss (its
    objective's, which publication checks) and take the blend's other validation figures (RMSE
    and MAE of a rating blend, the sampled AUC of a ranking one).
    """
    started = time.perf_counter()
    table = read_parquet(prepared / "train", columns=[USER_IDX, ITEM_IDX, RATING])
    columns = [table.column(name).to_numpy() for name in (USER_IDX, ITEM_IDX, RATING)]
    del table
    device = resolve_device(train.device)
    if blend.kind == "ease":
        partner = _fit_ease(blend, train, ranking, manifest, columns)
        objective = for_name(
            "ranking",
            ranking=RankingSettings(**ranking.model_dump()),
            item_counts=partner.figures.pop("item_counts"),
        )
    else:
        partner = _fit_autorec(
            blend, train, manifest=manifest, prepared=prepared, columns=columns, device=device
        )
        objective = for_name("rating")
    del columns
    weight = blend.share
    spec = BlendSpec(
        n_users=manifest.users,
        n_items=manifest.items,
        factors=getattr(main_spec, "factors", 32),  # what reports show; each part builds its own
        parts=(main_spec, partner.spec),
        weights=(1.0 - weight, weight),
        lists_head=main_spec.carries_lists_head,
        given=frozenset({"factors", "parts", "weights"})
        | ({"lists_head"} if main_spec.carries_lists_head else set()),
    )
    model = Blend([main, partner.model], list(spec.weights))
    measured = validation_fields(
        evaluate_split(
            model,
            str(prepared / "validation"),
            device,
            objective,
            precision=train.precision,
            feed=train.feed,
        )
    )
    model.cpu()
    figures = ValidationScores.from_fields(measured)
    metrics = {
        "kind": blend.kind,
        "weight": weight,
        **{f"main_{name}": value for name, value in best.measured()},
        **{name: value for name, value in figures.measured() if name != "validation_loss"},
        **partner.figures,
        "partner_seconds": time.perf_counter() - started,
    }
    return BlendFit(model, spec, best.with_figures_of(figures), metrics)


def _fit_ease(
    blend: BlendConfig,
    train: TrainConfig,
    ranking: RankingConfig,
    manifest: PreparedRun,
    columns: list[np.ndarray],
) -> _Partner:
    """``model.blend.kind: ease``: EASE solved from the train positives; its figures carry the
    positives per item (``item_counts``) for the blend's ranking objective."""
    spec = EaseSpec(n_users=manifest.users, n_items=manifest.items)
    partner = init_model(spec.as_dict(), train.seed)
    assert isinstance(partner, EaseModel)
    users, items, ratings = columns
    positive = ratings >= ranking.positive_threshold
    partner.fit(users[positive], items[positive], blend.regularization)
    counts = np.bincount(items[positive], minlength=manifest.items).astype(np.float64)
    return _Partner(partner, spec, {"regularization": blend.regularization, "item_counts": counts})


def _fit_autorec(
    blend: BlendConfig,
    train: TrainConfig,
    *,
    manifest: PreparedRun,
    prepared: Location,
    columns: list[np.ndarray],
    device: torch.device,
) -> _Partner:
    """``model.blend.kind: autorec``: the autoencoder trained on ``columns`` (users, items and
    ratings of the train split); its spec and what its training measured."""
    mean = manifest.rating.mean
    low, high = manifest.rating_range
    spec = AutoRecSpec(
        n_users=manifest.users,
        n_items=manifest.items,
        factors=blend.hidden,
        rating_mean=mean if mean is not None else sum(manifest.rating_range) / 2,
        y_range=(low, high),
        given=frozenset({"factors", "rating_mean", "y_range"}),
    )
    partner = init_model(spec.as_dict(), train.seed)
    assert isinstance(partner, AutoRec)
    partner.set_ratings(*columns)
    settings = dataclasses.replace(
        train_settings(train),
        epochs=blend.epochs,
        batch_size=blend.batch_size,
        lr=blend.lr,
        weight_decay=blend.weight_decay,
        optimizer_weight_decay=0.0,
        optimizer="adam",
        schedule="constant",
        patience=blend.patience,
        head_lr_scale=1.0,
    )
    result = fit(
        partner,
        str(prepared / "train"),
        str(prepared / "validation"),
        settings,
        device,
        objective=for_name("rating"),
    )
    partner.cpu()
    partner_best = result.history[result.best_epoch - 1] if result.best_epoch else None
    figures = {
        "partner_validation_rmse": partner_best.validation_rmse if partner_best else None,
        "partner_best_epoch": result.best_epoch,
        "partner_epochs": len(result.history),
        "history": [record.published() for record in result.history],
    }
    return _Partner(partner, spec, figures)
