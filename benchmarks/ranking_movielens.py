"""The ranking table on MovieLens 100K: recspark's rating and ranking models against Spark ALS.

One run, one prepared split (the ranking config's: ``user_stratified``, 25% validation, seed 42),
every validation item relevant, items seen in train never recommended, metrics at ``evaluate.k``
by :func:`recspark.metrics.ranking_metrics` (Spark's ``RankingEvaluator``) for every contender:

- ``recspark ranking``: the ranking config as shipped (train, then the evaluate command);
- ``recspark rating``: the same split, the model and train sections of ``--rating-config``;
- ``ALS explicit`` and ``ALS implicit`` (``implicitPrefs``): Spark MLlib on the same train rows.
  ALS's ``recommendForAllUsers`` cannot leave out seen items, so it is asked for ``k`` plus the
  most items any user saw, the seen ones are dropped and the best ``k`` kept (ties: lower item
  index first, as in recspark's scoring).

Usage (from the repository root; prints the table on stdout and writes ``ranking_table.json``
under ``--root``)::

    .venv/bin/python benchmarks/ranking_movielens.py --root runs/ranking-benchmark

Not a test: it trains four models on 100,000 ratings (minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from pyspark.ml.recommendation import ALS
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.artifacts import Layout
from recspark.commands import evaluate, prepare, train
from recspark.config import Config, load_config
from recspark.constants import ITEM_IDX, RANK, RATING, SCORE, USER_IDX
from recspark.metrics import ranking_metrics
from recspark.spark import get_spark

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("ndcg_at_k", "precision_at_k", "recall_at_k", "map_at_k")
log = logging.getLogger("ranking_movielens")


def als_recommendations(model, train, k: int):
    """Top ``k`` unseen items per user from a fitted ALS model, best first."""
    most_seen = train.groupBy(USER_IDX).count().agg(F.max("count")).first()[0]
    wide = model.recommendForAllUsers(k + int(most_seen))
    rows = wide.select(USER_IDX, F.explode("recommendations").alias("r")).select(
        USER_IDX, F.col(f"r.{ITEM_IDX}").alias(ITEM_IDX), F.col("r.rating").alias(SCORE)
    )
    unseen = rows.join(train.select(USER_IDX, ITEM_IDX), [USER_IDX, ITEM_IDX], "left_anti")
    order = Window.partitionBy(USER_IDX).orderBy(F.col(SCORE).desc(), F.col(ITEM_IDX))
    return unseen.withColumn(RANK, F.row_number().over(order)).where(F.col(RANK) <= k)


def run_als(train, relevant, k: int, implicit: bool, rank: int, reg: float, alpha: float):
    started = time.perf_counter()
    als = ALS(
        userCol=USER_IDX, itemCol=ITEM_IDX, ratingCol=RATING, rank=rank, regParam=reg,
        maxIter=15, implicitPrefs=implicit, alpha=alpha, seed=42, coldStartStrategy="drop",
    )
    model = als.fit(train)
    recommendations = als_recommendations(model, train, k).cache()
    metrics = ranking_metrics(recommendations, relevant, k)
    recommendations.unpersist()
    metrics["train_seconds"] = time.perf_counter() - started
    metrics["settings"] = {"rank": rank, "regParam": reg, "alpha": alpha, "maxIter": 15}
    return metrics


def run_recspark(config: Config, spark) -> dict:
    trained = train.run(config, spark)
    evaluated = evaluate.run(config, spark)
    metrics = {name: evaluated["metrics"].get(name) for name in FIGURES}
    metrics["rmse"] = evaluated["metrics"].get("rmse")
    metrics["epochs"] = trained["metrics"]["epochs"]
    metrics["model_version"] = trained["metrics"]["model_version"]
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/ranking-benchmark", help="where every output goes")
    parser.add_argument("--ranking-config", default=str(REPO / "conf/movielens-100k-ranking.yaml"))
    parser.add_argument(
        "--rating-config", default=str(REPO / "conf/movielens-100k-notebook.yaml"),
        help="model and train sections of the rating contender",
    )
    parser.add_argument("--als-rank", type=int, default=20)
    parser.add_argument("--als-reg", type=float, default=0.05)
    parser.add_argument("--als-implicit-rank", type=int, default=64)
    parser.add_argument("--als-implicit-reg", type=float, default=0.1)
    parser.add_argument("--als-implicit-alpha", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("recspark").setLevel(logging.INFO)
    log.setLevel(logging.INFO)

    root = Path(args.root).resolve()
    ranking = load_config(args.ranking_config, [f"paths.root={root / 'ranking'}"])
    tuned = load_config(args.rating_config)
    rating = ranking.model_copy(update={
        "paths": ranking.paths.model_copy(update={"root": str(root / "rating")}),
        "model": tuned.model.model_copy(update={"objective": "rating"}),
        "train": tuned.train,
    })
    spark = get_spark("ranking-benchmark", master=ranking.spark.master, conf=ranking.spark.conf)
    started = time.perf_counter()
    prepared = Layout(ranking.paths.root).prepared(ranking.run_date)
    if not (prepared / "manifest.json").exists():
        prepare.run(ranking, spark)
    # Both recspark contenders read the very same prepared tables.
    rating_prepared = Layout(rating.paths.root).prepared(rating.run_date)
    shutil.rmtree(rating_prepared, ignore_errors=True)
    shutil.copytree(prepared, rating_prepared)

    k = ranking.evaluate.k
    train_rows = spark.read.parquet(str(prepared / "train")).select(USER_IDX, ITEM_IDX, RATING)
    train_rows = train_rows.cache()
    relevant = spark.read.parquet(str(prepared / "validation")).where(
        F.col(RATING) >= ranking.evaluate.relevance_threshold
    )
    results = {}
    log.info("recspark ranking model")
    results["recspark ranking"] = run_recspark(ranking, spark)
    log.info("recspark rating model")
    results["recspark rating"] = run_recspark(rating, spark)
    log.info("ALS explicit")
    results["ALS explicit"] = run_als(
        train_rows, relevant, k, False, args.als_rank, args.als_reg, 1.0
    )
    log.info("ALS implicitPrefs")
    results["ALS implicit"] = run_als(
        train_rows, relevant, k, True, args.als_implicit_rank, args.als_implicit_reg,
        args.als_implicit_alpha,
    )
    lines = [
        f"| model | NDCG@{k} | Precision@{k} | Recall@{k} | MAP@{k} |", "|---|---|---|---|---|"
    ]
    for name, metrics in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[f]:.4f}" for f in FIGURES) + " |")
    table = "\n".join(lines)
    report = {
        "split": ranking.split.model_dump(),
        "k": k,
        "relevance_threshold": ranking.evaluate.relevance_threshold,
        "results": results,
        "table": table,
        "seconds": time.perf_counter() - started,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "ranking_table.json").write_text(json.dumps(report, indent=2, default=str))
    print(table, flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
