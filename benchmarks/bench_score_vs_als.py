"""The score job against Spark ALS's ``recommendForAllUsers``, timed side by side in one run.

Not a test: issue 5's acceptance measurement. On the embedded synthetic data set (default 10M
ratings, 100k users x 20k items), with ``--factors`` factors and top ``--top-n``:

- recspark: the ``score`` command end to end (load the model, broadcast its item side and user
  table, read prepare's ``rated/`` table (every user with its rated items), blocked matmul + top-k
  per block of users, raw ids, staged Parquet, atomic publish, counts checked against the files);
- Spark ALS: ``recommendForAllUsers(top_n)`` of an ALS model of the same rank, written to Parquet.

Neither side's training is timed: the cost of scoring does not depend on how well a model was
trained, so recspark trains ``--epochs`` epochs and ALS fits ``--als-iterations`` iterations.
Generating, preparing and training are skipped when ``--root`` already holds them for the same
sizes. Each side is timed ``--repeat`` times, alternating, and the best of each is compared; the
first attempt of each also pays for starting up (Python workers importing torch, JVM warm-up), so
it is printed on its own line as well.

Example (issue 5's line)::

    .venv/bin/python benchmarks/bench_score_vs_als.py --root runs/bench-score-10m
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from recspark.commands import score, train
from recspark.commands.benchmark import ensure_prepared
from recspark.core.config import load_config
from recspark.core.spark import get_spark
from recspark.evaluate.benchmark import Dataset

RUN_DATE = "2026-01-15"


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
    parser.add_argument("--repeat", type=int, default=1, help="timings per side; the best counts")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for every command (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("recspark").setLevel(logging.INFO)
    args = parse_args(argv)
    overrides = [
        f"paths.root={args.root}",
        f"run_date={RUN_DATE}",
        f"synthetic.users={args.users}",
        f"synthetic.items={args.items}",
        f"synthetic.ratings={args.ratings}",
        "model.kind=dot_bias",
        f"model.factors={args.factors}",
        f"train.epochs={args.epochs}",
        "train.batch_size=65536",
        "train.lr=0.02",
        f"score.top_n={args.top_n}",
        "score.exclude_seen=true",
        *args.overrides,
    ]
    config = load_config(None, overrides)
    spark = get_spark("recspark-bench-score", master=config.spark.master, conf=config.spark.conf)
    dataset = Dataset("synthetic", config, args.ratings)
    ensure_prepared(spark, dataset)
    layout = dataset.layout
    if not (layout.model(RUN_DATE) / "model.pt").exists():
        train.run(config, spark)

    from pyspark.ml.recommendation import ALS

    ratings = spark.read.parquet(str(layout.prepared(RUN_DATE) / "train"))
    als = ALS(
        userCol="user_idx",
        itemCol="item_idx",
        ratingCol="rating",
        rank=args.factors,
        maxIter=args.als_iterations,
        regParam=0.1,
        seed=42,
    ).fit(ratings)
    als.userFactors.count()

    score_times, als_times, summary = [], [], None
    for attempt in range(args.repeat):
        started = time.perf_counter()
        summary = score.run(config, spark).summary()
        score_times.append(time.perf_counter() - started)
        target = layout.root / "als_recommendations" / f"attempt-{attempt}"
        started = time.perf_counter()
        als.recommendForAllUsers(args.top_n).write.mode("overwrite").parquet(str(target))
        als_times.append(time.perf_counter() - started)
        print(
            f"attempt {attempt + 1}: recspark score {score_times[-1]:.1f}s, "
            f"ALS recommendForAllUsers {als_times[-1]:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    best_score, best_als = min(score_times), min(als_times)
    print(
        f"{args.ratings:,} ratings, {args.users:,} users x {args.items:,} items, "
        f"{args.factors} factors, top {args.top_n}, {spark.sparkContext.defaultParallelism} cores\n"
        f"recspark score job (to Parquet):           {best_score:8.1f} s\n"
        f"Spark ALS recommendForAllUsers (to Parquet): {best_als:8.1f} s\n"
        f"speed-up: {best_als / best_score:.2f}x (first attempts, cold: {score_times[0]:.1f} s vs "
        f"{als_times[0]:.1f} s, {als_times[0] / score_times[0]:.2f}x)",
        file=sys.stderr,
        flush=True,
    )
    print(
        json.dumps(
            {
                "command": "bench_score_vs_als",
                "status": "ok",
                "counts": summary["counts"] if summary else {},
                "metrics": {
                    "score_seconds": score_times,
                    "als_seconds": als_times,
                    "speedup": best_als / best_score,
                },
            }
        ),
        flush=True,
    )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
