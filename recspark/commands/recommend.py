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

Candidates are items with at least ``recommend.min_item_ratings`` training ratings: rows of
rarer items have barely moved from their random start. The model used is the newest published
on or before ``run_date``. Item-sized tables (item index, item factors, titles, per-item counts)
come to the driver; user tables and ratings stay in Spark, filtered to the one user asked about.
The list is the summary's ``recommendations`` (``item_id``, ``score``, ``title``; best first) and
a table on stderr.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.config import Config
from recspark.core.constants import ITEM_ID, ITEM_IDX, MODEL_VERSION, USER_ID, USER_IDX
from recspark.core.errors import BadInputError, ConfigError, MissingInputError
from recspark.core.storage import Layout, latest_date, read_json, staged, write_json
from recspark.data.prepared import rated
from recspark.data.titles import read_titles
from recspark.evaluate.explore import item_pca, pca_plot, pca_summary
from recspark.model.saving import load_published_model
from recspark.serve.foldin import RankingFoldIn, fold_in, parse_ratings, score_user
from recspark.serve.kernel import top_k
from recspark.serve.similar import (
    RANK,
    SIMILAR_ITEM_IDX,
    SIMILARITY,
    most_similar,
    read_item_factors,
    similar_items_table,
)

log = logging.getLogger(__name__)

SIMILAR_ITEM_ID = "similar_item_id"
# Ridge weight of a fold-in when the model was trained without an embedding penalty.
FALLBACK_REGULARIZATION = 0.01


def item_ids_by_index(item_index: pd.DataFrame, n_items: int) -> np.ndarray:
    """Raw item id of every model item index, as an array of length ``n_items``."""
    if item_index[ITEM_IDX].max() >= n_items or item_index[ITEM_IDX].min() < 0:
        raise BadInputError(
            f"the item index has indices outside the model's {n_items} items: the model and the "
            "prepared run disagree; re-run train on this prepared run"
        )
    ordered = item_index.sort_values(ITEM_IDX)
    if len(ordered) != n_items or not ordered[ITEM_IDX].is_unique:
        raise BadInputError(
            f"the item index has {len(ordered)} rows for a model of {n_items} items: re-run train "
            "on this prepared run"
        )
    return ordered[ITEM_ID].to_numpy()


def to_raw_id(text: str, kind: T.DataType, what: str) -> Any:
    """A raw id given as text, in the type of the id column (``long`` ids need integer text)."""
    text = str(text).strip()
    if isinstance(kind, T.IntegralType):
        try:
            return int(text)
        except ValueError:
            raise BadInputError(f"{what} {text!r} is not an integer, and this model's ids are") from None
    if isinstance(kind, T.StringType):
        return text
    raise BadInputError(f"{what}: ids of type {kind.simpleString()} are not supported here")


def lookup_items(raw_ids: list, item_ids: np.ndarray) -> np.ndarray:
    """Model indices of raw item ids; every unknown id is named in one error."""
    position = {value.item() if hasattr(value, "item") else value: i for i, value in enumerate(item_ids)}
    unknown = [raw for raw in raw_ids if raw not in position]
    if unknown:
        raise BadInputError(
            f"item ids {unknown} are not in the model's item index ({len(item_ids)} items): check "
            "the ids (raw ids of the ratings input, e.g. u.data's item column)"
        )
    return np.array([position[raw] for raw in raw_ids], dtype=np.int64)


def lookup_user(user_index: DataFrame, raw_id: Any) -> int:
    """The index of one raw user id (a filter in Spark; one row comes back)."""
    rows = user_index.where(F.col(USER_ID) == F.lit(raw_id)).select(USER_IDX).limit(2).collect()
    if not rows:
        raise BadInputError(
            f"user {raw_id!r} is not in the model's user index: check recommend.user, or give the "
            "user's ratings as recommend.ratings to fold them in"
        )
    return int(rows[0][USER_IDX])


def item_rating_counts(train: DataFrame, n_items: int) -> np.ndarray:
    """Training ratings per item index (an item-sized aggregate)."""
    counts = train.groupBy(ITEM_IDX).count().toPandas()
    out = np.zeros(n_items, dtype=np.int64)
    out[counts[ITEM_IDX].to_numpy(dtype=np.int64)] = counts["count"].to_numpy()
    return out


def fold_in_regularization(setting: float | None, model_metrics: dict) -> float:
    """``recommend.regularization``, else the ``train.weight_decay`` the model was trained with."""
    if setting is not None:
        return float(setting)
    trained = float((model_metrics.get("train") or {}).get("weight_decay") or 0.0)
    return trained if trained > 0 else FALLBACK_REGULARIZATION


