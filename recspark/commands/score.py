"""score: publish the top-N of every user the model knows, as ``recommendations/run_date=D``.

Every user in the model's user table is scored, whether or not it appears in today's input. Items
the user rated (train, validation and cold-start rows of the prepared run) are left out when
``score.exclude_seen``; a user with fewer than ``top_n`` unrated items gets what there is.

No rating is shuffled: ``prepare`` wrote ``rated/``, one row per user of the id map with every item
it rated. When the model's user table fits ``score.broadcast_users_mb`` it is broadcast with the
item side and the tasks read ``rated/`` as it lies (no shuffle at all); a larger one is joined by
user with ``rated/`` (one shuffle of both, one row per user).

The partition is written under ``_staging/`` and renamed into place whole with a ``_SUCCESS``
marker (:func:`recspark.core.storage.publish`): a job killed midway leaves the previous partition as
it was, and re-running a date replaces it whole. What a killed run left in ``_staging`` is removed
when the next run for the same date starts.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession

from recspark.core.config import Config
from recspark.core.storage import Layout, clean_leftovers, parquet_rows, staged
from recspark.model.published import check_id_maps, load_published_model
from recspark.serve.kernel import UserTable
from recspark.serve.scoring import (
    ScoreCounters,
    item_side_payload,
    model_users,
    recommendation_table,
)

log = logging.getLogger(__name__)


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    model, published = load_published_model(layout, config.run_date)
    check_id_maps(layout, published)  # before any Spark task
    prepared = layout.prepared(published.meta.index_date)
    final = layout.recommendations_partition(config.run_date)
    name = f"recommendations-{config.run_date}"
    for path in clean_leftovers(layout, final, name):
        log.info("removed %s, left by an earlier run that did not finish", path)
    counters = ScoreCounters.create(spark)
    user_table = model_users(
        spark, model, published.folder, prepared, config.score.broadcast_users_mb
    )
    table = recommendation_table(
        spark,
        user_table,
        prepared,
        config.score.exclude_seen,
        item_side_payload(model, published.spec.as_dict(), published.meta.as_dict()),
        published.model_version,
        config.score.top_n,
        config.score.users_per_block,
        config.train.device,
        config.score.partitions,
        counters,
    )
    with staged(layout, final, name) as staging:
        table.write.mode("overwrite").parquet(str(staging))
        # The rows are counted from the written files' footers, so the summary describes the
        # published partition; the tasks' own count must agree, and says how many users got one.
        rows, users = parquet_rows(staging), counters.users.value
        if rows != counters.rows.value:
            raise RuntimeError(
                f"the scoring tasks produced {counters.rows.value} rows but {rows} were written "
                f"to {staging}: nothing was published"
            )
    log.info("published %d rows for %d users to %s", rows, users, final)
    return {
        "outputs": {"recommendations": str(layout.recommendations), "partition": str(final)},
        "counts": {"users": users, "rows": rows, "model_users": published.spec.n_users},
        "metrics": {
            "model_version": published.model_version,
            "top_n": config.score.top_n,
            # How the tasks got the users' vectors: "broadcast" (no shuffle) or "joined".
            "user_factors": "broadcast" if isinstance(user_table, UserTable) else "joined",
        },
    }
