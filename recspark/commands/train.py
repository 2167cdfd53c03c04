"""train: fit an embedding model on the prepared tables and publish it under ``models/RUN_DATE``.

Table sizes come from the prepared manifest (the id maps), never from the batches.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from pyspark.sql import SparkSession

from recspark.artifacts import Layout, file_digest, read_json, staged, write_json
from recspark.config import Config
from recspark.errors import MissingInputError
from recspark.feeding import row_groups
from recspark.model_io import MODEL_FILE, save_model, write_factor_tables
from recspark.models import build_model
from recspark.plots import loss_curve
from recspark.training import TrainSettings, fit, resolve_device

log = logging.getLogger(__name__)


def read_manifest(layout: Layout, run_date) -> dict[str, Any]:
    path = layout.prepared(run_date) / "manifest.json"
    if not path.exists():
        raise MissingInputError(
            f"no prepared data for run_date {run_date} under {layout.root}: run `recspark prepare` "
            "with the same paths.root and run_date first"
        )
    return read_json(path)


def model_spec(config: Config, manifest: dict[str, Any]) -> dict[str, Any]:
    """Arguments of :func:`build_model` for this config and these tables."""
    low, high = manifest["rating_range"]
    y_range = list(config.model.y_range) if config.model.y_range else [low, high + 0.5]
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
        "sparse": config.train.optimizer == "sparse_adam",
    }


def train_settings(config: Config) -> TrainSettings:
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in config.train.model_dump().items() if k in fields})


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    manifest = read_manifest(layout, config.run_date)
    prepared = layout.prepared(config.run_date)
    spec = model_spec(config, manifest)
    model = build_model(**spec)
    device = resolve_device(config.train.device)
    settings = train_settings(config)
    train_rows = sum(row_groups(str(prepared / "train")))
    log.info(
        "training %s on %d rows (%d users, %d items) on %s",
        spec["kind"], train_rows, spec["n_users"], spec["n_items"], device,
    )
    started = time.perf_counter()
    result = fit(model, str(prepared / "train"), str(prepared / "validation"), settings, train_rows, device)
    seconds = time.perf_counter() - started
    model.cpu()
    final = layout.model(config.run_date)
    history = [dataclasses.asdict(record) for record in result.history]
    best = history[result.best_epoch - 1] if history else None
    rows_trained = sum(r["rows"] for r in history)
    train_seconds = sum(r["seconds"] for r in history)
    with staged(layout, final, f"model-{config.run_date}") as folder:
        meta = {
            "run_date": str(config.run_date),
            "index_date": str(config.run_date),
            "objective": config.model.objective,
            "best_epoch": result.best_epoch,
        }
        save_model(folder / MODEL_FILE, model, spec, meta)
        model_version = f"{config.run_date}-{spec['kind']}-{file_digest(folder / MODEL_FILE, 10)}"
        outputs = write_factor_tables(model, folder)
        metrics = {
            "model_version": model_version,
            "validation_rmse": best["validation_rmse"] if best else None,
            "validation_mae": best["validation_mae"] if best else None,
            "epochs": len(history),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "rows_per_second": rows_trained / train_seconds if train_seconds else None,
            "train_seconds": seconds,
            "device": str(device),
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
            )
    outputs = {name: str(final / name) for name in outputs}
    outputs.update(model=str(final / MODEL_FILE), metrics=str(final / "metrics.json"), loss_curve=str(final / "loss.png"))
    return {
        "outputs": outputs,
        "counts": {"train": train_rows, "users": spec["n_users"], "items": spec["n_items"]},
        "metrics": {k: metrics[k] for k in ("validation_rmse", "validation_mae", "epochs", "best_epoch",
                                            "rows_per_second", "device", "model_version")},
    }
