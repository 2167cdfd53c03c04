"""The train job's logic: from a prepared run to a published model under ``models/RUN_DATE``.

Table sizes come from the prepared manifest (the id maps), never from the batches
(:func:`model_spec`). The objective is built from ``model.objective`` and ``ranking.*``
(:func:`build_objective`); :func:`run_fit` trains in this process, or data-parallel through
TorchDistributor when ``train.num_processes > 1`` (:mod:`recspark.train.distributed`). Every epoch
is checkpointed under ``_checkpoints/RUN_DATE``, guarded by :func:`run_fingerprint`;
``train.warm_start`` starts from the last published model before the run date
(:func:`warm_start`), once its id maps are checked. A run that did not learn is not published
(:func:`publication_refusal`): its best validation loss must beat that of its own starting weights
(:func:`starting_figures`), and a rating model's validation RMSE that of predicting the train mean
(:func:`global_mean_rmse`), unless ``train.allow_worse``. :func:`publish_model` writes ``model.pt``
(state dict, spec and :func:`model_meta`, which records the id maps it was trained on),
``user_factors/`` and ``item_factors/`` (Parquet: index, bias, factors), ``metrics.json``
(:func:`training_metrics`, with every epoch's figures) and ``loss.png``. The command
(:mod:`recspark.commands.train`) only wires these together.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow.dataset as pads
import torch

from recspark.core.config import Config
from recspark.core.constants import ITEM_ID, ITEM_IDX, RATING, USER_ID, USER_IDX
from recspark.core.errors import BadInputError
from recspark.core.location import Location
from recspark.core.plots import loss_curve
from recspark.core.storage import (
    Layout,
    file_digest,
    latest_date,
    read_parquet,
    staged,
    write_json,
)
from recspark.core.torch_utils import resolve_device
from recspark.data.prepared import PreparedRun
from recspark.data.side_info import SideFeatures, load_side_features
from recspark.model.autorec import Blend
from recspark.model.base import EmbeddingModel
from recspark.model.lists import lists_model
from recspark.model.published import (
    LISTS_FOLDER,
    check_id_maps,
    index_fingerprint,
    load_published_model,
    save_model,
)
from recspark.model.saving import (
    MODEL_FILE,
    carry_weights,
    raw_ids,
    write_factor_tables,
)
from recspark.train.feeding import row_groups
from recspark.train.loop import (
    VALIDATION_FIELDS,
    FitResult,
    TrainSettings,
    evaluate_split,
    fit,
    init_model,
    settings_fingerprint,
    validation_fields,
)
from recspark.train.objectives import for_name
from recspark.train.objectives.base import Objective, RunContext
from recspark.train.objectives.joint import JointObjective
from recspark.train.objectives.ranking import RankingSettings, item_popularity
from recspark.train.optim import is_sparse_optimizer
from recspark.train.precision import resolve_precision

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# train.* keys that do not change what a run computes, so a resumed run may differ in them.
_NOT_IN_FINGERPRINT = {"resume", "device", "reader_workers", "cpu_threads", "allow_worse"}
# How much lower a validation loss must be to count as an improvement (as in the loop).
IMPROVEMENT = 1e-7
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
)


def model_spec(
    config: Config, manifest: PreparedRun, prepared: Path | None = None
) -> dict[str, Any]:
    """Arguments of :func:`recspark.model.registry.build_model` for this config and these tables.

    The seam where model kinds that need more than ids (side information read from ``prepared``)
    add their arguments; the spec is stored in ``model.pt`` and rebuilds the model on its own.
    """
    low, high = manifest.rating_range
    y_range = list(config.model.y_range) if config.model.y_range else [low, high + 0.5]
    if config.model.objective == "ranking":
        y_range = None  # ranking models train and score on raw, unbounded scores
    return {
        "kind": config.model.kind,
        "n_users": manifest.users,
        "n_items": manifest.items,
        "factors": config.model.factors,
        "y_range": y_range,
        "hidden": list(config.model.hidden),
        "dropouts": list(config.model.dropouts),
        "embedding_dropout": config.model.embedding_dropout,
        "user_factors": config.model.user_factors,
        "item_factors": config.model.item_factors,
        "sparse": is_sparse_optimizer(config.train.optimizer),
        "bias_penalty": config.model.bias_penalty,
        "members": config.model.ensemble,
        **side_features(config, manifest, prepared).spec(),
        **({"lists_head": True} if config.lists_head else {}),
    }


def side_features(config: Config, manifest: PreparedRun, prepared: Path | None) -> SideFeatures:
    """``model.side_info``'s features aligned with the prepared id maps (none when unset)."""
    side = config.model.side_info
    if side is None:
        return SideFeatures(user=None, item=None)
    if prepared is None:
        raise ValueError("model.side_info needs the prepared run's id maps: pass `prepared`")
    return load_side_features(
        side.format,
        side.path,
        prepared,
        manifest.users,
        manifest.items,
        side.users,
        side.items,
    )


