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
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.storage import Layout
from recspark.data.prepared import eligible_items
from recspark.model.published import check_id_maps, load_published_model
from recspark.serve.kernel import UserTable
from recspark.serve.scoring import (
    ScoreCounters,
    WorkerWarmup,
    item_side_payload,
    model_users,
    recommendation_table,
)
from recspark.serve.tables import recommendations_table

log = logging.getLogger(__name__)


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    model, published = load_published_model(layout, config.run_date)
    check_id_maps(layout, published)  # before any Spark task
    # The Python workers start and import torch while the driver plans (after every refusal:
    # a command that refuses runs no Spark job).
    WorkerWarmup(spark)
    prepared = layout.prepared(published.meta.index_date)
    output = recommendations_table(config, layout)
    eligible = eligible_items(
        spark.read.parquet(str(prepared / "train")), published.spec.n_items,
        config.score.min_item_ratings,
    )
    counters = ScoreCounters.create(spark)
    lists = published.lists(model)  # what the lists rank by (a ranking head's model, or its own)
    user_table = model_users(
        spark, lists.model, lists.factors, prepared, config.score.broadcast_users_mb
    )
    table = recommendation_table(
        spark,
        user_table,
        prepared,
        config.score.exclude_seen,
        item_side_payload(lists.model, lists.spec, lists.meta),
        published.model_version,
        config.score.top_n,
        config.score.users_per_block,
        config.train.device,
        config.score.partitions,
        counters,
        eligible,
    )

    def check(rows: int) -> None:
        # The rows are counted from what was written, so the summary describes the published
        # date; the tasks' own count must agree.
        if rows != counters.rows.value:
            raise RuntimeError(
                f"the scoring tasks produced {counters.rows.value} rows but {rows} were written "
                f"to {output.root}: nothing was published"
            )

    written = output.publish(spark, layout, table, config.run_date, check)
    users = counters.users.value
    log.info("published %d rows for %d users to %s", written.rows, users, written.location)
    outputs = {"recommendations": str(layout.recommendations), "partition": written.location}
    if output.name:
        outputs["table"] = output.name
    return {
        "outputs": outputs,
        "counts": {"users": users, "rows": written.rows, "model_users": published.spec.n_users},
        "metrics": {
            "table_format": output.format,
            **({"table_version": written.version} if written.version is not None else {}),
            "model_version": published.model_version,
            "top_n": config.score.top_n,
            # Items with at least score.min_item_ratings train ratings: the only ones listed.
            "eligible_items": int(eligible.sum()),
            # How the tasks got the users' vectors: "broadcast" (no shuffle) or "joined".
            "user_factors": "broadcast" if isinstance(user_table, UserTable) else "joined",
        },
    }

