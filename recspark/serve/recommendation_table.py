"""The rows ``score`` publishes: every user of the model, scored as :mod:`recspark.serve.scoring`
plans it, with raw user and item ids and the model's version.

The model's user table reaches the scoring tasks one of two ways (:func:`model_users`): as arrays
broadcast with the item side when it fits ``score.broadcast_users_mb`` and ``prepare``'s ``rated/``
lists every user (the tasks then read ``rated/``'s files themselves, no shuffle), or as the
``user_factors`` table joined by user with the rated items (one shuffle of one row per user).
"""

from __future__ import annotations

import logging

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_type, to_arrow_type

from recspark.core.constants import (
    ITEM_ID,
    ITEM_IDX,
    MODEL_VERSION,
    RANK,
    SCORE,
    USER_ID,
    USER_IDX,
)
from recspark.core.location import Location
from recspark.core.storage import parquet_rows
from recspark.data.prepared import RATED, lists_every_user, rated_by_user
from recspark.model.base import EmbeddingModel
from recspark.model.saving import raw_ids
from recspark.serve.kernel import UserTable
from recspark.serve.rated_files import rated_tasks, recommend_rated_files
from recspark.serve.scoring import ScoringPlan, recommend_all
from recspark.serve.task_files import TaskFiles

log = logging.getLogger(__name__)


def recommendation_table(
    spark: SparkSession,
    model_users: DataFrame | UserTable,
    prepared: Location,
    plan: ScoringPlan,
    *,
    exclude_seen: bool,
    model_version: str,
) -> DataFrame:
    """The published table's rows: ``user_id``, ``item_id`` (raw ids, input types), ``rank``,
    ``score``, ``model_version``.

    ``model_users`` is the model's user table, as arrays broadcast to the tasks (a
    :class:`UserTable`: the users to score are then ``prepare``'s ``rated/`` table as it lies,
    which must list every user, see :func:`lists_every_user`) or as the ``user_factors``
    DataFrame, joined by user with the rated items. No join after scoring: the raw user id
    travels with the user's row (from ``rated/``, or from ``user_factors`` where ``train`` wrote
    it; an older table without it is joined with the prepared ``user_index`` before scoring), and
    the raw item ids are broadcast with the model (one per item, like the item factors), and so
    is ``plan.eligible``, the items that may be listed (:func:`recommend_all`).
    """
    item_ids = item_id_array(prepared)
    if isinstance(model_users, UserTable):
        recommendations = recommend_rated_files(
            spark,
            prepared / RATED,
            model_users,
            plan,
            carry=(USER_ID,),
            item_ids=item_ids,
            exclude_seen=exclude_seen,
        )
    else:
        carried = USER_ID in model_users.columns
        user_ids = spark.read.parquet(str(prepared / "user_index")).select(USER_IDX, USER_ID)
        recommendations = recommend_all(
            spark,
            model_users,
            rated_by_user(spark, prepared) if exclude_seen else None,
            plan,
            user_columns=None if carried else user_ids,
            carry=(USER_ID,) if carried else (),
            item_ids=item_ids,
        )
    return recommendations.select(
        USER_ID,
        ITEM_ID,
        F.col(RANK).cast("int").alias(RANK),
        F.col(SCORE).cast("float").alias(SCORE),
        F.lit(model_version).alias(MODEL_VERSION),
    )


def recommendation_files(
    spark: SparkSession,
    model_users: UserTable,
    prepared: Location,
    plan: ScoringPlan,
    *,
    exclude_seen: bool,
    model_version: str,
) -> TaskFiles:
    """The rows of :func:`recommendation_table` for a broadcast user table, written to Parquet by
    the scoring tasks themselves (:mod:`recspark.serve.task_files`): no Spark SQL on the way in
    or out."""
    tasks = rated_tasks(
        spark,
        prepared / RATED,
        model_users,
        plan,
        carry=(USER_ID,),
        item_ids=item_id_array(prepared),
        exclude_seen=exclude_seen,
    )
    return TaskFiles(spark, tasks, model_version)


def item_id_array(prepared: Location) -> pa.Array:
    """The raw item id of every item index, typed as Spark reads the id map (without a read)."""
    index = prepared / "item_index"
    item_ids = raw_ids(index, ITEM_ID, ITEM_IDX, parquet_rows(index))
    return item_ids.cast(to_arrow_type(from_arrow_type(item_ids.type)))


def model_users(
    spark: SparkSession,
    model: EmbeddingModel,
    folder: Location,
    prepared: Location,
    limit_mb: float,
) -> DataFrame | UserTable:
    """The model's user table as :func:`recommendation_table` takes it: broadcast arrays when they
    fit ``limit_mb`` and ``rated/`` lists every user, else the ``user_factors`` DataFrame."""
    weights = model.user_factors.weight
    size = (weights.numel() + len(weights)) * 4  # factors and one bias per user, float32
    fits = size <= limit_mb * 2**20
    if fits and lists_every_user(prepared, len(weights)):
        return UserTable.of(model)
    log.info(
        "joining the user table (%.1f MiB; score.broadcast_users_mb=%s) with %s",
        size / 2**20,
        limit_mb,
        prepared / RATED,
    )
    return spark.read.parquet(str(folder / "user_factors"))