def train_settings(config: Config) -> TrainSettings:
    """The loop's settings picked out of ``train.*``."""
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    settings = {k: v for k, v in config.train.model_dump().items() if k in fields}
    if config.lists_head:
        settings["head_lr_scale"] = config.lists.head_lr_scale
    return TrainSettings(**settings)


def build_objective(
    config: Config, manifest: PreparedRun, spark: SparkSession | None = None
) -> Objective:
    """The objective ``model.objective`` names, with its settings.

    For ``ranking``: ``ranking.*`` and, when negatives follow popularity, the positives per item
    of the train split (one Spark aggregate; needs ``spark``). A rating model with a ranking head
    (``lists.source: head``) gets the :class:`JointObjective`, whose head takes every train row
    as a positive.
    """
    if config.model.objective != "ranking" and not config.lists_head:
        return for_name(config.model.objective)
    settings = RankingSettings(**config.ranking.model_dump())
    if config.lists_head:
        settings = dataclasses.replace(settings, positive_threshold=0.0, confidence="none")
    counts = None
    if spark is not None and settings.sampling_alpha > 0:
        prepared = Layout(config.paths.root).prepared(config.run_date)
        train = spark.read.parquet(str(prepared / "train"))
        counts = item_popularity(train, manifest.items, settings.positive_threshold)
    ranking = for_name("ranking", ranking=settings, item_counts=counts)
    if config.lists_head:
        return JointObjective(ranking, config.lists.head_weight, config.lists.head_rows)
    return ranking


class BlendFit(NamedTuple):
    """What :func:`fit_blend` gives: the published model, its spec and what the blend measured."""

    model: EmbeddingModel
    spec: dict[str, Any]
    best: dict[str, float | None]  # the main model's figures, rating ones of the blend
    metrics: dict[str, Any]  # metrics.json's ``blend``


