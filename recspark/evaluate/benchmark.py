"""The benchmark's parts: its data sets and the library and baseline contenders (Spark ALS explicit
and ``implicitPrefs``, most popular, user+item biases, EASE), each measured by
:func:`~recspark.evaluate.assessment.assess_contender` into a
:class:`~recspark.evaluate.benchmark_report.ContenderResult`.

The benchmark command (:mod:`recspark.commands.benchmark`) wires them to the pipeline's own
commands, so recspark is measured as a user runs it, beside Spark ALS on the same split; the
tables, ratios and ``benchmark.json`` are :mod:`recspark.evaluate.benchmark_report`'s. A data
set carries the whole config its pipeline (prepare, train, score) runs under, so the contenders
read their sections from it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyspark.sql import SparkSession

from recspark.core.config import Config, load_config
from recspark.core.constants import USER_IDX
from recspark.core.errors import ConfigError, MissingInputError
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.data.prepared import rated_lists
from recspark.evaluate.assessment import (
    EvaluationSplit,
    KernelSettings,
    assess_contender,
    fit_baseline,
)
from recspark.evaluate.baselines import Fitted, Scorer, fit_als, fit_als_implicit, mean_rating
from recspark.evaluate.benchmark_report import ContenderResult
from recspark.evaluate.ease import ease_top_k, fit_ease
from recspark.serve.scoring import ScoringPlan, recommend_all

T = TypeVar("T")

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


class Skipped(Exception):
    """A contender that does not run on this data set; the message says why (the benchmark prints
    it and keeps it in ``benchmark.json``)."""


def timed(function: Callable[..., T], *args: Any) -> tuple[T, float]:
    """``function(*args)`` and the seconds it took."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def _als_recommend_seconds(fitted: Fitted, dataset: Dataset, name: str) -> tuple[float, Location]:
    """Seconds of ``recommendForAllUsers(top_n)`` written to Parquet: ALS's own scoring job."""
    config = dataset.config
    target = dataset.layout.root / f"{name}_recommendations" / str(config.run_date)
    started = time.perf_counter()
    fitted.native.recommendForAllUsers(config.score.top_n).write.mode("overwrite").parquet(
        str(target)
    )
    return time.perf_counter() - started, target


def run_als(spark: SparkSession, dataset: Dataset, split: EvaluationSplit) -> ContenderResult:
    """Spark ALS, tuned on small data sets, timed on its final fit and on recommendForAllUsers."""
    config = dataset.config
    settings, bench = config.evaluate, config.benchmark
    if dataset.ratings <= bench.tune_max_ratings:
        ranks, regs = settings.als_ranks, settings.als_reg_params
    else:
        ranks = [bench.als_rank or config.model.factors]
        regs = [bench.als_reg_param or settings.als_reg_params[-1]]
    fitted: Fitted = fit_als(
        split.train,
        split.n_items,
        ranks,
        regs,
        max_iter=settings.als_max_iter,
        seed=settings.als_seed,
        holdout_fraction=settings.als_tune_fraction,
        mean=mean_rating(split.train),
    )
    score_seconds, target = _als_recommend_seconds(fitted, dataset, "als")
    metrics = assess_contender(
        spark,
        split,
        fitted.predict,
        fitted.scorer,
        kernel=KernelSettings.of(config.score, config.train.device),
    )
    info = {key: value for key, value in fitted.info.items()}
    info["recommendations"] = str(target)
    return ContenderResult("als", fitted.train_seconds, score_seconds, metrics, info)


def run_als_implicit(
    spark: SparkSession, dataset: Dataset, split: EvaluationSplit
) -> ContenderResult:
    """Spark ALS with ``implicitPrefs`` on the same training rows; it ranks, it has no RMSE.

    Its settings are ``benchmark.als_implicit_*`` where set, else ``evaluate.als_implicit_*``.
    """
    config = dataset.config
    bench, settings = config.benchmark, config.evaluate
    fitted = fit_als_implicit(
        split.train,
        split.n_items,
        bench.als_implicit_rank or settings.als_implicit_rank,
        bench.als_implicit_reg_param or settings.als_implicit_reg_param,
        bench.als_implicit_alpha or settings.als_implicit_alpha,
        max_iter=settings.als_max_iter,
        seed=settings.als_seed,
    )
    score_seconds, target = _als_recommend_seconds(fitted, dataset, "als_implicit")
    metrics = assess_contender(
        spark,
        split,
        None,
        fitted.scorer,
        kernel=KernelSettings.of(config.score, config.train.device),
    )
    info = {**fitted.info, "recommendations": str(target)}
    return ContenderResult("als-implicit", fitted.train_seconds, score_seconds, metrics, info)


def _kernel_recommend_seconds(
    spark: SparkSession, scorer: Scorer, dataset: Dataset, split: EvaluationSplit, name: str
) -> tuple[float, Location]:
    """Seconds to write every training user's top ``score.top_n`` (training items excluded) to
    Parquet through the scoring kernel: a kernel-scored baseline's own scoring job."""
    config = dataset.config
    target = dataset.layout.root / f"{name}_recommendations" / str(config.run_date)
    lists = recommend_all(
        spark,
        scorer.users,
        split.seen,
        ScoringPlan(
            scorer.payload,
            config.score.top_n,
            users_per_block=config.score.users_per_block,
            device=config.train.device,
            partitions=config.score.partitions,
            eligible=split.eligible,
        ),
    )
    started = time.perf_counter()
    lists.write.mode("overwrite").parquet(str(target))
    return time.perf_counter() - started, target


