"""benchmark: recspark and Spark ALS on the same data in one run, side by side.

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
- ``als-implicit``: Spark ALS with ``implicitPrefs`` (``benchmark.als_implicit_*``), timed as ALS.

Models whose scores are not ratings (the ranking objective, implicit ALS) have no RMSE.

Every contender is measured by the same code as ``evaluate`` (:func:`recspark.evaluate.metrics.assess`):
RMSE on the validation split and ranking metrics at ``evaluate.k`` with training items excluded
(ALS is ranked through the same blocked kernel from its own factors, because its
``recommendForAllUsers`` cannot leave out seen items). The table on stderr shows, per data set,
RMSE, NDCG@k, train and score seconds, and each contender's ratios to ``benchmark.reference``;
a second table shows NDCG, precision, recall and MAP at k.
``benchmark/reports/RUN_DATE/benchmark.json`` keeps every figure.

Adding a contender: write a function ``(spark, dataset, split) -> ContenderResult`` and register
it in :data:`CONTENDERS` (another recspark model: ``recspark_contender(name, model_config)``; a
library model: fit it, give :func:`recspark.commands.evaluate.assess_contender` its predictions
and a :class:`recspark.evaluate.baselines.Scorer` of its factors). A new printed table is a function
``k -> [Column, ...]`` appended to :data:`TABLES`; every contender already carries every metric of
:func:`recspark.evaluate.metrics.assess`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from recspark.commands import evaluate, generate, prepare, score, train
from recspark.commands.evaluate import predicts_ratings
from recspark.core.config import Config, load_config
from recspark.core.errors import ConfigError, MissingInputError
from recspark.core.storage import Layout, local_path, read_json, staged, write_json
from recspark.evaluate.baselines import Fitted, Scorer, fit_als, fit_als_implicit, mean_rating
from recspark.model.saving import load_published_model, model_bytes
from recspark.serve.scoring import item_side_payload, predict

log = logging.getLogger(__name__)

ML100K = "ml100k-u1"
ML100K_RANKING = "ml100k-ranking"


@dataclass
class Dataset:
    """One data set: its name, the config that prepares and trains on it, its size."""

    name: str
    config: Config
    ratings: int
    contenders: list[str] = field(default_factory=list)

    @property
    def layout(self) -> Layout:
        return Layout(self.config.paths.root)


@dataclass
class ContenderResult:
    """What one contender did on one data set: timings and every metric of :func:`assess`."""

    name: str
    train_seconds: float
    score_seconds: float | None
    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def figure(self, key: str) -> Any:
        if key in ("train_seconds", "score_seconds"):
            return getattr(self, key)
        return self.metrics.get(key)


Contender = Callable[[SparkSession, Dataset, "evaluate.EvaluationSplit"], ContenderResult]


def _timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


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

    def run(spark: SparkSession, dataset: Dataset, split) -> ContenderResult:
        config = dataset.config
        if model_config is not None:
            tuned = load_config(model_config)
            sections = [s for s in ("model", "train", "ranking") if s in type(tuned).model_fields]
            config = config.model_copy(update={s: getattr(tuned, s) for s in sections})
        if name != "recspark":
            root = dataset.layout.root / "contenders" / name
            source = prepare.input_path(dataset.config)
            config = config.model_copy(update={
                "paths": config.paths.model_copy(update={"root": str(root)}),
                "input": config.input.model_copy(update={"path": source}),
            })
            ensure_prepared(spark, Dataset(name, config, dataset.ratings))
        layout = Layout(config.paths.root)
        trained, train_seconds = _timed(train.run, config, spark)
        scored, score_seconds = _timed(score.run, config, spark)
        folder, model, spec, meta, version = load_published_model(layout, config.run_date)
        whole = model_bytes(model, spec, meta)

        def predict_model(pairs):
            return predict(spark, pairs, whole, config.train.device)

        scorer = Scorer(
            spark.read.parquet(str(folder / "user_factors")), item_side_payload(model, spec, meta)
        )
        metrics = evaluate.assess_contender(
            spark, split, predict_model if predicts_ratings(meta) else None, scorer,
            config.score.users_per_block,
            config.train.device, config.score.partitions,
        )
        info = {
            "model_version": version,
            "kind": spec["kind"],
            "objective": meta.get("objective", "rating"),
            "factors": spec.get("factors"),
            "epochs": trained["metrics"].get("epochs"),
            "trainer_validation_rmse": trained["metrics"].get("validation_rmse"),
            "scored_users": scored["counts"]["users"],
            "scored_rows": scored["counts"]["rows"],
            "root": str(layout.root),
        }
        return ContenderResult(name, train_seconds, score_seconds, metrics, info)

    return run


def ranking_contender(spark: SparkSession, dataset: Dataset, split) -> ContenderResult:
    """recspark trained for ranking: the model, train and ranking sections of
    ``benchmark.ranking_config``."""
    chosen = recspark_contender("recspark-ranking", dataset.config.benchmark.ranking_config)
    return chosen(spark, dataset, split)


def _als_recommend_seconds(fitted: Fitted, dataset: Dataset, name: str) -> tuple[float, Path]:
    """Seconds of ``recommendForAllUsers(top_n)`` written to Parquet: ALS's own scoring job."""
    config = dataset.config
    target = dataset.layout.root / f"{name}_recommendations" / str(config.run_date)
    started = time.perf_counter()
    fitted.native.recommendForAllUsers(config.score.top_n).write.mode("overwrite").parquet(
        str(target)
    )
    return time.perf_counter() - started, target


