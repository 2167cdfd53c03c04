"""recommend: one user's top-N, one item's neighbours, and two batch views of the item embeddings.

Exactly one query, or none when only batch outputs are asked for:

- ``recommend.user=ID``: an existing user's top-N from their trained row, items they rated (in
  any split of the prepared run) left out; the same list ``score`` publishes for them.
- ``recommend.ratings=ITEM=RATING,...``: a new user, folded in (:mod:`recspark.serve.foldin`): their
  row and bias solved from these ratings with the item side fixed, no retraining; items they
  rated left out.
- ``recommend.similar_to=ITEM``: the items nearest to one item by cosine of the embeddings.

Batch outputs, alone or beside a query:

- ``recommend.similar_table``: the top ``recommend.top_n`` neighbours of every item, a Spark job
  published whole as ``similar_items/run_date=D`` (``item_id``, ``similar_item_id``, ``rank``,
  ``similarity``, ``model_version``).
- ``recommend.pca_plot``: PCA of the item embeddings, ``exploration/D/item_pca.png`` and
  ``item_pca.json`` (share of variance per component, the items at both ends of each).

Candidates (and neighbours) are items with at least ``score.min_item_ratings`` training ratings
(train split of the model's prepared run): rows of rarer items have barely moved from their random
start. ``score`` and ``evaluate`` take the same mask from the same counts, so a known user's list
here is the one ``score`` publishes for the same model. The model used is the newest published
on or before ``run_date``. Item-sized tables (item index, item factors, titles, per-item counts)
come to the driver; user tables and ratings stay in Spark, filtered to the one user asked about.
The list is the summary's ``recommendations`` (``item_id``, ``score``, ``title``; best first) and
a table on stderr.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.commands.stage import Stage, StageResult
from recspark.core.config import Config, RankingConfig, RecommendConfig
from recspark.core.constants import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.core.errors import BadInputError, ConfigError, MissingInputError
from recspark.core.storage import Layout, latest_date
from recspark.data.prepared import eligible_in_run, rated, read_manifest
from recspark.evaluate.explore import write_exploration
from recspark.model.published_context import PublishedContext
from recspark.serve.foldin import parse_ratings
from recspark.serve.recommend import (
    ListedItem,
    UserList,
    fold_in_regularization,
    format_table,
    item_ids_by_index,
    known_user_list,
    listing,
    lookup_items,
    lookup_user,
    new_user_list,
    ranking_settings,
    title_labels,
    to_raw_id,
)
from recspark.serve.similar import ItemFactors, most_similar, read_item_factors, write_similar_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Catalogue:
    """What every query reads of the model's prepared run, on the driver: the raw id of each item
    index, the id column's type, the train split, the eligible items and their titles."""

    item_index: DataFrame
    item_ids: np.ndarray
    train: DataFrame
    eligible: np.ndarray
    labels: dict[int, str]


def run(config: Config, spark: SparkSession) -> StageResult:
    """Answer ``config.recommend``'s query and write its batch outputs (module docstring)."""
    settings = config.recommend
    wanted = (settings.user, settings.ratings, settings.similar_to)
    if not any((*wanted, settings.similar_table, settings.pca_plot)):
        raise ConfigError(
            "recommend needs a query: set recommend.user, recommend.ratings or "
            "recommend.similar_to, or a batch output: recommend.similar_table=true, "
            "recommend.pca_plot=true"
        )
    given = parse_ratings(settings.ratings) if settings.ratings is not None else None
    layout = Layout(config.paths.root)
    model_date = latest_date(layout.root / "models", upto=config.run_date)
    if model_date is None:
        raise MissingInputError(
            f"no trained model on or before {config.run_date} under {layout.root}: "
            "run `recspark train`"
        )
    context = PublishedContext.open(layout, model_date)  # id maps checked before any task
    catalogue = _catalogue(spark, context, settings, config.score.min_item_ratings)
    metrics: dict[str, Any] = {
        "model_version": context.model_version,
        "model_run_date": model_date,
        "eligible_items": int(catalogue.eligible.sum()),
    }
    recommendations: list[ListedItem] = []
    heading, score_name = None, "score"
    chosen = None
    if given is not None:
        chosen = _new_user(context, catalogue, settings, config.ranking, given)
    elif settings.user is not None:
        chosen = _known_user(spark, context, catalogue, settings)
    if chosen is not None:
        recommendations = listing(chosen.index, chosen.scores, catalogue.item_ids, catalogue.labels)
        metrics.update(chosen.facts)
        heading = chosen.heading
    result = _item_side_outputs(spark, context, catalogue, settings, run_date=config.run_date)
    if result.similar is not None:
        recommendations, heading, score_name = result.similar
    metrics.update(result.metrics)
    if heading is not None:
        print(format_table(recommendations, heading, score_name), file=sys.stderr, flush=True)
    return StageResult(
        outputs={"model": str(context.published.folder / "model.pt"), **result.outputs},
        counts={
            "recommendations": len(recommendations),
            "items": context.lists.model.n_items,
            **result.counts,
        },
        metrics=metrics,
        extra={"recommendations": recommendations},
    )


def _catalogue(
    spark: SparkSession, context: PublishedContext, settings: RecommendConfig, min_ratings: int
) -> _Catalogue:
    n_items = context.lists.model.n_items
    item_index = spark.read.parquet(str(context.prepared / "item_index"))
    item_ids = item_ids_by_index(item_index.select(ITEM_ID, ITEM_IDX).toPandas(), n_items)
    train = spark.read.parquet(str(context.prepared / "train"))
    eligible = eligible_in_run(spark, context.prepared, n_items, min_ratings)
    labels = title_labels(item_ids, settings.titles_path)
    return _Catalogue(item_index, item_ids, train, eligible, labels)