def fit_blend(
    config: Config,
    main: EmbeddingModel,
    main_spec: dict[str, Any],
    manifest: PreparedRun,
    prepared: Path,
    best: dict[str, float | None],
) -> BlendFit:
    """Fit ``model.blend``'s partner and average it into ``main`` (trained, on the CPU).

    The partner reads the train split in this process (pyarrow, 12 bytes a rating): an
    autoencoder (``kind: autorec``) trains with its own settings (``model.blend.*``) and the
    rating objective, early stopping keeping its best epoch; EASE (``kind: ease``) is solved in
    closed form from the train positives. ``best`` is the main model's :func:`best_figures`: the
    returned ones keep its loss (its objective's, which publication checks) and take the blend's
    other validation figures (RMSE and MAE of a rating blend, the sampled AUC of a ranking one).
    """
    blend = config.model.blend
    started = time.perf_counter()
    table = read_parquet(prepared / "train", columns=[USER_IDX, ITEM_IDX, RATING])
    columns = [table.column(name).to_numpy() for name in (USER_IDX, ITEM_IDX, RATING)]
    del table
    device = resolve_device(config.train.device)
    if blend.kind == "ease":
        partner_spec = {"kind": "ease", "n_users": manifest.users, "n_items": manifest.items}
        partner = init_model(partner_spec, config.train.seed)
        users, items, ratings = columns
        positive = ratings >= config.ranking.positive_threshold
        partner.fit(users[positive], items[positive], blend.regularization)
        objective = for_name(
            "ranking",
            ranking=RankingSettings(**config.ranking.model_dump()),
            item_counts=np.bincount(items[positive], minlength=manifest.items).astype(np.float64),
        )
        partner_figures = {"regularization": blend.regularization}
    else:
        partner, partner_spec, partner_figures = _fit_autorec(config, manifest, prepared, columns,
                                                              device)
        objective = for_name("rating")
    del columns
    weight = blend.share
    spec = {
        "kind": "blend",
        "n_users": manifest.users,
        "n_items": manifest.items,
        "factors": main_spec["factors"],  # what reports show; each part builds its own
        "parts": [main_spec, partner_spec],
        "weights": [1.0 - weight, weight],
        **({"lists_head": True} if main_spec.get("lists_head") else {}),
    }
    model = Blend([main, partner], spec["weights"])
    figures = validation_fields(
        evaluate_split(model, str(prepared / "validation"), device, objective,
                       precision=config.train.precision, feed=config.train.feed)
    )
    model.cpu()
    metrics = {
        "kind": blend.kind,
        "weight": weight,
        **{f"main_{name}": best[name] for name in VALIDATION_FIELDS
           if best.get(name) is not None},
        **{name: figures[name] for name in VALIDATION_FIELDS
           if name != "validation_loss" and figures[name] is not None},
        **partner_figures,
        "partner_seconds": time.perf_counter() - started,
    }
    best = {**best, **{name: value for name, value in figures.items()
                       if name != "validation_loss" and value is not None}}
    return BlendFit(model, spec, best, metrics)


