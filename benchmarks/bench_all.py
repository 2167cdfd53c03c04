"""Issue 31's whole table in one run: score, train and prepare beside their anchors, and storage.

Not a test: a measurement to run by hand, on any machine, so that anyone can re-measure the
figures on their own hardware. One Spark session (the embedded default's ``spark.conf``) runs, one
after the other, on the embedded synthetic data (generated and prepared under ``--root`` when
absent, reused when present):

1. **prepare**, 10M ratings (100k users x 20k items): recspark's ``prepare`` beside a plain PySpark
   prepare doing the same checks, dedup, ids, split and tables (``benchmarks/plain_prepare.py``);
2. **train**, the same data: ``train`` (the defaults, 32 factors) beside Spark ALS rank 32 x 10
   iterations, time and validation RMSE (``bench_train_vs_als.py``), with where train's time went;
3. **score**, the same data: the ``score`` command (warm session, and in a fresh process as a
   scheduler runs it) beside the scoring kernel alone on the same users and ALS's
   ``recommendForAllUsers`` (``bench_score_vs_als.py``), as Parquet and as a Delta table;
4. **score at 1M users** (10M ratings, 1M users x 20k items), the same;
5. **object store**: ``prepare`` with ``paths.root`` on ``s3a://`` (SeaweedFS on loopback) beside
   local disk, at 200k ratings and at the demo's 800k (``bench_storage.py``).

It prints a table for people on stderr (each part's own lines first) and one JSON line with every
figure on stdout. ``--skip`` leaves parts out (e.g. ``--skip storage`` where SeaweedFS is absent).

    .venv/bin/python benchmarks/bench_all.py --root /tmp/bench31
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_score_vs_als import ScoreFigures, measure_score_vs_als  # noqa: E402
from benchmarks.bench_score_vs_als import report as score_report  # noqa: E402
from recspark.core.config import load_config  # noqa: E402
from recspark.core.spark import get_spark  # noqa: E402

PARTS = ("prepare", "train", "score", "score_delta", "score_1m", "storage")
log = logging.getLogger("bench_all")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/bench-all", help="folder of the data sets")
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--many-users", type=int, default=1_000_000, help="score's second size")
    parser.add_argument("--repeat", type=int, default=2, help="timings per side; the best counts")
    parser.add_argument("--storage-sizes", default="200000,800000", help="ratings, comma-separated")
    parser.add_argument("--skip", action="append", default=[], choices=PARTS)
    return parser.parse_args(argv)


def row(work: str, ours: float, anchor_name: str, anchor: float, note: str = "") -> str:
    """One line of the table: our seconds, the anchor's, and how many times faster we are."""
    return (
        f"{work:<44} {ours:8.1f} s   {anchor_name:<34} {anchor:8.1f} s   "
        f"{anchor / ours:5.2f}x {note}"
    )


def score_rows(name: str, figures: ScoreFigures) -> list[str]:
    f = figures
    within = "within" if f.best_score <= 1.3 * f.kernel_seconds + 3 else "OVER"
    lines = [
        row(
            f"score {name}, warm session",
            f.best_score,
            "ALS recommendForAllUsers",
            f.best_als,
            f"({within} 1.3 x kernel {f.kernel_seconds:.1f} s + 3 s)",
        ),
    ]
    if f.cold_seconds is not None:
        lines.append(
            row(
                f"score {name}, fresh process",
                f.cold_seconds,
                "ALS recommendForAllUsers",
                f.best_als,
                f"({f.cold_wall_seconds:.1f} s with the JVM's start)",
            )
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("recspark").setLevel(logging.INFO)
    for name in ("bench_all", "bench_score_vs_als"):
        logging.getLogger(name).setLevel(logging.INFO)
    args = parse_args(argv)
    root = Path(args.root).resolve()
    settings = load_config(None, []).spark
    spark = get_spark("recspark-bench-all", master=settings.master, conf=settings.conf)
    sizes = dict(ratings=args.ratings, users=args.users, items=args.items)
    main_root = str(root / "10m")
    figures: dict[str, Any] = {"cores": spark.sparkContext.defaultParallelism}
    table: list[str] = []
    started = time.perf_counter()

    if "prepare" not in args.skip:
        from benchmarks.bench_prepare_vs_plain import measure_prepare_vs_plain

        # Twice: the first attempt in a fresh session also pays the JVM's warm-up.
        found = measure_prepare_vs_plain(spark, main_root, repeat=2, **sizes)
        figures["prepare"] = found
        table.append(
            row(
                "prepare, 10M synthetic",
                found["recspark_seconds"],
                "plain PySpark prepare",
                found["plain_seconds"],
            )
        )
    if "train" not in args.skip:
        from benchmarks.bench_train_vs_als import measure_train_vs_als

        found = measure_train_vs_als(spark, main_root, **sizes)
        figures["train"] = found
        table.append(
            row(
                "train, 10M synthetic",
                found["recspark_seconds"],
                "ALS rank 32 x 10",
                found["als_seconds"],
                f"(RMSE {found['recspark_rmse']:.4f} vs {found['als_rmse']:.4f})",
            )
        )
    # ALS's recommendForAllUsers at 1M users takes minutes: one attempt a side there.
    for part, name, users, table_format, where, repeat in (
        ("score", "100k users", args.users, "parquet", main_root, args.repeat),
        ("score_delta", "100k users, Delta", args.users, "delta", main_root, args.repeat),
        ("score_1m", "1M users", args.many_users, "parquet", str(root / "1m-users"), 1),
    ):
        if part in args.skip:
            continue
        found_score = measure_score_vs_als(
            spark,
            where,
            ratings=args.ratings,
            users=users,
            items=args.items,
            repeat=repeat,
            table_format=table_format,
        )
        print(score_report(found_score), file=sys.stderr, flush=True)
        figures[part] = found_score.as_dict()
        table += score_rows(name, found_score)
    spark.stop()
    if "storage" not in args.skip:
        from benchmarks.bench_storage import measure_prepare_storage

        for ratings in (int(size) for size in args.storage_sizes.split(",")):
            found = measure_prepare_storage(ratings=ratings)
            figures[f"storage_{ratings}"] = found
            table.append(
                row(
                    f"prepare, {ratings:,} ratings, s3a:// root",
                    found["s3_seconds"],
                    "the same on local disk",
                    found["local_seconds"],
                    "(at least 0.50x: within 2x of local)",
                )
            )
    figures["seconds"] = time.perf_counter() - started
    header = f"{'work':<44} {'recspark':>10}   {'anchor':<34} {'':>10}   speed-up"
    print("\n" + header + "\n" + "\n".join(table), file=sys.stderr, flush=True)
    print(json.dumps({"command": "bench_all", "status": "ok", "metrics": figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
