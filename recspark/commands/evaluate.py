"""evaluate: how good the trained model is, next to baselines fitted on the same split.

Rating metrics (RMSE, MAE) on the validation split, with the cold-start rows (users or items that
training never saw) reported apart. Ranking metrics at ``evaluate.k`` for every user with a
validation item rated at or above ``evaluate.relevance_threshold`` (0: every validation item is
relevant): each model ranks every item the user did not rate in training among the items with at
least ``score.min_item_ratings`` training ratings, the candidates ``score`` publishes. Baselines
(``evaluate.baselines``: global mean, user+item biases, Spark ALS, most popular, ALS
``implicitPrefs``) are fitted on the same training split in the same run and measured by the same
code (:func:`recspark.evaluate.metrics.assess`): the same users, excluded items, ``k`` and
relevance threshold. Beside accuracy, every list-making contender gets catalogue coverage, the
share of rare items (fewer than ``evaluate.rare_item_ratings`` training ratings), popularity bias
and, when ``model.side_info`` or ``recommend.titles_path`` gives the items' genres, intra-list
diversity. The best contender of each metric is marked (``best`` in the report and the summary).

Writes the report folder ``evaluation/RUN_DATE/``: ``evaluation.json``, ``training_curves.png``
(from the model's ``metrics.json`` history), ``metrics_vs_baselines.png``,
``metrics_vs_baselines.txt`` (the table also printed on stderr) and ``rating_distribution.png``
(rating models only: a ranking model's scores are not ratings, so its RMSE and MAE are None),
published whole like every output.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from recspark.core.config import Config
from recspark.core.constants import PREDICTION, RATING
from recspark.core.storage import Layout, staged, write_json
from recspark.data.side_info import item_genre_flags
from recspark.evaluate import report
from recspark.evaluate.assessment import (
    HISTOGRAM_BINS,
    SUMMARY_BASELINE_KEYS,
    assess_contender,
    fit_baseline,
    read_split,
)
from recspark.evaluate.baselines import (
    Scorer,
    mean_rating,
)
from recspark.evaluate.metrics import item_feature_frame
from recspark.model.published import check_id_maps, load_published_model
from recspark.model.saving import model_bytes
from recspark.serve.scoring import WorkerWarmup, item_side_payload, predict

log = logging.getLogger(__name__)


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    layout = Layout(config.paths.root)
    model, published = load_published_model(layout, config.run_date)
    check_id_maps(layout, published)  # before any Spark task
    # The Python workers start and import torch while the driver plans (after every refusal:
    # a command that refuses runs no Spark job).
    WorkerWarmup(spark)
    spec, meta = published.spec.as_dict(), published.meta.as_dict()
    prepared = layout.prepared(published.meta.index_date)
    settings = config.evaluate
    side = config.model.side_info
    genres = item_genre_flags(
        prepared,
        published.spec.n_items,
        side.format if side else None,
        side.path if side else None,
        config.recommend.titles_path,
    )
    split = read_split(
        spark,
        prepared,
        published.spec.n_items,
        settings.k,
        settings.relevance_threshold,
        config.score.min_item_ratings,
        settings.rare_item_ratings,
        item_feature_frame(spark, genres) if genres is not None else None,
    )
    device, block = config.train.device, config.score.users_per_block
    whole_model = model_bytes(model, spec, meta)

    def predict_model(pairs: DataFrame) -> DataFrame:
        return predict(spark, pairs, whole_model, device)

    rates = published.predicts_ratings
    lists = published.lists(model)  # the published lists' model: a ranking head's, or its own
    scorer = Scorer(
        spark.read.parquet(str(lists.factors / "user_factors")),
        item_side_payload(lists.model, lists.spec, lists.meta),
    )
    metrics = assess_contender(
        spark,
        split,
        predict_model if rates else None,
        scorer,
        block,
        device,
        config.score.partitions,
    )
    log.info("model: RMSE %s, NDCG@%d %s", metrics["rmse"], settings.k, metrics["ndcg_at_k"])

    mean = mean_rating(split.train)
    baselines: dict[str, dict[str, Any]] = {}
    for name in settings.baselines:
        fitted = fit_baseline(name, split, settings, mean)
        baseline_metrics = assess_contender(
            spark, split, fitted.predict, fitted.scorer, block, device, config.score.partitions
        )
        baselines[name] = {
            "metrics": baseline_metrics,
            "train_seconds": fitted.train_seconds,
            "info": fitted.info,
        }
        log.info(
            "%s: RMSE %s, NDCG@%d %s",
            name,
            baseline_metrics["rmse"],
            settings.k,
            baseline_metrics["ndcg_at_k"],
        )

    low, high = config.input.rating_min - 0.5, config.input.rating_max + 0.5
    predictions = predict_model(split.validation) if rates else None
    distribution = {
        "low": low,
        "high": high,
        "prediction": (
            report.histogram(predictions, PREDICTION, low, high, HISTOGRAM_BINS) if rates else None
        ),
        "truth": report.histogram(split.validation, RATING, low, high, HISTOGRAM_BINS),
    }
    history = published.metrics.get("history", [])
    evaluation = {
        "run_date": str(config.run_date),
        "model_version": published.model_version,
        "model_kind": published.spec.kind,
        "k": settings.k,
        "relevance_threshold": settings.relevance_threshold,
        "min_item_ratings": config.score.min_item_ratings,
        "eligible_items": (
            int(split.eligible.sum()) if split.eligible is not None else split.n_items
        ),
        "metrics": metrics,
        "baselines": baselines,
        "rating_distribution": distribution,
        "definitions": {
            "ranking": (
                "users with a relevant validation item; every item not rated in train with at "
                "least min_item_ratings train ratings is ranked"
            ),
            "novelty": "mean -log2((train raters of item + 1) / (train users + 1)) over listed items",
            "coverage": "share of the catalogue that appears in any list",
            "rare_item_share": (
                f"share of list entries whose item has fewer than {settings.rare_item_ratings} "
                "train ratings"
            ),
            "heldout_rare_item_share": (
                "the same share over the ranked users' validation items (their own choices)"
            ),
            "popularity_bias": (
                "log_popularity (mean log(1 + train ratings) of listed items) minus "
                "heldout_log_popularity (the same over the ranked users' validation items)"
            ),
            "intra_list_diversity": (
                "mean over lists of the mean pairwise 1 - cosine of the items' genre flags; "
                "null without genres (model.side_info or recommend.titles_path)"
            ),
            "best": "per metric, the best contender(s): lowest RMSE/MAE, highest otherwise",
            "cold_start": "validation rows whose user or item is absent from train, reported apart",
        },
    }
    final = layout.evaluation(config.run_date)
    with staged(layout, final, f"evaluation-{config.run_date}") as staging:
        plots = []
        objective = published.meta.objective
        if report.training_curves(history, staging / "training_curves.png", objective):
            plots.append("training_curves.png")
        table = {"model": metrics, **{name: b["metrics"] for name, b in baselines.items()}}
        best = report.best_per_metric(table)
        evaluation["best"] = best
        report.metric_table(table, settings.k, staging / "metrics_vs_baselines.png", best)
        plots.append("metrics_vs_baselines.png")
        text = report.format_metric_table(table, best)
        (staging / "metrics_vs_baselines.txt").write_text(text + "\n")
        print(text, file=sys.stderr, flush=True)
        if rates:
            report.rating_distribution(
                distribution["prediction"],
                distribution["truth"],
                low,
                high,
                staging / "rating_distribution.png",
            )
            plots.append("rating_distribution.png")
        evaluation["plots"] = plots
        write_json(staging / "evaluation.json", evaluation)
    split.popularity.unpersist()
    counts = {
        "validation": metrics.pop("validation_rows"),
        "cold_start": metrics.pop("cold_start_rows", None),
        "ranked_users": metrics.pop("ranked_users"),
    }
    return {
        "outputs": {
            "report": str(final / "evaluation.json"),
            "folder": str(final),
            "table": str(final / "metrics_vs_baselines.txt"),
            "plots": [str(final / name) for name in plots],
        },
        "counts": counts,
        "metrics": metrics,
        "baselines": {
            name: {key: b["metrics"][key] for key in SUMMARY_BASELINE_KEYS}
            for name, b in baselines.items()
        },
        "best": best,
    }