def baseline_contender(name: str, baseline: str) -> Callable[..., ContenderResult]:
    """A contender of one of evaluate's baselines (``baseline``, fitted by
    :func:`recspark.evaluate.assessment.fit_baseline` with the ``evaluate`` settings), timed on its
    fit and on scoring every training user through the kernel."""

    def run(spark: SparkSession, dataset: Dataset, split: EvaluationSplit) -> ContenderResult:
        config = dataset.config
        fitted = fit_baseline(baseline, split, config.evaluate, mean_rating(split.train))
        assert fitted.scorer is not None, f"baseline {baseline} has no scorer to rank with"
        score_seconds, target = _kernel_recommend_seconds(
            spark, fitted.scorer, dataset, split, baseline
        )
        metrics = assess_contender(
            spark,
            split,
            fitted.predict,
            fitted.scorer,
            kernel=KernelSettings.of(config.score, config.train.device),
        )
        info = {**fitted.info, "recommendations": str(target)}
        return ContenderResult(name, fitted.train_seconds, score_seconds, metrics, info)

    return run


run_most_popular = baseline_contender("most-popular", "most_popular")
run_biases = baseline_contender("biases", "biases")


def run_ease(spark: SparkSession, dataset: Dataset, split: EvaluationSplit) -> ContenderResult:
    """EASE (:mod:`recspark.evaluate.ease`) with ``benchmark.ease_lambda``: train time is the Gram
    matrix in Spark plus the solve, score time every training user's top ``score.top_n`` written
    to Parquet. It ranks, it has no RMSE.

    Raises
    ------
    Skipped
        When the catalogue has more than ``benchmark.ease_max_items`` items.
    """
    config = dataset.config
    bench = config.benchmark
    if split.n_items > bench.ease_max_items:
        raise Skipped(
            f"{split.n_items} items is above benchmark.ease_max_items ({bench.ease_max_items}): "
            "EASE inverts an items x items matrix on the driver"
        )
    model = fit_ease(split.train, split.n_items, bench.ease_lambda)
    block, device, partitions = (
        config.score.users_per_block,
        config.train.device,
        config.score.partitions,
    )
    every = rated_lists(split.seen).cache()
    target = dataset.layout.root / "ease_recommendations" / str(config.run_date)
    started = time.perf_counter()
    ease_top_k(
        spark,
        every,
        model.weights,
        config.score.top_n,
        block_setting=block,
        device=device,
        partitions=partitions,
        eligible=split.eligible,
    ).write.mode("overwrite").parquet(str(target))
    score_seconds = time.perf_counter() - started
    lists = ease_top_k(
        spark,
        every.join(split.users, USER_IDX),
        model.weights,
        split.k,
        block_setting=block,
        device=device,
        partitions=partitions,
        eligible=split.eligible,
    )
    metrics = assess_contender(spark, split, None, None, kernel=KernelSettings(), lists=lists)
    every.unpersist()
    info = {**model.info, "recommendations": str(target)}
    return ContenderResult("ease", model.train_seconds, score_seconds, metrics, info)


def datasets(config: Config) -> list[Dataset]:
    """The configured data sets, each with the config its pipeline runs under."""
    bench = config.benchmark
    base = Layout(config.paths.root).root / "benchmark"
    chosen: list[Dataset] = []
    for kind in bench.datasets:
        if kind == ML100K:
            folder = _movielens(bench.movielens_path, "u1.base", kind)
            update = {
                "input": config.input.model_copy(
                    update={
                        "path": str(folder / "u1.base"),
                        "format": "movielens-100k",
                        "validation_path": str(folder / "u1.test"),
                        "rating_min": 1.0,
                        "rating_max": 5.0,
                    }
                ),
                "split": config.split.model_copy(update={"method": "given"}),
            }
            chosen.append(_dataset(config, ML100K, base, update, 80_000))
        elif kind == ML100K_RANKING:
            folder = _movielens(bench.movielens_path, "u.data", kind)
            update = {
                "input": config.input.model_copy(
                    update={
                        "path": str(folder / "u.data"),
                        "format": "movielens-100k",
                        "validation_path": None,
                        "rating_min": 1.0,
                        "rating_max": 5.0,
                    }
                ),
                "split": config.split.model_copy(
                    update={
                        "method": "user_stratified",
                        "validation_fraction": 0.25,
                        "seed": 42,
                    }
                ),
                "evaluate": config.evaluate.model_copy(update={"relevance_threshold": 0.0}),
            }
            chosen.append(
                _dataset(config, kind, base, update, 100_000, contenders=bench.ranking_contenders)
            )
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
                        f"benchmark synthetic size {size}: {users} users x {items} items cannot "
                        f"hold it ({exc}); change benchmark.ratings_per_user / ratings_per_item"
                    ) from None
                update = {
                    "synthetic": synthetic,
                    "input": config.input.model_copy(update={"path": None, "format": "synthetic"}),
                }
                chosen.append(_dataset(config, f"synthetic-{_short(size)}", base, update, size))
    return chosen


def _movielens(path: str, name: str, kind: str) -> Location:
    folder = Location(path)
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
    base: Location,
    update: dict,
    ratings: int,
    *,
    contenders: list[str] | None = None,
) -> Dataset:
    source = config.benchmark.model_configs.get(name)
    if source is not None:
        tuned = load_config(source)
        update = {**update, "model": tuned.model, "train": tuned.train}
    paths = config.paths.model_copy(update={"root": str(base / name)})
    chosen = list(config.benchmark.contenders if contenders is None else contenders)
    return Dataset(name, config.model_copy(update={**update, "paths": paths}), ratings, chosen)
