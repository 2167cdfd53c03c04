"""recspark's prepare against a plain PySpark prepare of the same synthetic ratings, in one session.

Issue 31's line "prepare, 10M synthetic vs a plain PySpark prepare doing the same checks, dedup,
ids, split, tables". :func:`measure_prepare_vs_plain` generates the data under ``root`` when it is
absent, then times recspark's ``prepare`` command (its ``run``, Spark already started) and
:func:`benchmarks.plain_prepare.plain_prepare` alternately in the same Spark session, and returns
both times and both sides' row counts (which should agree table by table). ``--profile`` also
prints the Spark jobs of each side with their durations, from the Spark UI's REST API.

recspark goes first in each attempt: in a fresh session its first attempt also pays for the JVM's
warm-up, so call this after other work in the session, or with ``repeat=2`` (the best counts).

Not a test: it prints figures and asserts nothing about them. Example::

    .venv/bin/python benchmarks/bench_prepare_vs_plain.py --root /tmp/prep-10m --profile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from pyspark.sql import SparkSession

# Run as a script or imported by another benchmark: this folder and the checkout on the path.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from plain_prepare import TABLES, plain_prepare  # noqa: E402
from spark_timeline import JobTime, jobs_since, last_job_id  # noqa: E402

from recspark.commands import generate, prepare  # noqa: E402
from recspark.core.config import Config, load_config  # noqa: E402
from recspark.core.spark import get_spark  # noqa: E402
from recspark.core.storage import Layout, parquet_rows  # noqa: E402

RUN_DATE = "2026-01-15"
PLAIN = "plain_prepared"  # under root: the plain prepare's tables


def _config(root: str, ratings: int, users: int, items: int, factors: int = 32) -> Config:
    return load_config(
        None,
        [
            f"paths.root={root}",
            f"run_date={RUN_DATE}",
            f"synthetic.users={users}",
            f"synthetic.items={items}",
            f"synthetic.ratings={ratings}",
            # As bench_train_vs_als and bench_score_vs_als plant them: bench_all's parts share
            # one data set.
            f"synthetic.factors={factors}",
        ],
    )


def measure_prepare_vs_plain(
    spark: SparkSession,
    root: str,
    *,
    ratings: int,
    users: int,
    items: int,
    repeat: int = 1,
    profile: bool = False,
) -> dict:
    """Time recspark's prepare and the plain one on the same data, alternating; the best of each.

    Parameters
    ----------
    root
        ``paths.root``: the synthetic data is generated under it when absent, recspark publishes
        ``prepared/<date>/`` under it and the plain prepare writes ``plain_prepared/``.
    ratings, users, items
        ``synthetic.*`` sizes.
    repeat
        Timings per side; the best of each is compared.
    profile
        Also return each side's Spark jobs of its last attempt (``jobs``).

    Returns
    -------
    dict
        ``recspark_seconds``, ``plain_seconds``, ``ratio`` (recspark / plain), ``rows``
        (``{"recspark": {...}, "plain": {...}}``: rows per table and input rows), every attempt's
        times under ``attempts``, and ``jobs`` when profiled.
    """
    config = _config(root, ratings, users, items)
    layout = Layout(root)
    if not (layout.ratings / "_SUCCESS").exists():
        generate.run(config, spark)
    times: dict[str, list[float]] = {"recspark": [], "plain": []}
    jobs: dict[str, list[dict]] = {}
    summary: dict = {}
    plain_rows: dict[str, int] = {}
    for _ in range(repeat):
        since = last_job_id(spark)
        started = time.perf_counter()
        summary = prepare.run(config, spark).summary()
        times["recspark"].append(time.perf_counter() - started)
        if profile:
            jobs["recspark"] = [asdict(job) for job in jobs_since(spark, since)]
        since = last_job_id(spark)
        started = time.perf_counter()
        plain_rows = plain_prepare(
            spark,
            str(layout.ratings),
            str(layout.root / PLAIN),
            seed=config.split.seed,
            validation_fraction=config.split.validation_fraction,
            rating_min=config.input.rating_min,
            rating_max=config.input.rating_max,
            rows_per_file=config.prepare.rows_per_file,
        )
        times["plain"].append(time.perf_counter() - started)
        if profile:
            jobs["plain"] = [asdict(job) for job in jobs_since(spark, since)]
    prepared = layout.prepared(RUN_DATE)
    recspark_rows = {"input_rows": summary["counts"]["input_rows"]}
    recspark_rows.update({name: parquet_rows(prepared / name) for name in TABLES})
    best = {side: min(seconds) for side, seconds in times.items()}
    result = {
        "recspark_seconds": round(best["recspark"], 2),
        "plain_seconds": round(best["plain"], 2),
        "ratio": round(best["recspark"] / best["plain"], 3),
        "rows": {"recspark": recspark_rows, "plain": plain_rows},
        "attempts": {side: [round(s, 2) for s in seconds] for side, seconds in times.items()},
    }
    if profile:
        result["jobs"] = jobs
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/bench-prepare-10m", help="paths.root of the run")
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print each side's Spark jobs")
    args = parser.parse_args(argv)
    config = _config(args.root, args.ratings, args.users, args.items)
    spark = get_spark("recspark-bench-prepare", master=config.spark.master, conf=config.spark.conf)
    result = measure_prepare_vs_plain(
        spark,
        args.root,
        ratings=args.ratings,
        users=args.users,
        items=args.items,
        repeat=args.repeat,
        profile=args.profile,
    )
    for side, side_jobs in result.pop("jobs", {}).items():
        print(f"{side}: {sum(job['seconds'] for job in side_jobs):.1f} s in jobs", file=sys.stderr)
        for job in side_jobs:
            print("  " + JobTime(**job).line(), file=sys.stderr)
    print(json.dumps(result), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