def run_als(spark: SparkSession, dataset: Dataset, split) -> ContenderResult:
    """Spark ALS, tuned on small data sets, timed on its final fit and on recommendForAllUsers."""
    config = dataset.config
    settings, bench = config.evaluate, config.benchmark
    if dataset.ratings <= bench.tune_max_ratings:
        ranks, regs = settings.als_ranks, settings.als_reg_params
    else:
        ranks = [bench.als_rank or config.model.factors]
        regs = [bench.als_reg_param or settings.als_reg_params[-1]]
    fitted: Fitted = fit_als(
        split.train, split.n_items, ranks, regs, settings.als_max_iter, settings.als_seed,
        settings.als_tune_fraction, mean_rating(split.train),
    )
    score_seconds, target = _als_recommend_seconds(fitted, dataset, "als")
    metrics = evaluate.assess_contender(
        spark, split, fitted.predict, fitted.scorer, config.score.users_per_block,
        config.train.device, config.score.partitions,
    )
    info = {key: value for key, value in fitted.info.items()}
    info["recommendations"] = str(target)
    return ContenderResult("als", fitted.train_seconds, score_seconds, metrics, info)


def run_als_implicit(spark: SparkSession, dataset: Dataset, split) -> ContenderResult:
    """Spark ALS with ``implicitPrefs`` on the same training rows; it ranks, it has no RMSE."""
    config = dataset.config
    bench, settings = config.benchmark, config.evaluate
    fitted = fit_als_implicit(
        split.train, split.n_items, bench.als_implicit_rank, bench.als_implicit_reg_param,
        bench.als_implicit_alpha, settings.als_max_iter, settings.als_seed,
    )
    score_seconds, target = _als_recommend_seconds(fitted, dataset, "als_implicit")
    metrics = evaluate.assess_contender(
        spark, split, None, fitted.scorer, config.score.users_per_block,
        config.train.device, config.score.partitions,
    )
    info = {**fitted.info, "recommendations": str(target)}
    return ContenderResult("als-implicit", fitted.train_seconds, score_seconds, metrics, info)


#: Registered contenders by name; ``benchmark.contenders`` (``benchmark.ranking_contenders`` on
#: the ranking data set) picks and orders them.
CONTENDERS: dict[str, Contender] = {
    "recspark": recspark_contender(),
    "recspark-ranking": ranking_contender,
    "als": run_als,
    "als-implicit": run_als_implicit,
}


@dataclass(frozen=True)
class Column:
    """One printed column: its header, the figure's key, its format and whether lower is better."""

    header: str
    key: str
    digits: int = 4
    lower_is_better: bool = True
    ratio: bool = True


def accuracy_table(k: int) -> list[Column]:
    """The table issue 6 asks for: accuracy, and time to train and to score everyone."""
    return [
        Column("RMSE", "rmse"),
        Column(f"NDCG@{k}", "ndcg_at_k", lower_is_better=False),
        Column("train s", "train_seconds", 1),
        Column("score s", "score_seconds", 1),
    ]


def ranking_table(k: int) -> list[Column]:
    """The table issue 9 asks for: the top-k lists' quality, every contender on its own lists."""
    return [
        Column(f"NDCG@{k}", "ndcg_at_k", lower_is_better=False),
        Column(f"Precision@{k}", "precision_at_k", lower_is_better=False),
        Column(f"Recall@{k}", "recall_at_k", lower_is_better=False),
        Column(f"MAP@{k}", "map_at_k", lower_is_better=False),
    ]


#: Tables printed, each built from ``evaluate.k``; append a builder to add one.
TABLES: list[Callable[[int], list[Column]]] = [accuracy_table, ranking_table]