def _new_user(
    context: PublishedContext,
    catalogue: _Catalogue,
    settings: RecommendConfig,
    ranking_config: RankingConfig,
    given: list[tuple[str, float]],
) -> UserList:
    """The list of a new user folded in from ``recommend.ratings`` (``given``)."""
    published, model = context.published, context.lists.model
    item_id_type = catalogue.item_index.schema[ITEM_ID].dataType
    raw_ids = [to_raw_id(item, item_id_type, "recommend.ratings item") for item, _ in given]
    values = np.array([rating for _, rating in given], dtype=np.float64)
    low, high = read_manifest(context.layout, published.meta.index_date).rating_range
    outside = [f"{item}={rating:g}" for item, rating in given if not low <= rating <= high]
    if outside:
        raise BadInputError(
            f"recommend.ratings {outside} are outside the rating range [{low:g}, {high:g}]"
        )
    rated_idx = lookup_items(raw_ids, catalogue.item_ids)
    regularization = fold_in_regularization(settings.regularization, published.metrics)
    ranking = ranking_settings(
        ranking_config,
        published.metrics,
        published.lists_objective,
        catalogue.train,
        model.n_items,
        every_row_positive=published.lists_from_head,
    )
    chosen = new_user_list(
        model,
        rated_idx,
        values,
        catalogue.eligible,
        top_n=settings.top_n,
        regularization=regularization,
        ranking=ranking,
    )
    chosen.facts["objective"] = published.lists_objective
    return chosen


def _known_user(
    spark: SparkSession, context: PublishedContext, catalogue: _Catalogue, settings: RecommendConfig
) -> UserList:
    """The list of the model's user ``recommend.user``, the items it rated left out."""
    prepared = context.prepared
    user_index = spark.read.parquet(str(prepared / "user_index"))
    raw_user = to_raw_id(str(settings.user), user_index.schema[USER_ID].dataType, "recommend.user")
    user_idx = lookup_user(user_index, raw_user)
    # data.prepared annotates Path but takes the Location Layout.prepared gives.
    rows = rated(spark, prepared)
    seen = [
        row[ITEM_IDX]
        for row in rows.where(F.col(USER_IDX) == user_idx).select(ITEM_IDX).distinct().collect()
    ]
    return known_user_list(
        context.lists.model,
        user_idx,
        np.asarray(seen, dtype=np.int64),
        catalogue.eligible,
        top_n=settings.top_n,
        raw_user=raw_user,
    )


@dataclass(frozen=True)
class _ItemSideResult:
    """What the item-embedding outputs add to the summary; ``similar`` is the
    ``recommend.similar_to`` list with its heading and score name, when asked for."""

    outputs: dict[str, Any]
    counts: dict[str, Any]
    metrics: dict[str, Any]
    similar: tuple[list[ListedItem], str, str] | None = None


def _item_side_outputs(
    spark: SparkSession,
    context: PublishedContext,
    catalogue: _Catalogue,
    settings: RecommendConfig,
    *,
    run_date: dt.date,
) -> _ItemSideResult:
    """``recommend.similar_to``'s neighbours, the similar-items table and the PCA plot: what reads
    the model's item factors."""
    outputs: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    similar = None
    if settings.similar_to is None and not settings.similar_table and not settings.pca_plot:
        return _ItemSideResult(outputs, counts, metrics)
    factors_path = str(context.published.folder / "item_factors")
    item_side: ItemFactors = read_item_factors(factors_path)
    if settings.similar_to is not None:
        item_id_type = catalogue.item_index.schema[ITEM_ID].dataType
        raw_item = to_raw_id(settings.similar_to, item_id_type, "recommend.similar_to")
        item_idx = int(lookup_items([raw_item], catalogue.item_ids)[0])
        index, scores = most_similar(
            item_side.factors, item_idx, settings.top_n, catalogue.eligible
        )
        listed = listing(index, scores, catalogue.item_ids, catalogue.labels)
        metrics.update(mode="similar_items", item_idx=item_idx)
        name = catalogue.labels.get(item_idx, "")
        heading = f"{settings.top_n} items most similar to {raw_item} {name}".rstrip()
        similar = (listed, heading, "cosine")
    if settings.similar_table:
        path, rows = write_similar_table(
            spark,
            context.layout,
            run_date,
            item_factors_path=factors_path,
            factors=item_side.factors,
            eligible=catalogue.eligible,
            item_index=catalogue.item_index,
            top_n=settings.top_n,
            model_version=context.model_version,
        )
        outputs["similar_items"] = path
        counts["similar_rows"] = rows
    if settings.pca_plot:
        paths, summary = write_exploration(
            context.layout,
            run_date,
            item_side.factors,
            catalogue.eligible,
            catalogue.labels,
            catalogue.item_ids,
        )
        outputs.update(paths)
        metrics["pca_variance_share"] = [round(v, 6) for v in summary["variance_share"][:10]]
    return _ItemSideResult(outputs, counts, metrics, similar)


STAGE = Stage(
    name="recommend",
    purpose="Top-N for one existing or new user, or the items most similar to one item.",
    sections=("paths", "run_date", "recommend", "spark"),
    example="recspark recommend --set recommend.user=196 --set recommend.top_n=10",
    run=run,
)
