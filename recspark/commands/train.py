"""train: fit an embedding model on the prepared tables and publish it under ``models/RUN_DATE``.

Table sizes come from the prepared manifest (the id maps), never from the batches. One process
trains in the driver; ``train.num_processes > 1`` trains data-parallel through TorchDistributor
(:mod:`recspark.train.distributed`). Every epoch is checkpointed under ``_checkpoints/RUN_DATE``;
``train.resume`` continues a killed run from there, and the checkpoint is removed once the model
is published. ``train.warm_start`` starts from the last published model before this run date.

Published (``models/RUN_DATE/``): ``model.pt`` (state dict, spec, id-map date), ``user_factors/``
and ``item_factors/`` (Parquet: index, bias, factors), ``metrics.json`` (with every epoch's
figures) and ``loss.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.constants import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.core.errors import BadInputError
from recspark.core.plots import loss_curve
from recspark.core.storage import Layout, file_digest, latest_date, staged, write_json
from recspark.core.torch_utils import resolve_device
from recspark.data.prepared import read_manifest
from recspark.data.side_info import SideFeatures, load_side_features
from recspark.model.embedding import EmbeddingModel
from recspark.model.saving import (
    MODEL_FILE,
    carry_weights,
    load_model,
    raw_ids,
    save_model,
    write_factor_tables,
)
from recspark.train.checkpoints import remove_checkpoints
from recspark.train.feeding import row_groups
from recspark.train.loop import (
    FitResult,
    TrainSettings,
    evaluate_split,
    fit,
    init_model,
    is_sparse_optimizer,
    settings_fingerprint,
)

log = logging.getLogger(__name__)

# train.* keys that do not change what a run computes, so a resumed run may differ in them.
_NOT_IN_FINGERPRINT = {"resume", "device", "reader_workers", "cpu_threads"}


def model_spec(
    config: Config, manifest: dict[str, Any], prepared: Path | None = None
) -> dict[str, Any]:
    """Arguments of :func:`recspark.model.embedding.build_model` for this config and these tables.

    The seam where model kinds that need more than ids (side information read from ``prepared``)
    add their arguments; the spec is stored in ``model.pt`` and rebuilds the model on its own.
    """
    low, high = manifest["rating_range"]
    y_range = list(config.model.y_range) if config.model.y_range else [low, high + 0.5]
    if config.model.objective == "ranking":
        y_range = None  # ranking models train and score on raw, unbounded scores
    return {
        "kind": config.model.kind,
        "n_users": manifest["users"],
        "n_items": manifest["items"],
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
    }


def side_features(
    config: Config, manifest: dict[str, Any], prepared: Path | None
) -> SideFeatures:
    """``model.side_info``'s features aligned with the prepared id maps (none when unset)."""
    side = config.model.side_info
    if side is None:
        return SideFeatures(user=None, item=None)
    if prepared is None:
        raise ValueError("model.side_info needs the prepared run's id maps: pass `prepared`")
    return load_side_features(
        side.format, side.path, prepared, manifest["users"], manifest["items"], side.users, side.items
    )


def train_settings(config: Config) -> TrainSettings:
    """The loop's settings picked out of ``train.*``."""
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in config.train.model_dump().items() if k in fields})


def objective_context(
    config: Config, manifest: dict[str, Any], spark: SparkSession | None = None
) -> dict[str, Any]:
    """Facts the objective's epoch functions receive as ``context`` beside the defaults.

    For ``ranking``: its settings and, when negatives follow popularity, the positives per item
    of the train split (one Spark aggregate; needs ``spark``).
    """
    context = {"rating_range": list(manifest["rating_range"]), "objective": config.model.objective}
    if config.model.objective == "ranking":
        from recspark.train.objectives.ranking import (
            RankingSettings,
            item_popularity,
            ranking_context,
        )

        settings = RankingSettings(**config.ranking.model_dump())
        counts = None
        if spark is not None and settings.sampling_alpha > 0:
            prepared = Layout(config.paths.root).prepared(config.run_date)
            train = spark.read.parquet(str(prepared / "train"))
            counts = item_popularity(train, manifest["items"], settings.positive_threshold)
        context.update(ranking_context(settings, counts))
    return context


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
        return {"from": None, "users": 0, "items": 0}
    old_model, old_spec, _ = load_model(layout.model(source))
    if old_spec["kind"] != spec["kind"]:
        log.warning(
            "warm start: the model of %s is a %r, this run trains a %r; starting fresh",
            source,
            old_spec["kind"],
            spec["kind"],
        )
        return {"from": None, "users": 0, "items": 0}
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


