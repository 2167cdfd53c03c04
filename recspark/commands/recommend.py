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

import logging
import sys
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.core.config import Config
from recspark.core.constants import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.core.errors import BadInputError, ConfigError, MissingInputError
from recspark.core.storage import Layout, latest_date
from recspark.data.prepared import eligible_items, rated, read_manifest
from recspark.evaluate.explore import write_exploration
from recspark.model.published import check_id_maps, load_published_model
from recspark.serve.foldin import parse_ratings
from recspark.serve.recommend import (
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
from recspark.serve.similar import (
    most_similar,
    read_item_factors,
    write_similar_table,
)

log = logging.getLogger(__name__)


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    settings = config.recommend
    if not any(
        (settings.user, settings.ratings, settings.similar_to, settings.similar_table, settings.pca_plot)
    ):
        raise ConfigError(
            "recommend needs a query: set recommend.user, recommend.ratings or recommend.similar_to, "
            "or a batch output: recommend.similar_table=true, recommend.pca_plot=true"
        )
    given = parse_ratings(settings.ratings) if settings.ratings is not None else None
    layout = Layout(config.paths.root)
    model_date = latest_date(layout.root / "models", upto=config.run_date)
    if model_date is None:
        raise MissingInputError(
            f"no trained model on or before {config.run_date} under {layout.root}: run `recspark train`"
        )
    rating_model, published = load_published_model(layout, model_date)
    check_id_maps(layout, published)  # before any Spark task
    # The lists score publishes: a ranking head's model, or the model itself.
    model = published.lists(rating_model).model
    folder, model_version = published.folder, published.model_version
    prepared = layout.prepared(published.meta.index_date)
    item_index_frame = spark.read.parquet(str(prepared / "item_index"))
    item_ids = item_ids_by_index(item_index_frame.select(ITEM_ID, ITEM_IDX).toPandas(), model.n_items)
    item_id_type = item_index_frame.schema[ITEM_ID].dataType
    train = spark.read.parquet(str(prepared / "train"))
    eligible = eligible_items(train, model.n_items, config.score.min_item_ratings)
    labels = title_labels(item_ids, settings.titles_path)

    outputs: dict[str, Any] = {"model": str(folder / "model.pt")}
    metrics: dict[str, Any] = {
        "model_version": model_version,
        "model_run_date": model_date,
        "eligible_items": int(eligible.sum()),
    }
    recommendations: list[dict] = []
    chosen = None
    heading = None
    score_name = "score"
    if given is not None:
        raw_ids = [to_raw_id(item, item_id_type, "recommend.ratings item") for item, _ in given]
        values = np.array([rating for _, rating in given], dtype=np.float64)
        low, high = read_manifest(layout, published.meta.index_date).rating_range
        outside = [f"{item}={rating:g}" for item, rating in given if not low <= rating <= high]
        if outside:
            raise BadInputError(f"recommend.ratings {outside} are outside the rating range [{low:g}, {high:g}]")
        rated_idx = lookup_items(raw_ids, item_ids)
        regularization = fold_in_regularization(settings.regularization, published.metrics)
        ranking = ranking_settings(
            config, published.metrics, published.lists_objective, train, model.n_items,
            every_row_positive=published.lists_from_head,
        )
        chosen = new_user_list(
            model, rated_idx, values, eligible, settings.top_n, regularization, ranking
        )
        chosen.facts["objective"] = published.lists_objective
    elif settings.user is not None:
        user_index = spark.read.parquet(str(prepared / "user_index"))
        raw_user = to_raw_id(settings.user, user_index.schema[USER_ID].dataType, "recommend.user")
        user_idx = lookup_user(user_index, raw_user)
        seen = [
            row[ITEM_IDX]
            for row in rated(spark, prepared).where(F.col(USER_IDX) == user_idx).select(ITEM_IDX).distinct().collect()
        ]
        chosen = known_user_list(model, user_idx, seen, eligible, settings.top_n, raw_user)
    if chosen is not None:
        recommendations = listing(chosen.index, chosen.scores, item_ids, labels)
        metrics.update(chosen.facts)
        heading = chosen.heading

    item_side = None
    if settings.similar_to is not None or settings.similar_table or settings.pca_plot:
        item_side = read_item_factors(str(folder / "item_factors"))
    if settings.similar_to is not None:
        raw_item = to_raw_id(settings.similar_to, item_id_type, "recommend.similar_to")
        item_idx = int(lookup_items([raw_item], item_ids)[0])
        index, scores = most_similar(item_side.factors, item_idx, settings.top_n, eligible)
        recommendations = listing(index, scores, item_ids, labels)
        metrics.update(mode="similar_items", item_idx=item_idx)
        name = labels.get(item_idx, "")
        heading = f"{settings.top_n} items most similar to {raw_item} {name}".rstrip()
        score_name = "cosine"
    counts_out: dict[str, Any] = {"recommendations": len(recommendations), "items": model.n_items}
    if settings.similar_table:
        path, rows = write_similar_table(
            spark, layout, config.run_date, str(folder / "item_factors"), item_side.factors,
            eligible, item_index_frame, settings.top_n, model_version,
        )
        outputs["similar_items"] = path
        counts_out["similar_rows"] = rows
    if settings.pca_plot:
        paths, summary = write_exploration(layout, config.run_date, item_side.factors, eligible, labels, item_ids)
        outputs.update(paths)
        metrics["pca_variance_share"] = [round(v, 6) for v in summary["variance_share"][:10]]
    if heading is not None:
        print(format_table(recommendations, heading, score_name), file=sys.stderr, flush=True)
    return {"recommendations": recommendations, "outputs": outputs, "counts": counts_out, "metrics": metrics}
