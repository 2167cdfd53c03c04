"""train: fit an embedding model on the prepared tables and publish it under ``models/RUN_DATE``.

Wiring only: the logic lives in :func:`recspark.train.job.train_and_publish` and the modules it
calls (spec, objective, warm start, checkpoint fingerprint, one-process or data-parallel fit, the
publication gate, publishing) and in the training loop
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

With tracking on (``tracking.uri``), the run is logged to MLflow and the model registered as a new
version of ``tracking.model_name`` (:mod:`recspark.ops.tracking_records`); the summary's
``tracking`` field names the run and the version.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from recspark.commands.stage import Stage, StageResult
from recspark.core.config import Config
from recspark.ops.tracking import check_tracking, tracked_run
from recspark.ops.tracking_records import record_training, run_tags
from recspark.train.artifacts import SUMMARY_METRICS
from recspark.train.feeding import resolve_feed
from recspark.train.job import train_and_publish


def precheck(config: Config) -> None:
    """Before Spark starts: ``train.feed`` can read here (petastorm does not import everywhere),
    and the tracking server, when there is one, answers."""
    resolve_feed(config.train.feed)
    check_tracking(config.tracking)


def run(config: Config, spark: SparkSession) -> StageResult:
    """Train, publish ``models/RUN_DATE`` and return the summary fields."""
    with tracked_run(config.tracking, f"train {config.run_date}", run_tags(config, "train")) as run:
        trained = train_and_publish(config, spark)
        published = trained.published
        tracking = (
            record_training(run, config, published.metrics, published.outputs) if run else None
        )
    metrics, blend = trained.published.metrics, trained.blend
    return StageResult(
        outputs=trained.published.outputs,
        counts={
            "train": trained.rows,
            "users": trained.spec.n_users,
            "items": trained.spec.n_items,
            "carried_users": trained.carried.users,
            "carried_items": trained.carried.items,
        },
        metrics={
            **{k: metrics[k] for k in SUMMARY_METRICS},
            **({"blend": {k: v for k, v in blend.items() if k != "history"}} if blend else {}),
        },
        extra={"tracking": tracking} if tracking else {},
    )


STAGE = Stage(
    name="train",
    purpose="Train an embedding model on the prepared tables (Petastorm + PyTorch).",
    sections=("paths", "run_date", "model", "train", "ranking", "spark", "tracking"),
    example="recspark train --set train.epochs=20 --set model.kind=mlp",
    run=run,
    precheck=precheck,
)
