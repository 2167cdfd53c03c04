"""What a trained run publishes under ``models/RUN_DATE`` (:func:`publish_model`): ``model.pt``
(state dict, spec and :func:`model_meta`, which records the id maps it was trained on),
``user_factors/`` and ``item_factors/`` (Parquet: index, bias, factors; a ranking head's lists
model's under ``lists/``), ``metrics.json`` (:func:`training_metrics`, with every epoch's
figures) and ``loss.png``, written to a staging folder and moved into place at once.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from recspark.core.config import TrainConfig
from recspark.core.constants import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.core.plots import loss_curve
from recspark.core.storage import Layout, file_digest, staged, write_json
from recspark.data.prepared import PreparedRun
from recspark.model.base import EmbeddingModel
from recspark.model.lists import lists_model
from recspark.model.published import LISTS_FOLDER, ModelMeta, index_fingerprint, save_model
from recspark.model.saving import MODEL_FILE, raw_ids, write_factor_tables
from recspark.model.spec import ModelSpec
from recspark.train.phases import PhaseClock
from recspark.train.precision import resolve_precision
from recspark.train.publication_gate import ValidationScores
from recspark.train.records import FitResult
from recspark.train.warm import Carried

# The train command's summary line: these keys of metrics.json.
SUMMARY_METRICS = (
    "validation_rmse",
    "validation_mae",
    "validation_auc",
    "validation_loss",
    "epochs",
    "best_epoch",
    "stopped_early",
    "rows_per_second",
    "device",
    "devices",
    "precision",
    "num_processes",
    "model_version",
    "warm_start_from",
    "seconds_by_phase",
)


@dataclass(frozen=True)
class TrainedModel:
    """A finished run, as publication reads it.

    ``model`` is on the CPU holding its best weights; ``best`` its best epoch's figures (a
    blend's: see :func:`~recspark.train.blend.fit_blend`); ``blend`` what a blend measured,
    written as ``metrics.json``'s ``blend``; ``loss_name`` the objective's loss, for the curve.
    """

    model: EmbeddingModel
    spec: ModelSpec
    result: FitResult
    best: ValidationScores
    carried: Carried
    device: torch.device
    seconds: float
    loss_name: str
    blend: dict[str, Any] | None = None


class Published(NamedTuple):
    """Where :func:`publish_model` wrote (output name -> path) and the metrics it wrote."""

    outputs: dict[str, str]
    metrics: dict[str, Any]


def model_meta(
    run_date: dt.date | str,
    objective: str,
    trained: TrainedModel,
    manifest: PreparedRun,
    lists_rating_weight: float | None,
) -> ModelMeta:
    """The facts stored beside the weights in ``model.pt``, with the id maps it was trained on;
    ``lists_rating_weight`` for a model with a ranking head."""
    meta: dict[str, Any] = {
        "run_date": str(run_date),
        "index_date": str(run_date),
        "index_fingerprint": index_fingerprint(manifest),
        "objective": objective,
        "best_epoch": trained.result.best_epoch,
        "warm_start_from": trained.carried.source,
    }
    if lists_rating_weight is not None:
        meta["lists_rating_weight"] = lists_rating_weight
    return ModelMeta.model_validate(meta)


def training_metrics(
    train: TrainConfig, trained: TrainedModel, model_version: str
) -> dict[str, Any]:
    """``metrics.json``: the best epoch's figures, the run's facts and every epoch's record.

    A ranking model reports a ``validation_auc`` and no ``validation_rmse`` or
    ``validation_mae``: its loss is not an error of ratings it never predicted.
    """
    result = trained.result
    history = [record.published() for record in result.history]
    devices = result.devices or [str(trained.device)]
    # Epochs run before a resume were timed by the killed run; rows/s counts this run's only.
    fresh = [r for r in result.history if r.epoch > result.resumed_from_epoch]
    rows_trained = sum(r.rows for r in fresh)
    train_seconds = sum(r.seconds for r in fresh)
    return {
        "model_version": model_version,
        "validation_rmse": trained.best.validation_rmse,
        "validation_mae": trained.best.validation_mae,
        "validation_auc": trained.best.validation_auc,
        "validation_loss": trained.best.validation_loss,
        "epochs": len(history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "rows_per_second": rows_trained / train_seconds if train_seconds else None,
        "train_seconds": trained.seconds,
        "device": str(trained.device),
        # Where the processes trained (data-parallel runs decide it in each process).
        "devices": devices,
        # What train.precision meant where the processes trained (auto: tf32 on CUDA, else fp32).
        "precision": resolve_precision(train.precision, devices[0]),
        "num_processes": train.num_processes,
        "warm_start_from": trained.carried.source,
        "carried_users": trained.carried.users,
        "carried_items": trained.carried.items,
        "history": history,
        "spec": trained.spec.as_dict(),
        "train": train.model_dump(),
    }


def publish_model(
    layout: Layout,
    trained: TrainedModel,
    train: TrainConfig,
    *,
    run_date: dt.date | str,
    objective: str,
    manifest: PreparedRun,
    lists_rating_weight: float | None = None,
    clock: PhaseClock | None = None,
) -> Published:
    """Write ``models/RUN_DATE`` atomically: the model, its factor tables, metrics and curve.

    ``manifest`` is the prepared run it was trained on; ``objective`` ``model.objective``;
    ``lists_rating_weight`` (``lists.rating_weight``) for a model with a ranking head, whose
    lists model's tables go under ``lists/``. ``clock`` holds the run's seconds by phase
    (:mod:`recspark.train.phases`): the writing is added to it, and ``metrics.json`` reports it as
    ``seconds_by_phase`` (all but the writing of ``metrics.json`` itself).
    """
    clock = clock or PhaseClock()
    writing = time.perf_counter()
    prepared = layout.prepared(run_date)
    final = layout.model(run_date)
    spec, model = trained.spec, trained.model
    meta = model_meta(run_date, objective, trained, manifest, lists_rating_weight)
    with staged(layout, final, f"model-{run_date}") as folder:
        save_model(folder / MODEL_FILE, model, spec, meta)
        model_version = f"{run_date}-{spec.kind}-{file_digest(folder / MODEL_FILE, 10)}"
        user_ids = raw_ids(prepared / "user_index", USER_ID, USER_IDX, spec.n_users)
        item_ids = raw_ids(prepared / "item_index", ITEM_ID, ITEM_IDX, spec.n_items)
        names = {name: name for name in write_factor_tables(model, folder, user_ids, item_ids)}
        if spec.carries_lists_head:
            # What score, evaluate and recommend rank by (PublishedModel.lists).
            lists, _ = lists_model(model, lists_rating_weight or 0.0)
            for name in write_factor_tables(lists, folder / LISTS_FOLDER, user_ids, item_ids):
                names[f"lists_{name}"] = f"{LISTS_FOLDER}/{name}"
        history = trained.result.history
        if history:
            loss_curve(
                [r.epoch for r in history],
                [r.train_loss for r in history],
                [r.validation_loss for r in history],
                folder / "loss.png",
                trained.loss_name,
            )
        metrics = training_metrics(train, trained, model_version)
        if trained.blend is not None:
            metrics["blend"] = trained.blend
        clock.add("write", time.perf_counter() - writing)
        metrics["seconds_by_phase"] = clock.report()
        write_json(folder / "metrics.json", metrics)
    outputs = {name: str(final / relative) for name, relative in names.items()}
    outputs.update(model=str(final / MODEL_FILE), metrics=str(final / "metrics.json"))
    if history:
        outputs["loss_curve"] = str(final / "loss.png")
    return Published(outputs, metrics)
