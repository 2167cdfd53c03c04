"""train: fit an embedding model on the prepared tables and publish it under ``models/RUN_DATE``.

Wiring only: the logic lives in :mod:`recspark.train.job` (model spec, objective, warm start,
checkpoint fingerprint, one-process or data-parallel fit, publishing) and in the training loop
(:mod:`recspark.train.loop`). Every epoch is checkpointed under ``_checkpoints/RUN_DATE``;
``train.resume`` continues a killed run from there, and the checkpoint is removed once the model
is published. ``train.warm_start`` starts from the last published model before this run date.
A run that did not learn (no better than its starting weights, or, for a rating model, than
predicting the train mean) publishes nothing and exits 1, the date's previous model staying in
place, unless ``train.allow_worse``; its checkpoint is kept, so ``train.resume`` with
``train.allow_worse`` publishes it without training again.

Published (``models/RUN_DATE/``): ``model.pt`` (state dict, spec, id-map date), ``user_factors/``
and ``item_factors/`` (Parquet: index, bias, factors), ``metrics.json`` (with every epoch's
figures) and ``loss.png``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.errors import TrainingRejectedError
from recspark.core.storage import Layout
from recspark.core.torch_utils import resolve_device
from recspark.data.prepared import check_tables, read_manifest
from recspark.train.checkpoints import remove_checkpoints
from recspark.train.feeding import resolve_feed
from recspark.train.job import (
    SUMMARY_METRICS,
    best_figures,
    build_objective,
    fit_blend,
    global_mean_rmse,
    model_spec,
    not_carried,
    publication_refusal,
    publish_model,
    run_fingerprint,
    run_fit,
    side_features,
    starting_figures,
    train_rows,
    warm_start,
)
from recspark.train.loop import init_model

log = logging.getLogger(__name__)


def precheck(config: Config) -> None:
    """Before Spark starts: ``train.feed`` can read here (petastorm does not import everywhere)."""
    resolve_feed(config.train.feed)


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    """Train, publish ``models/RUN_DATE`` and return the summary fields."""
    layout = Layout(config.paths.root)
    manifest = read_manifest(layout, config.run_date)
    prepared = layout.prepared(config.run_date)
    check_tables(prepared)  # pyarrow and petastorm read them: no file that could run code
    spec = model_spec(config, manifest, prepared)
    rows = train_rows(prepared)
    model = init_model(spec, config.train.seed)
    carried = not_carried()
    if config.train.warm_start:
        carried = warm_start(layout, config.run_date, model, spec)
    if config.model.side_info is not None:
        features = side_features(config, manifest, prepared)
        model.set_side_features(features.user, features.item)
    device = resolve_device(config.train.device)
    checkpoint_dir = layout.checkpoints / str(config.run_date)
    fingerprint = run_fingerprint(config, spec, rows, manifest, carried["from"])
    if not config.train.resume:
        remove_checkpoints(checkpoint_dir)
    log.info(
        "training %s on %d rows (%d users, %d items) on %s with %d process(es)",
        spec["kind"],
        rows,
        spec["n_users"],
        spec["n_items"],
        device,
        config.train.num_processes,
    )
    started = time.perf_counter()
    objective = build_objective(config, manifest, spark)
    start = starting_figures(
        model, prepared, device, objective, config.train.seed, config.train.precision,
        config.train.feed,
    )
    result = run_fit(config, spark, model, spec, prepared, objective, checkpoint_dir, fingerprint)
    seconds = time.perf_counter() - started
    model.cpu()
    best = best_figures(result, start)
    blend = None
    if config.model.blend is not None:
        blend = fit_blend(config, model, spec, manifest, prepared, best)
        model, spec, best = blend.model, blend.spec, blend.best
        seconds = time.perf_counter() - started
    rating = config.model.objective == "rating"
    baseline = global_mean_rmse(prepared, manifest.rating.mean) if rating else None
    refusal = publication_refusal(config.model.objective, best, start, baseline)
    if refusal is not None and not config.train.allow_worse:
        raise TrainingRejectedError(
            f"the model trained for {config.run_date} was not published: {refusal}; the model "
            "published before for this date (if any) stays. Check the data and train.lr, "
            "train.epochs, or set train.allow_worse=true to publish it anyway"
        )
    if refusal is not None:
        log.warning("publishing although %s (train.allow_worse)", refusal)
    outputs, metrics = publish_model(
        layout, config, model, spec, result, objective, carried, device, seconds,
        best=best, manifest=manifest, blend=blend.metrics if blend else None,
    )
    remove_checkpoints(checkpoint_dir)
    return {
        "outputs": outputs,
        "counts": {
            "train": rows,
            "users": spec["n_users"],
            "items": spec["n_items"],
            "carried_users": carried["users"],
            "carried_items": carried["items"],
        },
        "metrics": {
            **{k: metrics[k] for k in SUMMARY_METRICS},
            **({"blend": {k: v for k, v in blend.metrics.items() if k != "history"}}
               if blend else {}),
        },
    }