def run_fit(
    config: Config,
    spark: SparkSession,
    model: EmbeddingModel,
    spec: dict[str, Any],
    prepared: Path,
    manifest: dict[str, Any],
    checkpoint_dir: Path,
    fingerprint: str,
) -> FitResult:
    """Train in this process, or data-parallel when ``train.num_processes > 1``."""
    settings = train_settings(config)
    device = resolve_device(config.train.device)
    arguments = {
        "objective": config.model.objective,
        "context": objective_context(config, manifest, spark),
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
            **arguments,
        )
    return fit(model, train_path, validation_path, settings, device, **arguments)


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    """Train, publish ``models/RUN_DATE`` and return the summary fields."""
    layout = Layout(config.paths.root)
    manifest = read_manifest(layout, config.run_date)
    prepared = layout.prepared(config.run_date)
    spec = model_spec(config, manifest, prepared)
    train_rows = sum(row_groups(str(prepared / "train")))
    if train_rows == 0:
        raise BadInputError(f"{prepared / 'train'} holds no rows: re-run prepare with more data")
    model = init_model(spec, config.train.seed)
    carried = {"from": None, "users": 0, "items": 0}
    if config.train.warm_start:
        carried = warm_start(layout, config.run_date, model, spec)
    if config.model.side_info is not None:
        features = side_features(config, manifest, prepared)
        model.set_side_features(features.user, features.item)
    device = resolve_device(config.train.device)
    checkpoint_dir = layout.checkpoints / str(config.run_date)
    fingerprint = settings_fingerprint(
        {
            "spec": spec,
            "train": {
                k: v for k, v in config.train.model_dump().items() if k not in _NOT_IN_FINGERPRINT
            },
            "objective": config.model.objective,
            "ranking": config.ranking.model_dump() if config.model.objective == "ranking" else None,
            "train_rows": train_rows,
            "manifest": manifest.get("input", {}).get("fingerprint"),
            "warm_start_from": carried["from"],
        }
    )
    if not config.train.resume:
        remove_checkpoints(checkpoint_dir)
    log.info(
        "training %s on %d rows (%d users, %d items) on %s with %d process(es)",
        spec["kind"],
        train_rows,
        spec["n_users"],
        spec["n_items"],
        device,
        config.train.num_processes,
    )
    started = time.perf_counter()
    result = run_fit(config, spark, model, spec, prepared, manifest, checkpoint_dir, fingerprint)
    seconds = time.perf_counter() - started
    model.cpu()
    final = layout.model(config.run_date)
    history = [dataclasses.asdict(record) for record in result.history]
    best = history[result.best_epoch - 1] if result.best_epoch else None
    if best is None:
        # No epoch ran (train.epochs=0): report the starting weights, so a gate can judge them.
        loss, second, _ = evaluate_split(
            model,
            str(prepared / "validation"),
            device,
            config.model.objective,
            objective_context(config, manifest),
        )
        model.cpu()
        best = {"validation_loss": loss, "validation_rmse": loss**0.5, "validation_mae": second}
    # Epochs run before a resume were timed by the killed run; rows/s counts this run's only.
    fresh = [r for r in history if r["epoch"] > result.resumed_from_epoch]
    rows_trained = sum(r["rows"] for r in fresh)
    train_seconds = sum(r["seconds"] for r in fresh)
    with staged(layout, final, f"model-{config.run_date}") as folder:
        meta = {
            "run_date": str(config.run_date),
            "index_date": str(config.run_date),
            "objective": config.model.objective,
            "best_epoch": result.best_epoch,
            "warm_start_from": carried["from"],
        }
        save_model(folder / MODEL_FILE, model, spec, meta)
        model_version = f"{config.run_date}-{spec['kind']}-{file_digest(folder / MODEL_FILE, 10)}"
        outputs = write_factor_tables(
            model,
            folder,
            raw_ids(prepared / "user_index", USER_ID, USER_IDX, spec["n_users"]),
            raw_ids(prepared / "item_index", ITEM_ID, ITEM_IDX, spec["n_items"]),
        )
        ranking = config.model.objective == "ranking"
        metrics = {
            "model_version": model_version,
            # A ranking model's loss is not a squared error: it reports an AUC instead (1 - the
            # mean fraction of sampled items scored above each held-out positive).
            "validation_rmse": None if ranking else best["validation_rmse"],
            "validation_mae": None if ranking else best["validation_mae"],
            "validation_auc": 1.0 - best["validation_mae"] if ranking else None,
            "validation_loss": best["validation_loss"],
            "epochs": len(history),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from_epoch,
            "rows_per_second": rows_trained / train_seconds if train_seconds else None,
            "train_seconds": seconds,
            "device": str(device),
            "num_processes": config.train.num_processes,
            "warm_start_from": carried["from"],
            "carried_users": carried["users"],
            "carried_items": carried["items"],
            "history": history,
            "spec": spec,
            "train": config.train.model_dump(),
        }
        write_json(folder / "metrics.json", metrics)
        if history:
            loss_curve(
                [r["epoch"] for r in history],
                [r["train_loss"] for r in history],
                [r["validation_loss"] for r in history],
                folder / "loss.png",
                "softmax/BPR" if ranking else "MSE",
            )
    remove_checkpoints(checkpoint_dir)
    outputs = {name: str(final / name) for name in outputs}
    outputs.update(model=str(final / MODEL_FILE), metrics=str(final / "metrics.json"))
    if history:
        outputs["loss_curve"] = str(final / "loss.png")
    summary_metrics = (
        "validation_rmse",
        "validation_mae",
        "validation_auc",
        "validation_loss",
        "epochs",
        "best_epoch",
        "stopped_early",
        "rows_per_second",
        "device",
        "num_processes",
        "model_version",
        "warm_start_from",
    )
    return {
        "outputs": outputs,
        "counts": {
            "train": train_rows,
            "users": spec["n_users"],
            "items": spec["n_items"],
            "carried_users": carried["users"],
            "carried_items": carried["items"],
        },
        "metrics": {k: metrics[k] for k in summary_metrics},
    }
