"""score: publish the top-N of every user the model knows, as ``recommendations/run_date=D``.

Every user in the model's user table is scored, whether or not it appears in today's input. Items
the user rated (train, validation and cold-start rows of the prepared run) are left out when
``score.exclude_seen``. Items with fewer than ``score.min_item_ratings`` ratings in the train split
of the model's prepared run are never listed (``evaluate`` and ``recommend`` leave out the same
items, so a user's published list is the one ``recommend.user`` shows). A user with fewer than
``top_n`` such items left gets what there is.

No rating is shuffled: ``prepare`` wrote ``rated/``, one row per user of the id map with every item
it rated. When the model's user table fits ``score.broadcast_users_mb`` it is broadcast with the
item side and the tasks read ``rated/`` as it lies (no shuffle at all); a larger one is joined by
user with ``rated/`` (one shuffle of both, one row per user).

The date is published whole (:mod:`recspark.serve.tables`): as a Parquet folder written under
``_staging/`` and moved into place with its ``_SUCCESS`` marker last, or as one Delta commit
(``score.table_format: delta``). A job killed midway leaves the previous rows as they were, and
re-running a date replaces it whole. ``score.table`` registers the table in Spark's catalog.

``score.model=models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) scores a version of the MLflow
registry at ``tracking.uri`` instead of the date's own model, e.g. the ``champion`` nightly last
published: its published folder is downloaded to a temporary folder on the driver (so the model's
user table must fit ``score.broadcast_users_mb`` on a cluster, whose executors cannot read it) and
scored against the root's prepared run it names; ``metrics.registered_version`` says which.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from recspark.commands.stage import Stage, StageResult
from recspark.core.config import Config, ScoreConfig
from recspark.core.errors import ConfigError
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.data.prepared import eligible_in_run
from recspark.model.published_context import PublishedContext
from recspark.ops.tracking import check_tracking, tracking_uri
from recspark.ops.tracking_registry import download_registered
from recspark.serve.kernel import UserTable
from recspark.serve.recommendation_table import (
    model_users,
    recommendation_files,
    recommendation_table,
)
from recspark.serve.scoring import ScoreCounters, ScoringPlan, WorkerWarmup, item_side_payload
from recspark.serve.tables import OutputTable, recommendations_table
from recspark.serve.task_files import TaskFiles

log = logging.getLogger(__name__)


def precheck(config: Config) -> None:
    """Before Spark starts: a registered ``score.model`` needs tracking, whose server answers."""
    if config.score.model is None:
        return
    if tracking_uri(config.tracking) is None:
        raise ConfigError(
            f"invalid config: score.model={config.score.model} names a registered model; set "
            "tracking.uri (or MLFLOW_TRACKING_URI) to the MLflow server that holds it"
        )
    check_tracking(config.tracking)


def run(config: Config, spark: SparkSession) -> StageResult:
    """Publish the top-N of every user of the model published for ``config.run_date``, or of
    the registered ``score.model``."""
    layout = Layout(config.paths.root)
    output = recommendations_table(config.score, layout)
    if config.score.model is None:
        context = PublishedContext.open(layout, config.run_date)  # id maps checked before a task
        return score(
            spark,
            context,
            output,
            config.score,
            device=config.train.device,
            run_date=config.run_date,
        )
    with tempfile.TemporaryDirectory(prefix="recspark-registered-") as scratch:
        folder, version = download_registered(config.tracking, config.score.model, Path(scratch))
        context = PublishedContext.open(layout, config.run_date, folder=Location(folder))
        result = score(
            spark,
            context,
            output,
            config.score,
            device=config.train.device,
            run_date=config.run_date,
        )
    metrics = {**result.metrics, "registered_model": config.score.model}
    metrics["registered_version"] = version
    return StageResult(result.outputs, result.counts, metrics, result.extra)


def score(
    spark: SparkSession,
    context: PublishedContext,
    output: OutputTable,
    settings: ScoreConfig,
    *,
    device: str,
    run_date: dt.date | str,
) -> StageResult:
    """Score every user of ``context``'s model as ``settings`` say and publish ``run_date``'s
    rows to ``output``; ``device`` is ``train.device``."""
    # The Python workers start and import torch while the driver plans (after every refusal:
    # a command that refuses runs no Spark job).
    WorkerWarmup(spark)
    published, lists, prepared = context.published, context.lists, context.prepared
    eligible = eligible_in_run(spark, prepared, published.spec.n_items, settings.min_item_ratings)
    counters = ScoreCounters.create(spark)
    user_table = model_users(
        spark, lists.model, lists.factors, prepared, settings.broadcast_users_mb
    )
    plan = ScoringPlan(
        item_side_payload(lists.model, lists.spec, lists.meta),
        settings.top_n,
        users_per_block=settings.users_per_block,
        device=device,
        partitions=settings.partitions,
        eligible=eligible,
        counters=counters,
    )
    if isinstance(user_table, UserTable):
        # The tasks read rated/ and write the rows' Parquet files themselves: no Spark SQL
        # (a Delta table then commits those rows from a scan of them).
        table: DataFrame | TaskFiles = recommendation_files(
            spark,
            user_table,
            prepared,
            plan,
            exclude_seen=settings.exclude_seen,
            model_version=context.model_version,
        )
    else:
        table = recommendation_table(
            spark,
            user_table,
            prepared,
            plan,
            exclude_seen=settings.exclude_seen,
            model_version=context.model_version,
        )

    def check(rows: int) -> None:
        # The rows are counted from what was written, so the summary describes the published
        # date; the tasks' own count must agree.
        if rows != counters.rows.value:
            raise RuntimeError(
                f"the scoring tasks produced {counters.rows.value} rows but {rows} were written "
                f"to {output.root}: nothing was published"
            )

    # Named in Spark's UI and event log: the job that scores every user and writes the rows.
    spark.sparkContext.setJobDescription(f"recspark score {run_date}: score every user, write")
    try:
        written = output.publish(spark, context.layout, table, run_date, check)
    finally:
        spark.sparkContext.setJobDescription(None)  # type: ignore[arg-type]  # None clears it
    users = counters.users.value
    log.info("published %d rows for %d users to %s", written.rows, users, written.location)
    outputs = {
        "recommendations": str(context.layout.recommendations),
        "partition": written.location,
    }
    if output.name:
        outputs["table"] = output.name
    metrics: dict[str, Any] = {"table_format": output.format}
    if written.version is not None:
        metrics["table_version"] = written.version
    metrics.update(
        model_version=context.model_version,
        top_n=settings.top_n,
        # Items with at least score.min_item_ratings train ratings: the only ones listed.
        eligible_items=int(eligible.sum()),
        # How the tasks got the users' vectors: "broadcast" (no shuffle) or "joined".
        user_factors="broadcast" if isinstance(user_table, UserTable) else "joined",
    )
    return StageResult(
        outputs=outputs,
        counts={"users": users, "rows": written.rows, "model_users": published.spec.n_users},
        metrics=metrics,
    )


STAGE = Stage(
    name="score",
    purpose="Write the top-N recommendations of every user, partitioned by run date.",
    sections=("paths", "run_date", "score", "train.device", "spark", "tracking"),
    example="recspark score --set score.top_n=20",
    run=run,
    precheck=precheck,
)
