"""benchmark: recspark beside Spark ALS and baselines (most popular, biases, EASE) on one split.

For each data set of ``benchmark.datasets`` (MovieLens 100K's ``u1`` split from
``benchmark.movielens_path``; ``ml100k-ranking``, its ``u.data`` split 75/25 per user with every
validation item relevant, as in the microsoft/recommenders ranking benchmark; and the embedded
synthetic generator at each of ``benchmark.synthetic_sizes`` ratings), the benchmark writes the
data (synthetic only), prepares it with the ``prepare`` command under
``<paths.root>/benchmark/<data set>/``, and then runs every contender of ``benchmark.contenders``
(``benchmark.ranking_contenders`` on ``ml100k-ranking``) on that one prepared split in this one
Spark session:

- ``recspark``: the ``train`` command (train time) and the ``score`` command, end to end to the
  published Parquet partition (score time); accuracy from the published model.
- ``als``: Spark MLlib ALS, explicit. At or below ``benchmark.tune_max_ratings`` ratings its
  ``rank`` and ``regParam`` are tuned over ``evaluate.als_ranks x evaluate.als_reg_params`` on a
  holdout of train (tuning time reported apart); above, ``benchmark.als_rank`` (default: the
  model's ``factors``) and ``benchmark.als_reg_param`` (default: the last grid value) are used.
  Train time is the final fit; score time is ``recommendForAllUsers(top_n)`` written to Parquet.
- ``recspark-ranking``: the ``recspark`` contender with the model, train and ranking sections of
  ``benchmark.ranking_config`` (``model.objective: ranking``), prepared apart from the same input.
- ``als-implicit``: Spark ALS with ``implicitPrefs`` (``benchmark.als_implicit_*``, by default
  ``evaluate.als_implicit_*``), timed as ALS.
- ``most-popular`` and ``biases``: evaluate's baselines of those names (the items with the most
  training ratings; ``mu + b_u + b_i`` with ``evaluate.bias_reg``/``bias_iterations``); score time
  is every training user's top ``score.top_n`` through the scoring kernel, written to Parquet.
- ``ease``: Steck's EASE (:mod:`recspark.evaluate.ease`) with ``benchmark.ease_lambda``; the item
  Gram matrix is counted in Spark, solved on the driver, and users are scored in Spark tasks with
  the weights broadcast. Above ``benchmark.ease_max_items`` items it is skipped, with the reason
  printed and kept in ``benchmark.json`` (``datasets.<name>.skipped``).

Models whose scores are not ratings (the ranking objective, implicit ALS, most popular, EASE) have
no RMSE.

Every contender is measured by the same code as ``evaluate``
(:func:`recspark.evaluate.metrics.assess`):
RMSE on the validation split and ranking metrics at ``evaluate.k`` with training items excluded
(ALS is ranked through the same blocked kernel from its own factors, because its
``recommendForAllUsers`` cannot leave out seen items). The table on stderr shows, per data set,
RMSE, NDCG@k, train and score seconds, and each contender's ratios to ``benchmark.reference``;
a second table shows NDCG, precision, recall and MAP at k.
``benchmark/reports/RUN_DATE/benchmark.json`` keeps every figure.

Adding a contender: write a function ``(spark, dataset, split) -> ContenderResult`` and register
it in :data:`CONTENDERS` (another recspark model: ``recspark_contender(name, model_config)``; a
library model: fit it, give :func:`recspark.evaluate.assessment.assess_contender` its predictions
and a :class:`recspark.evaluate.baselines.Scorer` of its factors). A new printed table is a function
``k -> [Column, ...]`` appended to :data:`recspark.evaluate.benchmark_report.TABLES`; every
contender already carries every metric of :func:`recspark.evaluate.metrics.assess`.

This module is the wiring: the contenders, the tables and the report live in the evaluate room
(:mod:`recspark.evaluate.benchmark`, :mod:`recspark.evaluate.benchmark_report`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable

from pyspark.sql import SparkSession

from recspark.commands import generate, prepare, score, train
from recspark.commands.stage import Stage, StageResult
from recspark.core.config import Config, load_config
from recspark.core.errors import ConfigError
from recspark.core.location import shown
from recspark.core.storage import Layout, read_json
from recspark.data.inputs import ratings_path
from recspark.data.prepared import MANIFEST, PreparedRun, read_manifest
from recspark.evaluate.assessment import (
    EvaluationSplit,
    KernelSettings,
    assess_contender,
    read_split,
)
from recspark.evaluate.benchmark import (
    Dataset,
    Skipped,
    datasets,
    run_als,
    run_als_implicit,
    run_biases,
    run_ease,
    run_most_popular,
    timed,
)
from recspark.evaluate.benchmark_report import (
    SUMMARY_KEYS,
    BenchmarkReport,
    ContenderResult,
    DatasetFacts,
    write_benchmark,
)
from recspark.evaluate.evaluation import published_contender
from recspark.model.published_context import PublishedContext

log = logging.getLogger(__name__)


Contender = Callable[[SparkSession, Dataset, EvaluationSplit], ContenderResult]


def recspark_contender(name: str = "recspark", model_config: str | None = None) -> Contender:
    """A recspark contender: the ``train`` and ``score`` commands as a user runs them.

    Parameters
    ----------
    name
        The contender's name. Any name but ``recspark`` trains and publishes under its own
        ``<data set root>/contenders/<name>``, prepared from the same input and split, so several
        recspark variants can run side by side without replacing each other's model.
    model_config
        A YAML config whose ``model`` and ``train`` sections (and ``ranking``, where the config
        has one) replace the data set's; None keeps them.
    """

    def run(spark: SparkSession, dataset: Dataset, split: EvaluationSplit) -> ContenderResult:
        config = _contender_config(spark, dataset, name, model_config)
        layout = Layout(config.paths.root)
        trained, train_seconds = timed(train.run, config, spark)
        scored, score_seconds = timed(score.run, config, spark)
        # benchmark trained the model on this very run moments ago: no id map to check.
        context = PublishedContext.open(layout, config.run_date, check_maps=False)
        contender = published_contender(spark, context, config.train.device)
        metrics = assess_contender(
            spark,
            split,
            contender.predict,
            contender.scorer,
            kernel=KernelSettings.of(config.score, config.train.device),
        )
        published = context.published
        info = {
            "model_version": published.model_version,
            "kind": published.spec.kind,
            "objective": published.meta.objective,
            "factors": getattr(published.spec, "factors", None),  # the dot kinds and the mlp
            "epochs": trained.metrics.get("epochs"),
            "trainer_validation_rmse": trained.metrics.get("validation_rmse"),
            "scored_users": scored.counts["users"],
            "scored_rows": scored.counts["rows"],
            "root": shown(str(layout.root)),
        }
        return ContenderResult(name, train_seconds, score_seconds, metrics, info)

    return run


def _contender_config(
    spark: SparkSession, dataset: Dataset, name: str, model_config: str | None
) -> Config:
    """The data set's config with ``model_config``'s model sections; a contender named other than
    ``recspark`` gets its own root, prepared from the same input."""
    config = dataset.config
    if model_config is not None:
        tuned = load_config(model_config)
        sections = [s for s in ("model", "train", "ranking") if s in type(tuned).model_fields]
        config = config.model_copy(update={s: getattr(tuned, s) for s in sections})
    if name != "recspark":
        root = dataset.layout.root / "contenders" / name
        source = ratings_path(dataset.config.input, dataset.config.paths.root)
        config = config.model_copy(
            update={
                "paths": config.paths.model_copy(update={"root": str(root)}),
                "input": config.input.model_copy(update={"path": source}),
            }
        )
        ensure_prepared(spark, Dataset(name, config, dataset.ratings))
    return config


def ranking_contender(
    spark: SparkSession, dataset: Dataset, split: EvaluationSplit
) -> ContenderResult:
    """recspark trained for ranking: the model, train and ranking sections of
    ``benchmark.ranking_config``."""
    chosen = recspark_contender("recspark-ranking", dataset.config.benchmark.ranking_config)
    return chosen(spark, dataset, split)


#: Registered contenders by name; ``benchmark.contenders`` (``benchmark.ranking_contenders`` on
#: the ranking data set) picks and orders them.
CONTENDERS: dict[str, Contender] = {
    "recspark": recspark_contender(),
    "recspark-ranking": ranking_contender,
    "als": run_als,
    "als-implicit": run_als_implicit,
    "most-popular": run_most_popular,
    "biases": run_biases,
    "ease": run_ease,
}


def ensure_prepared(spark: SparkSession, dataset: Dataset) -> PreparedRun:
    """Generate (synthetic) and prepare the data set unless this very input is already prepared."""
    config, layout = dataset.config, dataset.layout
    if config.input.format == "synthetic" and config.input.path is None:
        truth = layout.truth / "truth.json"
        # Through JSON, as truth.json stores it (tuples become lists).
        wanted = json.loads(json.dumps(generate.spec_from(config).__dict__, default=str))
        if not truth.exists() or read_json(truth).get("spec") != wanted:
            log.info("%s: generating %d ratings", dataset.name, config.synthetic.ratings)
            generate.run(config, spark)
    if (layout.prepared(config.run_date) / MANIFEST).exists():
        manifest = read_manifest(layout, config.run_date)
        same_input = manifest.input.path == ratings_path(config.input, config.paths.root)
        if same_input and manifest.split == config.split.model_dump():
            return manifest
    log.info("%s: preparing", dataset.name)
    prepare.run(config, spark)
    return read_manifest(layout, config.run_date)


def check_contenders(config: Config) -> None:
    """Refuse a ``benchmark.contenders`` or ``ranking_contenders`` name that :data:`CONTENDERS`
    lacks."""
    for key in ("contenders", "ranking_contenders"):
        unknown = [name for name in getattr(config.benchmark, key) if name not in CONTENDERS]
        if unknown:
            raise ConfigError(
                f"benchmark.{key}: unknown {unknown}; registered: {sorted(CONTENDERS)}"
            )


def run_dataset(spark: SparkSession, dataset: Dataset, k: int, report: BenchmarkReport) -> None:
    """Prepare one data set, run each of its contenders on its split, add them to ``report``."""
    settings = dataset.config.evaluate
    manifest = ensure_prepared(spark, dataset)
    split = read_split(
        spark,
        dataset.layout.prepared(dataset.config.run_date),
        manifest.items,
        k,
        settings.relevance_threshold,
        rare_item_ratings=settings.rare_item_ratings,
    )
    facts = DatasetFacts(
        users=manifest.users,
        items=manifest.items,
        counts=dict(manifest.counts),
        split=dataset.config.split.method,
        relevance_threshold=settings.relevance_threshold,
        root=shown(str(dataset.layout.root)),
    )
    report.facts[dataset.name] = facts
    results = report.results.setdefault(dataset.name, [])
    for name in dataset.contenders:
        log.info("%s: running %s", dataset.name, name)
        try:
            result = CONTENDERS[name](spark, dataset, split)
        except Skipped as reason:
            print(f"{dataset.name}: {name} skipped: {reason}", file=sys.stderr, flush=True)
            facts.skipped[name] = str(reason)
            continue
        figures = {key: result.figure(key) for key in SUMMARY_KEYS}
        log.info("%s %s: %s", dataset.name, name, figures)
        results.append(result)
    split.popularity.unpersist()


def run(config: Config, spark: SparkSession) -> StageResult:
    check_contenders(config)
    report = BenchmarkReport(str(config.run_date), config.evaluate.k, config.benchmark.reference)
    for dataset in datasets(config):
        run_dataset(spark, dataset, config.evaluate.k, report)
    files = write_benchmark(Layout(config.paths.root), report)
    return StageResult(
        outputs={"report": str(files.report), "table": str(files.table)},
        counts={
            name: {"train": facts.counts["train"], "validation": facts.counts["validation"]}
            for name, facts in report.facts.items()
        },
        metrics=report.summary_figures(),
        extra={"ratios": report.all_ratios()},
    )


STAGE = Stage(
    name="benchmark",
    purpose="recspark and Spark ALS on the same data in one run, side by side.",
    sections=("benchmark", "evaluate", "model", "train", "spark"),
    example="recspark benchmark --set 'benchmark.datasets=[synthetic]'",
    run=run,
)
