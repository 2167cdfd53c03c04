"""recspark training against Spark ALS on the same synthetic split, timed in one run.

Not a test: issue 4's acceptance measurement. It generates the embedded synthetic data set
(``--ratings`` ratings of ``--users`` users and ``--items`` items) and prepares it with the
recspark commands, then, on the same prepared train/validation split and the same Spark session:

- recspark: the ``train`` command (``dot_bias``, settings below, every artifact published),
  validation RMSE as the trainer reports it;
- Spark ALS (``--als-rank``, ``--als-iterations``, ``--als-reg``): fit on train, RMSE of its
  predictions on validation (raw, and clipped to the rating range, which only helps ALS).

Wall times cover training to a model and its validation RMSE. Generating and preparing are timed
too but are common to both. ``--reuse`` skips them when ``paths.root`` already holds the prepared
split. Extra ``--set key=value`` overrides go to every command.

Example (issue 4's line: 10M ratings, 100k users x 20k items, ALS rank 32 x 10 iterations)::

    .venv/bin/python benchmarks/bench_train_vs_als.py --root runs/bench-10m \\
        --ratings 10000000 --users 100000 --items 20000
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from recspark.cli import run_command
from recspark.core.config import load_config

# recspark runs with its defaults (conf/default.yaml: sparse_adam, train.batch_size auto, a
# one-cycle schedule of 8 epochs); only the model's width is set, to ALS's rank, and the planted
# data gets as many factors.
RECSPARK_SETTINGS = {
    "model.factors": 32,
    "synthetic.factors": 32,
}


def als_rmse(
    spark, prepared, rank: int, iterations: int, reg: float, low: float, high: float
) -> dict:
    """Fit Spark ALS on the prepared train split; RMSE on validation, raw and clipped."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    train = spark.read.parquet(str(prepared / "train"))
    validation = spark.read.parquet(str(prepared / "validation"))
    started = time.perf_counter()
    model = ALS(
        rank=rank,
        maxIter=iterations,
        regParam=reg,
        userCol="user_idx",
        itemCol="item_idx",
        ratingCol="rating",
        coldStartStrategy="drop",
        seed=42,
    ).fit(train)
    predictions = model.transform(validation)
    clipped = F.least(F.greatest(F.col("prediction"), F.lit(low)), F.lit(high))
    row = predictions.agg(
        F.sqrt(F.avg((F.col("prediction") - F.col("rating")) ** 2)).alias("rmse"),
        F.sqrt(F.avg((clipped - F.col("rating")) ** 2)).alias("clipped"),
        F.count(F.lit(1)).alias("rows"),
    ).first()
    seconds = time.perf_counter() - started
    assert row is not None  # an aggregate has one row
    return {
        "rmse": row["rmse"],
        "clipped_rmse": row["clipped"],
        "rows": row["rows"],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-train-vs-als")
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--als-rank", type=int, default=32)
    parser.add_argument("--als-iterations", type=int, default=10)
    parser.add_argument("--als-reg", type=float, default=0.1)
    parser.add_argument("--reuse", action="store_true", help="keep an existing prepared split")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("recspark").setLevel(logging.INFO)

    base = {
        "paths.root": args.root,
        "run_date": "2026-01-15",
        "synthetic.users": args.users,
        "synthetic.items": args.items,
        "synthetic.ratings": args.ratings,
        "spark.master": "local[2]",
        **RECSPARK_SETTINGS,
    }
    overrides = [f"{key}={value}" for key, value in base.items()] + args.overrides
    config = load_config(None, overrides)
    from recspark.core.storage import Layout

    layout = Layout(config.paths.root)
    prepared = layout.prepared(config.run_date)
    times: dict[str, float] = {}
    if not (args.reuse and (prepared / "manifest.json").exists()):
        for command in ("generate", "prepare"):
            started = time.perf_counter()
            summary = run_command(command, config)
            times[command] = time.perf_counter() - started
            print(f"{command}: {json.dumps(summary['counts'])}", file=sys.stderr)

    started = time.perf_counter()
    trained = run_command("train", config)
    times["recspark"] = time.perf_counter() - started
    from recspark.core.spark import get_spark

    spark = get_spark(master=config.spark.master, conf=config.spark.conf)
    low, high = config.input.rating_min, config.input.rating_max
    als = als_rmse(spark, prepared, args.als_rank, args.als_iterations, args.als_reg, low, high)
    times["als"] = als["seconds"]

    metrics = trained["metrics"]
    rows = [
        (
            "recspark dot_bias",
            metrics["validation_rmse"],
            times["recspark"],
            f"{metrics['epochs']} epochs, {metrics['rows_per_second']:,.0f} rows/s",
        ),
        (
            f"Spark ALS rank {args.als_rank} x {args.als_iterations}",
            als["rmse"],
            times["als"],
            f"regParam {args.als_reg}; clipped to [{low:g}, {high:g}]: {als['clipped_rmse']:.4f}",
        ),
    ]
    print(
        f"{trained['counts']['train']:,} train / {als['rows']:,} validation ratings, "
        f"{trained['counts']['users']:,} users x {trained['counts']['items']:,} items"
    )
    for command in ("generate", "prepare"):
        if command in times:
            print(f"{command}: {times[command]:.1f} s")
    print(f"{'contender':<28} {'valid RMSE':>10} {'wall s':>8}  notes")
    for name, rmse, seconds, notes in rows:
        print(f"{name:<28} {rmse:>10.4f} {seconds:>8.1f}  {notes}")
    best_als = min(als["rmse"], als["clipped_rmse"])
    wins = metrics["validation_rmse"] < best_als and times["recspark"] < times["als"]
    print(f"recspark lower RMSE and less wall time than ALS: {'yes' if wins else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