def datasets(config: Config) -> list[Dataset]:
    """The configured data sets, each with the config its pipeline runs under."""
    bench = config.benchmark
    base = Layout(config.paths.root).root / "benchmark"
    chosen: list[Dataset] = []
    for kind in bench.datasets:
        if kind == ML100K:
            folder = _movielens(bench.movielens_path, "u1.base", kind)
            update = {
                "input": config.input.model_copy(update={
                    "path": str(folder / "u1.base"), "format": "movielens-100k",
                    "validation_path": str(folder / "u1.test"), "rating_min": 1.0, "rating_max": 5.0,
                }),
                "split": config.split.model_copy(update={"method": "given"}),
            }
            chosen.append(_dataset(config, ML100K, base, update, 80_000))
        elif kind == ML100K_RANKING:
            folder = _movielens(bench.movielens_path, "u.data", kind)
            update = {
                "input": config.input.model_copy(update={
                    "path": str(folder / "u.data"), "format": "movielens-100k",
                    "validation_path": None, "rating_min": 1.0, "rating_max": 5.0,
                }),
                "split": config.split.model_copy(update={
                    "method": "user_stratified", "validation_fraction": 0.25, "seed": 42,
                }),
                "evaluate": config.evaluate.model_copy(update={"relevance_threshold": 0.0}),
            }
            chosen.append(_dataset(config, kind, base, update, 100_000, bench.ranking_contenders))
        else:
            for size in bench.synthetic_sizes:
                users = max(1, size // bench.ratings_per_user)
                items = max(2, size // bench.ratings_per_item)
                synthetic = config.synthetic.model_copy(
                    update={"users": users, "items": items, "ratings": size}
                )
                try:
                    synthetic = type(synthetic).model_validate(synthetic.model_dump())
                except ValueError as exc:
                    raise ConfigError(
                        f"benchmark synthetic size {size}: {users} users x {items} items cannot hold "
                        f"it ({exc}); change benchmark.ratings_per_user / ratings_per_item"
                    ) from None
                update = {
                    "synthetic": synthetic,
                    "input": config.input.model_copy(update={"path": None, "format": "synthetic"}),
                }
                chosen.append(_dataset(config, f"synthetic-{_short(size)}", base, update, size))
    return chosen


def _movielens(path: str, name: str, kind: str) -> Path:
    folder = local_path(path)
    if not (folder / name).exists():
        raise MissingInputError(
            f"MovieLens 100K's {name} is not in {folder}: set benchmark.movielens_path to the "
            f"unpacked ml-100k folder, or drop {kind} from benchmark.datasets"
        )
    return folder


def _short(size: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def _dataset(
    config: Config,
    name: str,
    base: Path,
    update: dict,
    ratings: int,
    contenders: list[str] | None = None,
) -> Dataset:
    source = config.benchmark.model_configs.get(name)
    if source is not None:
        tuned = load_config(source)
        update = {**update, "model": tuned.model, "train": tuned.train}
    paths = config.paths.model_copy(update={"root": str(base / name)})
    chosen = list(config.benchmark.contenders if contenders is None else contenders)
    return Dataset(name, config.model_copy(update={**update, "paths": paths}), ratings, chosen)


def ensure_prepared(spark: SparkSession, dataset: Dataset) -> dict[str, Any]:
    """Generate (synthetic) and prepare the data set unless this very input is already prepared."""
    config, layout = dataset.config, dataset.layout
    if config.input.format == "synthetic" and config.input.path is None:
        truth = layout.truth / "truth.json"
        # Through JSON, as truth.json stores it (tuples become lists).
        wanted = json.loads(json.dumps(generate.spec_from(config).__dict__, default=str))
        if not truth.exists() or read_json(truth).get("spec") != wanted:
            log.info("%s: generating %d ratings", dataset.name, config.synthetic.ratings)
            generate.run(config, spark)
    manifest_path = layout.prepared(config.run_date) / "manifest.json"
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        same_input = manifest.get("input", {}).get("path") == prepare.input_path(config)
        if same_input and manifest.get("split") == config.split.model_dump():
            return manifest
    log.info("%s: preparing", dataset.name)
    prepare.run(config, spark)
    return read_json(manifest_path)


def ratios(results: list[ContenderResult], reference: str, columns: list[Column]) -> dict:
    """Each contender's figures divided by the reference's (time ratios: reference / contender)."""
    base = next((r for r in results if r.name == reference), None)
    out: dict[str, dict[str, float | None]] = {}
    if base is None:
        return out
    for result in results:
        if result.name == reference:
            continue
        entry = {}
        for column in columns:
            mine, theirs = result.figure(column.key), base.figure(column.key)
            if not column.ratio or mine is None or theirs is None or not (mine and theirs):
                entry[column.key] = None
            elif column.key.endswith("_seconds"):
                entry[column.key] = theirs / mine  # a speed-up: >1 means faster than the reference
            else:
                entry[column.key] = mine / theirs
        out[result.name] = entry
    return out


def format_table(
    rows: dict[str, list[ContenderResult]], columns: list[Column], reference: str
) -> str:
    """A plain-text table: one line per (data set, contender), then a ratio line per contender.

    On a ratio line, accuracy columns are contender / reference and time columns are reference /
    contender (a speed-up: ``2.000x`` is twice as fast as the reference).
    """
    headers = ["data set", "model", *[c.header for c in columns]]
    lines: list[list[str]] = []
    for name, results in rows.items():
        for result in results:
            cells = [name, result.name]
            for column in columns:
                value = result.figure(column.key)
                cells.append("n/a" if value is None else f"{value:.{column.digits}f}")
            lines.append(cells)
        for contender, entry in ratios(results, reference, columns).items():
            cells = [name, f"{contender}/{reference}"]
            for column in columns:
                value = entry.get(column.key)
                suffix = "x" if column.key.endswith("_seconds") else ""
                cells.append("n/a" if value is None else f"{value:.3f}{suffix}")
            lines.append(cells)
    widths = [max(len(row[i]) for row in [headers, *lines]) for i in range(len(headers))]
    render = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              for row in [headers, *lines]]
    render.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(render)


def run(config: Config, spark: SparkSession) -> dict[str, Any]:
    bench = config.benchmark
    for key in ("contenders", "ranking_contenders"):
        unknown = [name for name in getattr(bench, key) if name not in CONTENDERS]
        if unknown:
            raise ConfigError(
                f"benchmark.{key}: unknown {unknown}; registered: {sorted(CONTENDERS)}"
            )
    results: dict[str, list[ContenderResult]] = {}
    facts: dict[str, dict[str, Any]] = {}
    for dataset in datasets(config):
        manifest = ensure_prepared(spark, dataset)
        split = evaluate.read_split(
            spark, dataset.layout.prepared(dataset.config.run_date), manifest["items"],
            config.evaluate.k, dataset.config.evaluate.relevance_threshold,
        )
        facts[dataset.name] = {
            "users": manifest["users"], "items": manifest["items"], **manifest["counts"],
            "split": dataset.config.split.method,
            "relevance_threshold": dataset.config.evaluate.relevance_threshold,
            "root": str(dataset.layout.root),
        }
        results[dataset.name] = []
        for name in dataset.contenders:
            log.info("%s: running %s", dataset.name, name)
            result = CONTENDERS[name](spark, dataset, split)
            log.info("%s %s: %s", dataset.name, name,
                     {key: result.figure(key) for key in SUMMARY_KEYS})
            results[dataset.name].append(result)
        split.popularity.unpersist()
    tables = [builder(config.evaluate.k) for builder in TABLES]
    text = "\n\n".join(format_table(results, columns, bench.reference) for columns in tables)
    print(text, file=sys.stderr, flush=True)
    all_columns = [column for columns in tables for column in columns]
    report = {
        "run_date": str(config.run_date),
        "k": config.evaluate.k,
        "reference": bench.reference,
        "datasets": facts,
        "results": {
            name: {
                r.name: {"train_seconds": r.train_seconds, "score_seconds": r.score_seconds,
                         "metrics": r.metrics, "info": r.info}
                for r in rs
            }
            for name, rs in results.items()
        },
        "ratios": {name: ratios(rs, bench.reference, all_columns) for name, rs in results.items()},
        "table": text,
    }
    layout = Layout(config.paths.root)
    final = layout.root / "benchmark" / "reports" / str(config.run_date)
    with staged(layout, final, f"benchmark-{config.run_date}") as staging:
        write_json(staging / "benchmark.json", report)
        (staging / "table.txt").write_text(text + "\n")
    figures = {
        name: {r.name: {key: _finite(r.figure(key)) for key in SUMMARY_KEYS} for r in rs}
        for name, rs in results.items()
    }
    return {
        "outputs": {"report": str(final / "benchmark.json"), "table": str(final / "table.txt")},
        "counts": {name: {"train": f["train"], "validation": f["validation"]} for name, f in facts.items()},
        "metrics": figures,
        "ratios": report["ratios"],
    }


#: Figures of every contender in the JSON summary line (benchmark.json keeps all of them).
SUMMARY_KEYS = (
    "rmse", "ndcg_at_k", "precision_at_k", "recall_at_k", "map_at_k", "train_seconds",
    "score_seconds",
)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
