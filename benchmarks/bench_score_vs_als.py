"""The score job beside its own kernel and Spark ALS's ``recommendForAllUsers``, in one run.

Not a test: issue 5's and issue 31's measurement. On the embedded synthetic data set (default 10M
ratings, 100k users x 20k items), with ``--factors`` factors and top ``--top-n``, it times:

- **score, in this session**: the ``score`` command's ``run`` (load the model, its eligible items,
  broadcast its item side and user table, read prepare's ``rated/`` table, blocked matmul + top-k
  per block of users, raw ids, staged Parquet, atomic publish, counts checked against the files),
  ``--repeat`` times in the benchmark's warm session; the best counts. Each attempt's Spark jobs
  are listed (:mod:`spark_timeline`) with the seconds no job covered (driver work);
- **score, cold**: ``recspark score`` as a scheduler runs it, in a fresh process with its own JVM:
  the command's own ``seconds`` (from its summary line: Spark started, nothing else) and the
  process's wall seconds (JVM start included);
- **the kernel alone**: :func:`recspark.serve.kernel.recommend_batches` over the same users (the
  ``rated/`` table read by pyarrow, the same model, eligible items and exclusions), with as many
  torch threads as the session has cores: what scoring costs with no Spark at all;
- **Spark ALS**: ``recommendForAllUsers(top_n)`` of an ALS model of the same rank, written to
  Parquet (best of ``--repeat``).

With ``--table-format delta`` the score is published as a Delta table instead. Neither side's
training is timed: scoring does not depend on how well a model was trained, so recspark trains
``--epochs`` epochs (unless a model is already published at ``--root``) and ALS fits
``--als-iterations`` iterations. Generating and preparing are skipped when ``--root`` holds them.

Example (issue 5's line)::

    .venv/bin/python benchmarks/bench_score_vs_als.py --root runs/bench-score-10m
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.spark_timeline import JobTime, jobs_since, last_job_id  # noqa: E402
from recspark.commands import score, train  # noqa: E402
from recspark.commands.benchmark import ensure_prepared  # noqa: E402
from recspark.core.config import Config, load_config  # noqa: E402
from recspark.core.spark import get_spark  # noqa: E402
from recspark.core.storage import Layout, read_parquet  # noqa: E402
from recspark.data.prepared import RATED, eligible_in_run  # noqa: E402
from recspark.evaluate.benchmark import Dataset  # noqa: E402
from recspark.model.published_context import PublishedContext  # noqa: E402
from recspark.serve.kernel import UserTable, recommend_batches  # noqa: E402
from recspark.serve.scoring import item_side_payload  # noqa: E402

RUN_DATE = "2026-01-15"
log = logging.getLogger("bench_score_vs_als")


@dataclass
class ScoreFigures:
    """One data set's figures: seconds of each side and where score's seconds went."""

    users: int
    items: int
    ratings: int
    cores: int
    table_format: str
    kernel_seconds: float
    score_seconds: list[float]
    als_seconds: list[float]
    cold_seconds: float | None = None  # the command's own seconds in a fresh process
    cold_wall_seconds: float | None = None  # that process, JVM start included
    jobs: list[dict] = field(default_factory=list)  # the best warm attempt's Spark jobs
    driver_seconds: float | None = None  # of the best warm attempt, when no Spark job ran

    @property
    def best_score(self) -> float:
        return min(self.score_seconds)

    @property
    def best_als(self) -> float:
        return min(self.als_seconds)

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "vs_als": self.best_als / self.best_score,
            "vs_als_cold": self.best_als / self.cold_seconds if self.cold_seconds else None,
            "over_kernel": self.best_score / self.kernel_seconds,
            "allowed": 1.3 * self.kernel_seconds + 3.0,  # issue 31's bound on score's seconds
        }


def bench_overrides(
    root: str,
    *,
    ratings: int,
    users: int,
    items: int,
    factors: int,
    top_n: int,
    epochs: int,
    extra: tuple[str, ...] = (),
) -> list[str]:
    return [
        f"paths.root={root}",
        f"run_date={RUN_DATE}",
        f"synthetic.users={users}",
        f"synthetic.items={items}",
        f"synthetic.ratings={ratings}",
        f"synthetic.factors={factors}",  # as bench_train_vs_als plants them: one data set
        "model.kind=dot_bias",
        f"model.factors={factors}",
        f"train.epochs={epochs}",
        "train.batch_size=65536",
        "train.lr=0.02",
        f"score.top_n={top_n}",
        "score.exclude_seen=true",
        *extra,
    ]


def kernel_seconds(config: Config, spark: SparkSession, repeat: int = 2) -> float:
    """Best of ``repeat``: every user's top-N through the kernel alone, no Spark (see above)."""
    layout = Layout(config.paths.root)
    context = PublishedContext.open(layout, config.run_date)
    lists, prepared = context.lists, context.prepared
    n_items = context.published.spec.n_items
    eligible = eligible_in_run(spark, prepared, n_items, config.score.min_item_ratings)
    payload = item_side_payload(lists.model, lists.spec, lists.meta)
    users = UserTable.of(lists.model)
    table = read_parquet(prepared / RATED)
    torch.set_num_threads(spark.sparkContext.defaultParallelism)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        rows = 0
        for out in recommend_batches(
            iter(table.to_batches(max_chunksize=10_000)),
            payload,
            config.score.top_n,
            "auto",
            "cpu",
            carry=("user_id",),
            users=users,
            eligible=eligible,
        ):
            rows += out.num_rows
        best = min(best, time.perf_counter() - started)
    return best


