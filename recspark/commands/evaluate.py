"""evaluate: how good the trained model is, next to baselines fitted on the same split.

Every figure is measured on the prepared run's test split when it has one (``split.test_fraction``
or ``input.test_path``: rows that nothing in training read), else on its validation split, the one
that also chose the model; the summary (``metrics.split``) and the report (``split``) name it.
Rating metrics (RMSE, MAE) on that split, with the cold-start rows (users or items that
training never saw) reported apart. Ranking metrics at ``evaluate.k`` for every user with a
held-out item rated at or above ``evaluate.relevance_threshold`` (0: every validation item is
relevant): each model ranks every item the user did not rate in training (nor in validation,
measured on test) among the items with at
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

With tracking on (``tracking.uri``) the evaluation is logged to MLflow as one run (settings,
figures, the report folder; :mod:`recspark.ops.tracking_records`), named in the summary's
``tracking`` field.

This module is the wiring: the report is built in the evaluate room
(:mod:`recspark.evaluate.evaluation`, :mod:`recspark.evaluate.evaluation_report`).
"""

from __future__ import annotations

from dataclasses import replace

from pyspark.sql import SparkSession

from recspark.commands.stage import Stage, StageResult
from recspark.core.config import Config
from recspark.core.storage import Layout, read_json
from recspark.data.prepared import MANIFEST, PreparedRun, evaluation_split
from recspark.data.side_info import item_genre_flags
from recspark.evaluate.assessment import SUMMARY_BASELINE_KEYS, KernelSettings, read_split
from recspark.evaluate.evaluation import EvaluationSettings, evaluate_published
from recspark.evaluate.evaluation_report import EvaluationFiles, EvaluationReport, write_evaluation
from recspark.evaluate.metrics import item_feature_frame
from recspark.evaluate.oracle import assess_oracle
from recspark.model.published_context import PublishedContext
from recspark.ops.tracking import check_tracking, tracked_run
from recspark.ops.tracking_records import record_evaluation, run_tags
from recspark.serve.scoring import WorkerWarmup


def precheck(config: Config) -> None:
    """Before Spark starts: the tracking server, when there is one, answers."""
    check_tracking(config.tracking)


def run(config: Config, spark: SparkSession) -> StageResult:
    """Evaluate the model published for ``config.run_date``, write its report and, with tracking
    on, log it as one MLflow run."""
    name = f"evaluate {config.run_date}"
    with tracked_run(config.tracking, name, run_tags(config, "evaluate")) as tracked:
        context, result, files = _evaluate(config, spark)
        if tracked is None:
            return result
        tracking = record_evaluation(
            tracked,
            config,
            result.summary(),
            [str(files.report), str(files.table), *(str(files.folder / p) for p in files.plots)],
            (context.prepared / "validation", context.published.meta.index_fingerprint),
        )
    return StageResult(
        result.outputs, result.counts, result.metrics, {"tracking": tracking, **result.extra}
    )


def _evaluate(
    config: Config, spark: SparkSession
) -> tuple[PublishedContext, StageResult, EvaluationFiles]:
    layout = Layout(config.paths.root)
    context = PublishedContext.open(layout, config.run_date)  # id maps checked before any task
    # The Python workers start and import torch while the driver plans (after every refusal:
    # a command that refuses runs no Spark job).
    WorkerWarmup(spark)
    settings, side, n_items = (
        config.evaluate,
        config.model.side_info,
        context.published.spec.n_items,
    )
    genres = item_genre_flags(
        str(context.prepared),
        n_items,
        side.format if side else None,
        side.path if side else None,
        config.recommend.titles_path,
    )
    split = read_split(
        spark,
        context.prepared,
        n_items,
        settings.k,
        settings.relevance_threshold,
        config.score.min_item_ratings,
        rare_item_ratings=settings.rare_item_ratings,
        item_features=item_feature_frame(spark, genres) if genres is not None else None,
        split=evaluation_split(context.prepared),
    )
    evaluation = evaluate_published(
        spark,
        context,
        split,
        settings,
        EvaluationSettings(
            run_date=str(config.run_date),
            kernel=KernelSettings.of(config.score, config.train.device),
            min_item_ratings=config.score.min_item_ratings,
            rating_range=(config.input.rating_min, config.input.rating_max),
        ),
    )
    # On the embedded synthetic data, the planted truth's own figures: the upper reference.
    # (A run without a manifest, made by hand or by another tool, is not synthetic data.)
    if (context.prepared / MANIFEST).exists():
        manifest = PreparedRun.model_validate(read_json(context.prepared / MANIFEST))
        kernel = KernelSettings.of(config.score, config.train.device)
        oracle = assess_oracle(
            spark, layout, manifest, context.prepared, split, settings.relevance_threshold, kernel
        )
        evaluation = replace(evaluation, oracle=oracle)
    files = write_evaluation(
        layout,
        evaluation,
        context.published.metrics.get("history", []),
        context.published.meta.objective,
    )
    split.popularity.unpersist()
    return context, summary(evaluation, files), files


def summary(evaluation: EvaluationReport, files: EvaluationFiles) -> StageResult:
    """The summary line: the model's figures (row counts moved to ``counts``) and the split they
    were measured on (``split``), each baseline's
    :data:`~recspark.evaluate.assessment.SUMMARY_BASELINE_KEYS` and the best contenders."""
    metrics = {"split": evaluation.split, **evaluation.metrics}
    counts = {
        evaluation.split: metrics.pop(f"{evaluation.split}_rows"),
        "cold_start": metrics.pop("cold_start_rows", None),
        "ranked_users": metrics.pop("ranked_users"),
    }
    return StageResult(
        outputs={
            "report": str(files.report),
            "folder": str(files.folder),
            "table": str(files.table),
            "plots": [str(files.folder / name) for name in files.plots],
        },
        counts=counts,
        metrics=metrics,
        extra={
            "baselines": {
                name: {key: b.metrics[key] for key in SUMMARY_BASELINE_KEYS}
                for name, b in evaluation.baselines.items()
            },
            "best": files.best,
        }
        | (
            {"oracle": {key: evaluation.oracle.metrics[key] for key in SUMMARY_BASELINE_KEYS}}
            if evaluation.oracle
            else {}
        ),
    )


STAGE = Stage(
    name="evaluate",
    purpose="Rating and ranking metrics of the trained model on the test (or validation) split.",
    sections=("paths", "run_date", "evaluate", "score", "spark", "tracking"),
    example="recspark evaluate --set evaluate.k=20",
    run=run,
    precheck=precheck,
)