def ranking_settings(
    config: Config, model_metrics: dict, meta: dict, train: DataFrame, n_items: int
) -> RankingFoldIn | None:
    """How the model was ranked in training (None for a rating model).

    The settings recorded with the model win; a model that did not record them is assumed to
    have been trained with this config's ``ranking.*``.
    """
    if meta.get("objective", "rating") != "ranking":
        return None
    recorded = model_metrics.get("ranking") or config.ranking.model_dump()
    settings = RankingFoldIn(
        loss=recorded.get("loss", "softmax"),
        positive_threshold=float(recorded.get("positive_threshold", 0.0)),
        sampling_alpha=float(recorded.get("sampling_alpha", 0.0)),
        confidence=recorded.get("confidence", "none"),
        confidence_alpha=float(recorded.get("confidence_alpha", 1.0)),
    )
    if settings.loss == "bpr" and settings.sampling_alpha > 0:
        from recspark.train.objectives.ranking import item_popularity

        counts = item_popularity(train, n_items, settings.positive_threshold)
        settings = dataclasses.replace(settings, item_counts=counts)
    return settings


def best_items(scores: np.ndarray, excluded: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-N (indices, scores) of one row of scores, ``excluded`` items masked, ties to lower index."""
    masked = torch.as_tensor(np.asarray(scores, dtype=np.float32)).clone()
    masked[torch.as_tensor(excluded)] = -torch.inf
    index, value, valid = top_k(masked[None, :], top_n)
    keep = valid[0].numpy()
    return index[0].numpy()[keep], value[0].numpy()[keep]


def listing(index: np.ndarray, scores: np.ndarray, item_ids: np.ndarray, labels: dict[int, str]) -> list[dict]:
    """The summary's ``recommendations``: ``{item_id, score, title}``, in the given order."""
    out = []
    for item, score in zip(index, scores, strict=True):
        raw = item_ids[int(item)]
        out.append(
            {
                "item_id": raw.item() if hasattr(raw, "item") else raw,
                "score": round(float(score), 6),
                "title": labels.get(int(item)),
            }
        )
    return out


def format_table(rows: list[dict], heading: str, score_name: str = "score") -> str:
    """A fixed-width table of :func:`listing` rows for people (stderr)."""
    lines = [heading, f"{'rank':>4}  {'item_id':>10}  {score_name:>10}  title"]
    for rank, row in enumerate(rows, start=1):
        lines.append(f"{rank:>4}  {row['item_id']!s:>10}  {row['score']:>10.4f}  {row['title'] or ''}")
    if not rows:
        lines.append("  (no eligible items)")
    return "\n".join(lines)


def write_similar_table(
    spark: SparkSession,
    layout: Layout,
    run_date,
    item_factors_path: str,
    factors: np.ndarray,
    eligible: np.ndarray,
    item_index: DataFrame,
    top_n: int,
    model_version: str,
) -> tuple[str, int]:
    """Publish ``similar_items/run_date=D`` whole; return (partition path, rows written)."""
    items = spark.read.parquet(item_factors_path).select(ITEM_IDX)
    neighbours = similar_items_table(spark, items, factors, top_n, eligible)
    ids = F.broadcast(item_index.select(ITEM_IDX, ITEM_ID))
    similar_ids = F.broadcast(
        item_index.select(F.col(ITEM_IDX).alias(SIMILAR_ITEM_IDX), F.col(ITEM_ID).alias(SIMILAR_ITEM_ID))
    )
    table = (
        neighbours.join(ids, ITEM_IDX)
        .join(similar_ids, SIMILAR_ITEM_IDX)
        .select(
            ITEM_ID,
            SIMILAR_ITEM_ID,
            F.col(RANK).cast("int").alias(RANK),
            F.col(SIMILARITY).cast("float").alias(SIMILARITY),
            F.lit(model_version).alias(MODEL_VERSION),
        )
    )
    final = layout.root / "similar_items" / f"run_date={run_date}"
    with staged(layout, final, f"similar-items-{run_date}") as staging:
        table.write.mode("overwrite").parquet(str(staging))
        rows = spark.read.parquet(str(staging)).count()
    log.info("published %d similar-item rows to %s", rows, final)
    return str(final), rows


def write_exploration(
    layout: Layout,
    run_date,
    factors: np.ndarray,
    eligible: np.ndarray,
    labels: dict[int, str],
    item_ids: np.ndarray,
) -> tuple[dict[str, str], dict]:
    """Publish ``exploration/D`` (``item_pca.png``, ``item_pca.json``); return (paths, summary)."""
    pca = item_pca(factors, np.flatnonzero(eligible), components=3)
    summary = pca_summary(pca, labels, item_ids)
    final = layout.root / "exploration" / str(run_date)
    with staged(layout, final, f"exploration-{run_date}") as staging:
        pca_plot(pca, labels, staging / "item_pca.png")
        write_json(staging / "item_pca.json", summary)
    return {"pca_plot": str(final / "item_pca.png"), "pca_summary": str(final / "item_pca.json")}, summary


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
    folder, model, _spec, meta, model_version = load_published_model(layout, model_date)
    model_metrics = read_json(folder / "metrics.json")
    prepared = layout.prepared(meta["index_date"])
    item_index_frame = spark.read.parquet(str(prepared / "item_index"))
    item_ids = item_ids_by_index(item_index_frame.select(ITEM_ID, ITEM_IDX).toPandas(), model.n_items)
    item_id_type = item_index_frame.schema[ITEM_ID].dataType
    train = spark.read.parquet(str(prepared / "train"))
    counts = item_rating_counts(train, model.n_items)
    eligible = counts >= settings.min_item_ratings
    labels: dict[int, str] = {}
    if settings.titles_path:
        titles = read_titles(settings.titles_path)
        by_id = dict(zip(titles[ITEM_ID].tolist(), titles["title"].tolist(), strict=True))
        for index, raw in enumerate(item_ids):
            key = raw.item() if hasattr(raw, "item") else raw
            if key in by_id:
                labels[index] = by_id[key]
        if not labels:
            log.warning("no item id of the model is in %s: titles left empty", settings.titles_path)

    outputs: dict[str, Any] = {"model": str(folder / "model.pt")}
    metrics: dict[str, Any] = {
        "model_version": model_version,
        "model_run_date": model_date,
        "eligible_items": int(eligible.sum()),
    }
    recommendations: list[dict] = []
    heading = None
    score_name = "score"
    if given is not None:
        raw_ids = [to_raw_id(item, item_id_type, "recommend.ratings item") for item, _ in given]
        values = np.array([rating for _, rating in given], dtype=np.float64)
        low, high = read_json(prepared / "manifest.json")["rating_range"]
        outside = [f"{item}={rating:g}" for item, rating in given if not low <= rating <= high]
        if outside:
            raise BadInputError(f"recommend.ratings {outside} are outside the rating range [{low:g}, {high:g}]")
        rated_idx = lookup_items(raw_ids, item_ids)
        regularization = fold_in_regularization(settings.regularization, model_metrics)
        ranking = ranking_settings(config, model_metrics, meta, train, model.n_items)
        user = fold_in(model, rated_idx, values, regularization, ranking)
        excluded = ~eligible
        excluded[rated_idx] = True
        index, scores = best_items(score_user(model, user.vector, user.bias), excluded, settings.top_n)
        recommendations = listing(index, scores, item_ids, labels)
        metrics.update(
            mode="new_user",
            rated_items=len(given),
            regularization=regularization,
            objective=meta.get("objective", "rating"),
            fold_in_rmse=user.rmse,
            fold_in_rank_share=user.rank_share,
            fold_in_iterations=user.iterations,
            fold_in_bias=user.bias,
            fold_in_norm=float(np.linalg.norm(user.vector)),
        )
        heading = f"top {settings.top_n} for a new user folded in from {len(given)} ratings"
    elif settings.user is not None:
        user_index = spark.read.parquet(str(prepared / "user_index"))
        raw_user = to_raw_id(settings.user, user_index.schema[USER_ID].dataType, "recommend.user")
        user_idx = lookup_user(user_index, raw_user)
        seen = [
            row[ITEM_IDX]
            for row in rated(spark, prepared).where(F.col(USER_IDX) == user_idx).select(ITEM_IDX).distinct().collect()
        ]
        vector = model.user_factors.weight[user_idx].detach().cpu().numpy()
        bias = float(model.user_bias.weight[user_idx, 0].detach()) if hasattr(model, "user_bias") else 0.0
        excluded = ~eligible
        excluded[np.asarray(seen, dtype=np.int64)] = True
        index, scores = best_items(score_user(model, vector, bias), excluded, settings.top_n)
        recommendations = listing(index, scores, item_ids, labels)
        metrics.update(mode="user", user_idx=user_idx, rated_items=len(seen))
        heading = f"top {settings.top_n} for user {raw_user} ({len(seen)} items rated)"

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