def cold_score(overrides: list[str]) -> tuple[float, float]:
    """``recspark score`` in a fresh process: (its summary's seconds, the process's wall)."""
    arguments = [part for item in overrides for part in ("--set", item)]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "recspark.cli", "score", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if done.returncode != 0:
        raise RuntimeError(f"cold score failed: {summary.get('error')}\n{done.stderr[-2000:]}")
    return float(summary["seconds"]), wall


def timed_score(config: Config, spark: SparkSession) -> tuple[float, list[JobTime]]:
    """The score command's ``run`` in this session: seconds and the Spark jobs it ran."""
    before = last_job_id(spark)
    started = time.perf_counter()
    score.run(config, spark)
    seconds = time.perf_counter() - started
    return seconds, jobs_since(spark, before)


def measure_score_vs_als(
    spark: SparkSession,
    root: str,
    *,
    ratings: int,
    users: int,
    items: int,
    factors: int = 32,
    top_n: int = 10,
    epochs: int = 1,
    als_iterations: int = 2,
    repeat: int = 2,
    table_format: str = "parquet",
    cold: bool = True,
) -> ScoreFigures:
    """Every figure above for one data set at ``root`` (generated, prepared, trained if absent)."""
    extra = (f"score.table_format={table_format}",)
    overrides = bench_overrides(
        root,
        ratings=ratings,
        users=users,
        items=items,
        factors=factors,
        top_n=top_n,
        epochs=epochs,
        extra=extra,
    )
    config = load_config(None, overrides)
    dataset = Dataset("synthetic", config, ratings)
    ensure_prepared(spark, dataset)
    layout = dataset.layout
    if not (layout.model(RUN_DATE) / "model.pt").exists():
        train.run(config, spark)
    # One table format per root: start each measurement from no published recommendations.
    shutil.rmtree(str(layout.recommendations).replace("file:", ""), ignore_errors=True)
    cores = spark.sparkContext.defaultParallelism
    kernel = kernel_seconds(config, spark)
    log.info("kernel alone: %.2f s for %d users", kernel, users)

    from pyspark.ml.recommendation import ALS

    ratings_frame = spark.read.parquet(str(layout.prepared(RUN_DATE) / "train"))
    als = ALS(
        userCol="user_idx",
        itemCol="item_idx",
        ratingCol="rating",
        rank=factors,
        maxIter=als_iterations,
        regParam=0.1,
        seed=42,
    ).fit(ratings_frame)
    als.userFactors.count()
    figures = ScoreFigures(users, items, ratings, cores, table_format, kernel, [], [])
    best_jobs: list[JobTime] = []
    for attempt in range(repeat):
        seconds, jobs = timed_score(config, spark)
        if not figures.score_seconds or seconds < min(figures.score_seconds):
            best_jobs = jobs
        figures.score_seconds.append(seconds)
        target = layout.root / "als_recommendations" / f"attempt-{attempt}"
        started = time.perf_counter()
        als.recommendForAllUsers(top_n).write.mode("overwrite").parquet(str(target))
        figures.als_seconds.append(time.perf_counter() - started)
        log.info(
            "attempt %d: score %.2f s, ALS %.2f s", attempt + 1, seconds, figures.als_seconds[-1]
        )
    figures.jobs = [asdict(job) for job in best_jobs]
    figures.driver_seconds = figures.best_score - sum(job.seconds for job in best_jobs)
    if cold:
        figures.cold_seconds, figures.cold_wall_seconds = cold_score(overrides)
    return figures