def _fit_autorec(
    config: Config,
    manifest: PreparedRun,
    prepared: Path,
    columns: list,
    device: torch.device,
) -> tuple[EmbeddingModel, dict[str, Any], dict[str, Any]]:
    """``model.blend.kind: autorec``: the autoencoder trained on ``columns`` (users, items and
    ratings of the train split); its spec and what its training measured."""
    blend = config.model.blend
    spec = {
        "kind": blend.kind,
        "n_users": manifest.users,
        "n_items": manifest.items,
        "factors": blend.hidden,
        "rating_mean": (
            manifest.rating.mean if manifest.rating.mean is not None
            else sum(manifest.rating_range) / 2
        ),
        "y_range": list(manifest.rating_range),
    }
    partner = init_model(spec, config.train.seed)
    partner.set_ratings(*columns)
    settings = dataclasses.replace(
        train_settings(config),
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
    result = fit(partner, str(prepared / "train"), str(prepared / "validation"), settings, device,
                 objective=for_name("rating"))
    partner.cpu()
    partner_best = result.history[result.best_epoch - 1] if result.best_epoch else None
    figures = {
        "partner_validation_rmse": partner_best.validation_rmse if partner_best else None,
        "partner_best_epoch": result.best_epoch,
        "partner_epochs": len(result.history),
        "history": [record.published() for record in result.history],
    }
    return partner, spec, figures


def train_rows(prepared: Path) -> int:
    """Rows of the prepared train split; an empty one is an error that says what to do."""
    rows = sum(row_groups(str(prepared / "train")))
    if rows == 0:
        raise BadInputError(f"{prepared / 'train'} holds no rows: re-run prepare with more data")
    return rows


def warm_start(
    layout: Layout, run_date, model: EmbeddingModel, spec: dict[str, Any]
) -> dict[str, Any]:
    """Initialise ``model`` from the newest published model before ``run_date``, if any.

    Returns
    -------
    ``{"from": run date or None, "users": rows carried, "items": rows carried}``
    """
    source = latest_date(layout.root / "models", before=run_date)
    if source is None:
        log.info("warm start: no published model before %s; starting fresh", run_date)
        return not_carried()
    old_model, old = load_published_model(layout, source)
    old_spec = old.spec.as_dict()
    if old_spec["kind"] == "blend":
        # The main model carries over; the blend's partner is fitted afresh every run.
        old_model, old_spec = old_model.main, old_spec["parts"][0]
    if layout.prepared(old.meta.index_date).exists():
        check_id_maps(
            layout,
            old,
            f"re-run `recspark train` for {source}, or set train.warm_start=false to start fresh",
        )
    else:
        log.warning(
            "warm start: the prepared run %s of the model of %s is gone; its id maps are not "
            "checked",
            old.meta.index_date,
            source,
        )
    if old_spec["kind"] != spec["kind"]:
        log.warning(
            "warm start: the model of %s is a %r, this run trains a %r; starting fresh",
            source,
            old_spec["kind"],
            spec["kind"],
        )
        return not_carried()
    carried = carry_weights(model, old_model.state_dict(), old_spec)
    log.info(
        "warm start from the model of %s: %d of %d users and %d of %d items carried",
        source,
        carried["users"],
        spec["n_users"],
        carried["items"],
        spec["n_items"],
    )
    return {"from": source, **carried}


def not_carried() -> dict[str, Any]:
    """What :func:`warm_start` returns when nothing was carried (or warm start is off)."""
    return {"from": None, "users": 0, "items": 0}


def run_fingerprint(
    config: Config,
    spec: dict[str, Any],
    rows: int,
    manifest: PreparedRun,
    warm_start_from: Any,
) -> str:
    """What a checkpoint must agree with for ``train.resume`` to continue from it."""
    ranking = config.model.objective == "ranking" or config.lists_head
    return settings_fingerprint(
        {
            "spec": spec,
            "train": {
                k: v for k, v in config.train.model_dump().items() if k not in _NOT_IN_FINGERPRINT
            },
            "objective": config.model.objective,
            "ranking": config.ranking.model_dump() if ranking else None,
            **({"lists": config.lists.model_dump()} if config.lists_head else {}),
            "train_rows": rows,
            "manifest": manifest.input.fingerprint,
            "warm_start_from": warm_start_from,
        }
    )


def run_fit(
    config: Config,
    spark: SparkSession,
    model: EmbeddingModel,
    spec: dict[str, Any],
    prepared: Path,
    objective: Objective,
    checkpoint_dir: Path,
    fingerprint: str,
) -> FitResult:
    """Train in this process, or data-parallel when ``train.num_processes > 1``.

    ``spark``'s master says whether the processes of a data-parallel run start on the driver.
    """
    settings = train_settings(config)
    device = resolve_device(config.train.device)
    arguments = {
        "objective": objective,
        "checkpoint_dir": str(checkpoint_dir),
        "resume": config.train.resume,
        "fingerprint": fingerprint,
    }
    train_path, validation_path = str(prepared / "train"), str(prepared / "validation")
    if config.train.cpu_threads:
        # On cores shared with Spark tasks (or other jobs) fewer threads than cores run faster.
        torch.set_num_threads(config.train.cpu_threads)
    if config.train.num_processes > 1:
        from recspark.train.distributed import fit_distributed

        groups = len(row_groups(train_path))
        if groups < config.train.num_processes:
            raise BadInputError(
                f"{train_path} has {groups} Parquet row groups, fewer than train.num_processes="
                f"{config.train.num_processes}, and each process reads whole row groups: lower "
                "train.num_processes, or re-run prepare with a smaller prepare.rows_per_file"
            )

        local_mode = spark.sparkContext.master.startswith("local")
        return fit_distributed(
            model,
            spec,
            train_path,
            validation_path,
            settings,
            device,
            config.train.num_processes,
            local_mode=local_mode,
            cpu_threads=config.train.cpu_threads,
            device_setting=config.train.device,
            executor_gpus=float(spark.conf.get("spark.task.resource.gpu.amount", "0") or 0) > 0,
            **arguments,
        )
    return fit(model, train_path, validation_path, settings, device, **arguments)


def starting_figures(
    model: EmbeddingModel,
    prepared: Path,
    device: torch.device,
    objective: Objective,
    seed: int,
    precision: str = "auto",
    feed: str = "auto",
) -> dict[str, float | None]:
    """The ``validation_*`` figures of ``model``'s weights before the first epoch (fresh or warm
    started), at ``precision`` (``train.precision``): what the run must improve on to be
    published. The model is left on the CPU."""
    context = RunContext(
        n_users=getattr(model, "n_users", None), n_items=getattr(model, "n_items", None), seed=seed
    )
    figures = evaluate_split(
        model, str(prepared / "validation"), device, objective, context, precision=precision,
        feed=feed,
    )
    model.cpu()
    return validation_fields(figures)


def best_figures(result: FitResult, start: dict[str, float | None]) -> dict[str, float | None]:
    """The ``validation_*`` figures of the best epoch; ``start`` (the starting weights') when no
    epoch improved on infinity, which only a resumed run that had none left could do."""
    if result.best_epoch:
        best = result.history[result.best_epoch - 1]
        return {name: getattr(best, name) for name in VALIDATION_FIELDS}
    return dict(start)


def global_mean_rmse(prepared: Path, mean: float | None = None) -> float:
    """The validation RMSE of predicting one rating for every row: ``mean``, else the mean rating
    of the train split (the ``global_mean`` baseline of ``evaluate``). Read with pyarrow, one
    batch at a time."""

    def ratings(split: str):
        folder = Location(prepared) / split
        source = pads.dataset(folder.fs_path, filesystem=folder.filesystem, format="parquet")
        for batch in source.to_batches(columns=[RATING]):
            yield batch.column(0).to_numpy(zero_copy_only=False).astype("float64")

    if mean is None:
        total = rows = 0.0
        for values in ratings("train"):
            total, rows = total + float(values.sum()), rows + len(values)
        mean = total / rows if rows else 0.0
    squared = rows = 0.0
    for values in ratings("validation"):
        squared, rows = squared + float(((values - mean) ** 2).sum()), rows + len(values)
    return math.sqrt(squared / rows) if rows else math.nan


def publication_refusal(
    objective: str,
    best: dict[str, float | None],
    start: dict[str, float | None],
    baseline_rmse: float | None,
) -> str | None:
    """Why a trained model must not be published, or None when it may.

    Parameters
    ----------
    objective
        ``model.objective``.
    best, start
        The ``validation_*`` figures of the best epoch and of the starting weights.
    baseline_rmse
        The validation RMSE of predicting the train mean (:func:`global_mean_rmse`); rating
        models only.

    Every run must lower the objective's own validation loss below that of its starting weights
    (MSE for rating, the sampled softmax loss for ranking). A rating model must also predict
    better than the global mean; a ranking model's scores are not ratings, so that rule does not
    apply to it.
    """
    best_loss, start_loss = best["validation_loss"], start["validation_loss"]
    improved = best_loss is not None and math.isfinite(best_loss)
    if not (improved and best_loss < start_loss - IMPROVEMENT):
        return (
            f"no epoch improved on the validation loss of its starting weights ({start_loss:.6g}; "
            f"the best epoch's: {best_loss if best_loss is None else format(best_loss, '.6g')})"
        )
    rmse = best["validation_rmse"]
    if objective == "rating" and baseline_rmse is not None and rmse is not None:
        if rmse > baseline_rmse:
            return (
                f"its validation RMSE {rmse:.4f} is worse than predicting the train mean rating "
                f"for every row ({baseline_rmse:.4f})"
            )
    return None


def model_meta(
    config: Config, result: FitResult, carried: dict[str, Any], manifest: PreparedRun
) -> dict[str, Any]:
    """The facts stored beside the weights in ``model.pt``, with the id maps it was trained on."""
    return {
        "run_date": str(config.run_date),
        "index_date": str(config.run_date),
        "index_fingerprint": index_fingerprint(manifest),
        "objective": config.model.objective,
        "best_epoch": result.best_epoch,
        "warm_start_from": carried["from"],
        **({"lists_rating_weight": config.lists.rating_weight} if config.lists_head else {}),
    }


def training_metrics(
    config: Config,
    result: FitResult,
    best: dict[str, float | None],
    spec: dict[str, Any],
    carried: dict[str, Any],
    device: torch.device,
    seconds: float,
    model_version: str,
) -> dict[str, Any]:
    """``metrics.json``: the best epoch's figures, the run's facts and every epoch's record.

    A ranking model reports a ``validation_auc`` and no ``validation_rmse`` or
    ``validation_mae``: its loss is not an error of ratings it never predicted.
    """
    history = [record.published() for record in result.history]
    devices = result.devices or [str(device)]
    # Epochs run before a resume were timed by the killed run; rows/s counts this run's only.
    fresh = [r for r in result.history if r.epoch > result.resumed_from_epoch]
    rows_trained = sum(r.rows for r in fresh)
    train_seconds = sum(r.seconds for r in fresh)
    return {
        "model_version": model_version,
        "validation_rmse": best["validation_rmse"],
        "validation_mae": best["validation_mae"],
        "validation_auc": best["validation_auc"],
        "validation_loss": best["validation_loss"],
        "epochs": len(history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "rows_per_second": rows_trained / train_seconds if train_seconds else None,
        "train_seconds": seconds,
        "device": str(device),
        # Where the processes trained (data-parallel runs decide it in each process).
        "devices": devices,
        # What train.precision meant where the processes trained (auto: tf32 on CUDA, else fp32).
        "precision": resolve_precision(config.train.precision, devices[0]),
        "num_processes": config.train.num_processes,
        "warm_start_from": carried["from"],
        "carried_users": carried["users"],
        "carried_items": carried["items"],
        "history": history,
        "spec": spec,
        "train": config.train.model_dump(),
    }


def publish_model(
    layout: Layout,
    config: Config,
    model: EmbeddingModel,
    spec: dict[str, Any],
    result: FitResult,
    objective: Objective,
    carried: dict[str, Any],
    device: torch.device,
    seconds: float,
    *,
    best: dict[str, float | None],
    manifest: PreparedRun,
    blend: dict[str, Any] | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Write ``models/RUN_DATE`` atomically: the model, its factor tables, metrics and curve.

    ``model`` is on the CPU, holding its best weights; ``best`` is :func:`best_figures`, and
    ``manifest`` the prepared run it was trained on; ``blend`` what :func:`fit_blend` measured,
    written as ``metrics.json``'s ``blend``.

    Returns
    -------
    (output name -> path, the metrics written to ``metrics.json``)
    """
    prepared = layout.prepared(config.run_date)
    final = layout.model(config.run_date)
    meta = model_meta(config, result, carried, manifest)
    with staged(layout, final, f"model-{config.run_date}") as folder:
        save_model(folder / MODEL_FILE, model, spec, meta)
        model_version = f"{config.run_date}-{spec['kind']}-{file_digest(folder / MODEL_FILE, 10)}"
        user_ids = raw_ids(prepared / "user_index", USER_ID, USER_IDX, spec["n_users"])
        item_ids = raw_ids(prepared / "item_index", ITEM_ID, ITEM_IDX, spec["n_items"])
        names = {name: name for name in write_factor_tables(model, folder, user_ids, item_ids)}
        if spec.get("lists_head"):
            # What score, evaluate and recommend rank by (PublishedModel.lists).
            lists, _ = lists_model(model, config.lists.rating_weight)
            for name in write_factor_tables(lists, folder / LISTS_FOLDER, user_ids, item_ids):
                names[f"lists_{name}"] = f"{LISTS_FOLDER}/{name}"
        metrics = training_metrics(
            config, result, best, spec, carried, device, seconds, model_version
        )
        if blend is not None:
            metrics["blend"] = blend
        write_json(folder / "metrics.json", metrics)
        if result.history:
            loss_curve(
                [r.epoch for r in result.history],
                [r.train_loss for r in result.history],
                [r.validation_loss for r in result.history],
                folder / "loss.png",
                objective.loss_name,
            )
    outputs = {name: str(final / relative) for name, relative in names.items()}
    outputs.update(model=str(final / MODEL_FILE), metrics=str(final / "metrics.json"))
    if result.history:
        outputs["loss_curve"] = str(final / "loss.png")
    return outputs, metrics
