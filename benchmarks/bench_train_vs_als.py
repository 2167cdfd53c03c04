"""recspark training against Spark ALS on the same synthetic split, timed in one run.

Not a test: issue 4's acceptance measurement. It generates the embedded synthetic data set
(``--ratings`` ratings of ``--users`` users and ``--items`` items) and prepares it with the
recspark commands, then, on the same prepared train/validation split and the same Spark session:

- recspark: the ``train`` command (``dot_bias``, settings below, every artifact published),
  validation RMSE as the trainer reports it;
- Spark ALS (rank ``--factors``, ``--als-iterations``, ``--als-reg``): fit on train, RMSE of its
  predictions on validation (raw, and clipped to the rating range, which only helps ALS).

Wall times cover training to a model and its validation RMSE. Generating and preparing are timed
too but are common to both. ``--reuse`` skips them when ``paths.root`` already holds the prepared
split. Extra ``--set key=value`` overrides go to every command.

:func:`measure_train_vs_als` is the measurement as a function (the one-run benchmark of issue 31
calls it with its own session); ``main`` prints its result as a table, with recspark's seconds by
phase (``feed``, ``step``, ``validation``, ``checkpoint``, ``write``, ``other``).

Example (issue 4's line: 10M ratings, 100k users x 20k items, ALS rank 32 x 10 iterations)::

    .venv/bin/python benchmarks/bench_train_vs_als.py --root runs/bench-10m \\
        --ratings 10000000 --users 100000 --items 20000
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from recspark.cli import run_command
from recspark.core.config import load_config

# recspark runs with its defaults (conf/default.yaml: sparse_adam, train.batch_size auto, a
# one-cycle schedule of 8 epochs); only the model's width is set, to ALS's rank, and the planted
# data gets as many factors.
RECSPARK_SETTINGS = {
    "model.factors": 32,
    "synthetic.factors": 32,
}
# Spark ALS's regParam here (issue 4's line).
ALS_REG = 0.1


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


def _config(root: str, *, ratings: int, users: int, items: int, factors: int, overrides=()):
    """The benchmark's config: the synthetic data set's size and recspark's settings at ``root``."""
    base = {
        "paths.root": root,
        "run_date": "2026-01-15",
        "synthetic.users": users,
        "synthetic.items": items,
        "synthetic.ratings": ratings,
        "spark.master": "local[2]",
        **RECSPARK_SETTINGS,
        "model.factors": factors,
        "synthetic.factors": factors,
    }
    return load_config(None, [f"{key}={value}" for key, value in base.items()] + list(overrides))


def measure_train_vs_als(
    spark,
    root: str,
    *,
    ratings: int,
    users: int,
    items: int,
    factors: int = 32,
    als_iterations: int = 10,
    als_reg: float = ALS_REG,
    overrides: Sequence[str] = (),
    reuse: bool = True,
) -> dict[str, Any]:
    """recspark's train and Spark ALS on the same prepared split at ``root``, in one session.

    Generates and prepares the synthetic data set first when ``root`` holds no prepared run (or
    ``reuse`` is off). ``spark`` is the session both run in (the commands get it through
    :func:`recspark.core.spark.get_spark`, which returns the active one).

    Returns
    -------
    ``recspark_seconds`` (the train command's wall time), ``recspark_rmse`` (its best epoch's
    validation RMSE), ``als_seconds`` (fit, predict and RMSE), ``als_rmse`` (raw; the clipped
    figure is ``als_clipped_rmse``), ``phases`` (the train command's ``seconds_by_phase``),
    and the facts beside them: ``epochs``, ``rows_per_second``, ``train_rows``,
    ``validation_rows``, ``prepare_seconds`` (``{command: seconds}``, empty when reused).
    """
    from recspark.core.storage import Layout

    config = _config(
        root, ratings=ratings, users=users, items=items, factors=factors, overrides=overrides
    )
    prepared = Layout(config.paths.root).prepared(config.run_date)
    prepare_seconds: dict[str, float] = {}
    if not (reuse and (prepared / "manifest.json").exists()):
        for command in ("generate", "prepare"):
            started = time.perf_counter()
            run_command(command, config)
            prepare_seconds[command] = time.perf_counter() - started
    started = time.perf_counter()
    trained = run_command("train", config)
    recspark_seconds = time.perf_counter() - started
    low, high = config.input.rating_min, config.input.rating_max
    als = als_rmse(spark, prepared, factors, als_iterations, als_reg, low, high)
    metrics = trained["metrics"]
    return {
        "recspark_seconds": recspark_seconds,
        "recspark_rmse": metrics["validation_rmse"],
        "als_seconds": als["seconds"],
        "als_rmse": als["rmse"],
        "als_clipped_rmse": als["clipped_rmse"],
        "phases": metrics.get("seconds_by_phase", {}),
        "epochs": metrics["epochs"],
        "rows_per_second": metrics["rows_per_second"],
        "train_rows": trained["counts"]["train"],
        "validation_rows": als["rows"],
        "prepare_seconds": prepare_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/bench-train-vs-als")
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--factors", type=int, default=32, help="recspark's and ALS's rank")
    parser.add_argument("--als-iterations", type=int, default=10)
    parser.add_argument("--als-reg", type=float, default=ALS_REG)
    parser.add_argument("--reuse", action="store_true", help="keep an existing prepared split")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("recspark").setLevel(logging.INFO)
    from recspark.core.spark import get_spark

    config = _config(
        args.root,
        ratings=args.ratings,
        users=args.users,
        items=args.items,
        factors=args.factors,
        overrides=args.overrides,
    )
    spark = get_spark(master=config.spark.master, conf=config.spark.conf)
    result = measure_train_vs_als(
        spark,
        args.root,
        ratings=args.ratings,
        users=args.users,
        items=args.items,
        factors=args.factors,
        als_iterations=args.als_iterations,
        als_reg=args.als_reg,
        overrides=args.overrides,
        reuse=args.reuse,
    )
    print(
        f"{result['train_rows']:,} train / {result['validation_rows']:,} validation ratings, "
        f"{args.users:,} users x {args.items:,} items"
    )
    for command, seconds in result["prepare_seconds"].items():
        print(f"{command}: {seconds:.1f} s")
    low, high = config.input.rating_min, config.input.rating_max
    rows = [
        (
            "recspark dot_bias",
            result["recspark_rmse"],
            result["recspark_seconds"],
            f"{result['epochs']} epochs, {result['rows_per_second']:,.0f} rows/s",
        ),
        (
            f"Spark ALS rank {args.factors} x {args.als_iterations}",
            result["als_rmse"],
            result["als_seconds"],
            f"regParam {args.als_reg}; clipped to [{low:g}, {high:g}]: "
            f"{result['als_clipped_rmse']:.4f}",
        ),
    ]
    print(f"{'contender':<28} {'valid RMSE':>10} {'wall s':>8}  notes")
    for name, rmse, seconds, notes in rows:
        print(f"{name:<28} {rmse:>10.4f} {seconds:>8.1f}  {notes}")
    phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in result["phases"].items())
    print(f"recspark seconds by phase: {phases}")
    best_als = min(result["als_rmse"], result["als_clipped_rmse"])
    wins = result["recspark_rmse"] < best_als and result["recspark_seconds"] < result["als_seconds"]
    print(f"recspark lower RMSE and less wall time than ALS: {'yes' if wins else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