def report(figures: ScoreFigures) -> str:
    """The figures as lines for people."""
    f = figures
    lines = [
        f"{f.ratings:,} ratings, {f.users:,} users x {f.items:,} items, {f.cores} cores, "
        f"{f.table_format}",
        f"  kernel alone (no Spark):            {f.kernel_seconds:8.2f} s "
        f"(issue 31's bound for score: {1.3 * f.kernel_seconds + 3:.2f} s)",
        f"  score, warm session (best of {len(f.score_seconds)}):    {f.best_score:8.2f} s "
        f"({', '.join(f'{s:.2f}' for s in f.score_seconds)})",
    ]
    if f.cold_seconds is not None:
        lines.append(
            f"  score, fresh process:               {f.cold_seconds:8.2f} s "
            f"({f.cold_wall_seconds:.1f} s with the JVM's start)"
        )
    lines.append(f"  Spark ALS recommendForAllUsers:     {f.best_als:8.2f} s")
    lines.append(
        f"  score vs ALS: {f.best_als / f.best_score:.1f}x warm"
        + (f", {f.best_als / f.cold_seconds:.1f}x cold" if f.cold_seconds else "")
    )
    lines.append(f"  where the best warm score went: {f.driver_seconds:.2f} s outside Spark jobs")
    lines += ["    " + JobTime(**job).line() for job in f.jobs]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/bench-score-10m", help="paths.root of the run")
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1, help="recspark training epochs (untimed)")
    parser.add_argument("--als-iterations", type=int, default=2, help="ALS iterations (untimed)")
    parser.add_argument("--repeat", type=int, default=2, help="timings per side; the best counts")
    parser.add_argument("--table-format", choices=("parquet", "delta"), default="parquet")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process score")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("recspark").setLevel(logging.INFO)
    log.setLevel(logging.INFO)
    args = parse_args(argv)
    conf = load_config(None, []).spark
    spark = get_spark("recspark-bench-score", master=conf.master, conf=conf.conf)
    figures = measure_score_vs_als(
        spark,
        args.root,
        ratings=args.ratings,
        users=args.users,
        items=args.items,
        factors=args.factors,
        top_n=args.top_n,
        epochs=args.epochs,
        als_iterations=args.als_iterations,
        repeat=args.repeat,
        table_format=args.table_format,
        cold=not args.no_cold,
    )
    print(report(figures), file=sys.stderr, flush=True)
    summary = {"command": "bench_score_vs_als", "status": "ok", "metrics": figures.as_dict()}
    print(json.dumps(summary), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
