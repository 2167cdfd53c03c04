"""Accuracy of recspark's models on MovieLens 100K, over several seeds.

Honest protocols: nothing is selected on the split the figures are measured on. Early stopping,
the blend partner's epoch and every tuned setting read a validation split carved from the training
input; the test split is read once, by this script, after training.

- ``ml100k-u1`` (the default): test RMSE on the u1 split. Prepares u1.base -> train + validation
  (``split.method: given``, validation carved per user, ``split.validation_fraction``) and
  u1.test -> test once with ``recspark prepare``, then trains each config through the same seams
  as ``recspark train`` (``model_spec``, ``init_model``, the side features, ``fit``: one process)
  without publishing, and prints one table row per model: test RMSE per seed, mean, standard
  deviation and range (the validation RMSE that chose the epoch beside it), and Spark ALS trained
  on the same train split (rank and regParam tuned on a holdout of train) under the same seeds.
- ``ml100k-u1-optimistic``: the old protocol, for the difference: u1.test is the validation split
  (early stopping and the blend read it) and its RMSE is the figure.
- ``ml100k-ranking``: u.data split per user (``user_stratified``, seed 42): 25% test, every test
  item relevant, and a validation split carved from the other 75% (``--ranking-validation``, a
  share of all rows) that early stopping reads; items seen in train never recommended, top
  ``evaluate.k``. Prepares u.data once with ``--ranking-config`` (default
  ``conf/movielens-100k-ranking.yaml``), trains that config per seed through the same seams (with
  its ranking objective), ranks every item for every user and reports NDCG/precision/recall at k
  on test per seed, their mean, standard deviation and range, beside EASE
  (``benchmark.ease_lambda``) fitted on the same train split, all measured by recspark's Spark
  metrics (:func:`recspark.evaluate.metrics.ranking_metrics`).

Not a test: it takes minutes.

    .venv/bin/python benchmarks/movielens_accuracy.py --seeds 42 43 44
    .venv/bin/python benchmarks/movielens_accuracy.py --protocol ml100k-u1-optimistic --seeds 42
    .venv/bin/python benchmarks/movielens_accuracy.py --models shipped --seeds 42 --jobs 2
    .venv/bin/python benchmarks/movielens_accuracy.py --protocol ml100k-ranking --seeds 42 43 44

The data is read from ``--data`` (default ``../shared/data/ml-100k``); it is never copied.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "dot": (REPO / "conf" / "movielens-100k-dot-bias.yaml", ["model.kind=dot"]),
    "dot_bias": (REPO / "conf" / "movielens-100k-dot-bias.yaml", []),
    "mlp": (REPO / "conf" / "movielens-100k-mlp.yaml", []),
    "shipped": (REPO / "conf" / "movielens-100k.yaml", []),
}
RUN_DATE = "2026-01-01"
RANKING_CONFIG = REPO / "conf" / "movielens-100k-ranking.yaml"
# The ml100k-ranking protocol, whatever the ranking config says: u.data, 25% per user held out
# as test with seed 42 (the split of recspark.evaluate.benchmark's ml100k-ranking), every test
# item relevant; the validation split is carved from the other 75% (--ranking-validation).
RANKING_PROTOCOL = [
    "split.method=user_stratified",
    "split.test_fraction=0.25",
    "split.seed=42",
    "evaluate.relevance_threshold=0",
    "score.exclude_seen=true",
]
#: ml100k-ranking: the validation split's share of all u.data rows, drawn from the 75% (the u1
#: protocol draws it from u1.base as the config's split.validation_fraction says).
VALIDATION_SHARE = 0.1


def data_overrides(root: Path, data: Path, honest: bool = True) -> list[str]:
    """u1.base -> train + validation, u1.test -> test (honest); or u1.test as the validation
    split, as before test splits existed (optimistic)."""
    common = [f"paths.root={root}", f"run_date={RUN_DATE}", f"input.path={data / 'u1.base'}"]
    if honest:
        return [*common, "input.validation_path=null", f"input.test_path={data / 'u1.test'}"]
    return [*common, f"input.validation_path={data / 'u1.test'}", "input.test_path=null"]


def prepare(root: Path, data: Path, honest: bool = True, extra: list[str] | None = None) -> None:
    """Run ``recspark prepare`` once (``extra``: the ``--set`` overrides, e.g. ``split.*``);
    later calls find its manifest and skip."""
    if (root / "prepared" / RUN_DATE / "manifest.json").exists():
        return
    command = [
        str(Path(sys.executable).parent / "recspark"),
        "prepare",
        "--config",
        str(CONFIGS["shipped"][0]),
        *[
            item
            for pair in [*data_overrides(root, data, honest), *(extra or [])]
            for item in ("--set", pair)
        ],
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0:
        raise SystemExit(f"prepare failed:\n{done.stderr[-3000:]}\n{summary}")
    print(f"prepared: {summary}", file=sys.stderr)


def train_once(name: str, seed: int, root: str, data: str, extra: list[str], honest: bool) -> dict:
    """Train one config under one seed; returns the best epoch's validation figures and, under
    the honest protocol, the published model's RMSE on the test split (read once, here)."""
    import torch

    from recspark.core.config import load_config
    from recspark.core.storage import Layout
    from recspark.core.torch_utils import resolve_device
    from recspark.data.prepared import read_manifest
    from recspark.train.job import build_objective
    from recspark.train.loop import fit, init_model
    from recspark.train.publication_gate import ValidationScores, best_figures
    from recspark.train.spec import model_spec, side_features, train_settings
    from recspark.train.validation import evaluate_split

    torch.set_num_threads(1)
    path, overrides = CONFIGS[name]
    data_sets = data_overrides(Path(root), Path(data), honest)
    config = load_config(path, [*overrides, *data_sets, f"train.seed={seed}", *extra])
    layout = Layout(config.paths.root)
    manifest = read_manifest(layout, config.run_date)
    prepared = layout.prepared(config.run_date)
    spec = model_spec(config.model, config.train, config.lists, manifest, prepared)
    model = init_model(spec.as_dict(), config.train.seed)
    if config.model.side_info is not None:
        features = side_features(config.model, manifest, prepared)
        model.set_side_features(features.user, features.item)
    started = time.perf_counter()
    device = resolve_device("cpu")
    result = fit(
        model,
        str(prepared / "train"),
        str(prepared / "validation"),
        train_settings(config.train, config.lists.head_lr_scale if config.lists_head else None),
        device,
        objective=build_objective(
            config.model, config.ranking, config.lists, manifest=manifest
        ),  # with lists.source: head, the joint one
    )
    best = best_figures(result, ValidationScores())
    if config.model.blend is not None:  # as `recspark train` does: the autoencoder, then the mean
        fitted = blend(config, model, spec, manifest, prepared, best)
        model, best = fitted.model, fitted.best
    figures = {
        "model": name,
        "seed": seed,
        "validation_rmse": best.validation_rmse,
        "rmse": best.validation_rmse,  # the figure of the optimistic protocol
        "mae": best.validation_mae,
        "best_epoch": result.best_epoch,
        "seconds": time.perf_counter() - started,
    }
    if honest:
        model.eval()
        test = evaluate_split(model, str(prepared / "test"), device)
        figures.update(rmse=test.rmse, mae=test.mae)
    return figures


def als_once(seed: int, root: str, data: str, extra: list[str], honest: bool) -> dict:
    """Spark ALS on the same train split under one seed (rank and regParam tuned on a holdout of
    train, as evaluate's ``als`` baseline): its RMSE on test (honest) or on validation."""
    from pyspark.sql import functions as F

    from recspark.core.config import load_config
    from recspark.core.spark import get_spark
    from recspark.core.storage import Layout
    from recspark.data.prepared import read_manifest
    from recspark.evaluate.baselines import fit_als

    path, overrides = CONFIGS["shipped"]
    data_sets = data_overrides(Path(root), Path(data), honest)
    config = load_config(path, [*overrides, *data_sets, *extra])
    layout = Layout(config.paths.root)
    prepared = layout.prepared(config.run_date)
    spark = get_spark("movielens-accuracy-als", master=config.spark.master, conf=config.spark.conf)
    train = spark.read.parquet(str(prepared / "train")).cache()
    settings = config.evaluate
    fitted = fit_als(
        train,
        read_manifest(layout, config.run_date).items,
        settings.als_ranks,
        settings.als_reg_params,
        max_iter=settings.als_max_iter,
        seed=seed,
        holdout_fraction=settings.als_tune_fraction,
    )
    heldout = spark.read.parquet(str(prepared / ("test" if honest else "validation")))
    error = F.col("prediction") - F.col("rating")
    rmse = fitted.predict(heldout).agg(F.sqrt(F.mean(error**2))).first()[0]
    train.unpersist()
    return {"model": "als", "seed": seed, "rmse": float(rmse), "best_epoch": 0, "seconds": 0.0}


def blend(config, main, spec, manifest, prepared, best):
    """``model.blend`` fitted and averaged into ``main``, as ``recspark train`` does."""
    from recspark.train.blend import fit_blend

    return fit_blend(
        config.model.blend,
        config.train,
        config.ranking,
        main=main,
        main_spec=spec,
        manifest=manifest,
        prepared=prepared,
        best=best,
    )


def ranking_overrides(root: Path, data: Path, validation: float = VALIDATION_SHARE) -> list[str]:
    return [
        f"paths.root={root}",
        f"run_date={RUN_DATE}",
        f"input.path={data / 'u.data'}",
        "input.format=movielens-100k",
        *RANKING_PROTOCOL,
        f"split.validation_fraction={validation}",
    ]


def prepare_ranking(root: Path, data: Path, config_path: Path, validation: float) -> None:
    """``recspark prepare`` of u.data with the ranking config's split; skipped when done."""
    if (root / "prepared" / RUN_DATE / "manifest.json").exists():
        return
    command = [
        str(Path(sys.executable).parent / "recspark"),
        "prepare",
        "--config",
        str(config_path),
        *[item for pair in ranking_overrides(root, data, validation) for item in ("--set", pair)],
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0:
        raise SystemExit(f"prepare failed:\n{done.stderr[-3000:]}\n{summary}")
    print(f"prepared: {summary}", file=sys.stderr)


def train_ranking_once(seed: int, root: str, data: str, config_path: str, extra: list[str]) -> dict:
    """Train the ranking config under one seed and rank every item for every user.

    Returns the best epoch's figures and the top-k lists (training items excluded, ties to the
    lower item index, as the scoring kernel breaks them) as plain arrays.
    """
    import numpy as np
    import pandas as pd
    import torch

    from recspark.core.config import load_config
    from recspark.core.storage import Layout
    from recspark.core.torch_utils import resolve_device
    from recspark.data.prepared import read_manifest
    from recspark.serve.kernel import top_k
    from recspark.train.loop import fit, init_model
    from recspark.train.objectives import for_name
    from recspark.train.objectives.ranking import RankingSettings
    from recspark.train.spec import model_spec, side_features, train_settings

    torch.set_num_threads(1)
    overrides = [*ranking_overrides(Path(root), Path(data)), f"train.seed={seed}", *extra]
    config = load_config(config_path, overrides)
    if config.model.side_info is not None:  # side features from the same --data folder
        config = load_config(config_path, [*overrides, f"model.side_info.path={data}"])
    layout = Layout(config.paths.root)
    manifest = read_manifest(layout, config.run_date)
    prepared = layout.prepared(config.run_date)
    spec = model_spec(config.model, config.train, config.lists, manifest, prepared)
    model = init_model(spec.as_dict(), config.train.seed)
    if config.model.side_info is not None:
        features = side_features(config.model, manifest, prepared)
        model.set_side_features(features.user, features.item)
    settings = RankingSettings(**config.ranking.model_dump())
    train = pd.read_parquet(prepared / "train", columns=["user_idx", "item_idx", "rating"])
    validation = pd.read_parquet(prepared / "validation", columns=["user_idx", "item_idx"])
    # What build_objective counts in Spark: positives per item (popularity sampling only).
    positives = train[train["rating"] >= settings.positive_threshold]
    counts = np.bincount(positives["item_idx"], minlength=manifest.items).astype(np.float64)
    objective = for_name("ranking", ranking=settings, item_counts=counts)
    started = time.perf_counter()
    result = fit(
        model,
        str(prepared / "train"),
        str(prepared / "validation"),
        train_settings(config.train, config.lists.head_lr_scale if config.lists_head else None),
        resolve_device("cpu"),
        objective=objective,
    )
    if config.model.blend is not None:  # EASE fitted and averaged in, as `recspark train` does
        from recspark.train.publication_gate import ValidationScores, best_figures

        model = blend(
            config, model, spec, manifest, prepared, best_figures(result, ValidationScores())
        ).model
    seconds = time.perf_counter() - started
    model.eval()
    k = config.evaluate.k
    users, items, ranks = [], [], []
    seen = torch.zeros(manifest.users, manifest.items, dtype=torch.bool)
    for known in (train, validation):  # the user's whole history: never listed, never relevant
        users_of, items_of = known["user_idx"].to_numpy(), known["item_idx"].to_numpy()
        seen[torch.as_tensor(users_of), torch.as_tensor(items_of)] = True
    with torch.no_grad():
        for start in range(0, manifest.users, 1024):
            block = torch.arange(start, min(start + 1024, manifest.users))
            scores = model.score_items(block, torch.arange(manifest.items)).float()
            scores[seen[block]] = -torch.inf
            index, _, valid = top_k(scores, k)
            width = index.shape[1]
            keep = valid.reshape(-1).numpy()
            users.append(np.repeat(block.numpy(), width)[keep])
            items.append(index.reshape(-1).numpy()[keep])
            ranks.append(np.tile(np.arange(1, width + 1), len(block))[keep])
    best = result.history[result.best_epoch - 1]
    return {
        "model": "recspark-ranking",
        "seed": seed,
        "validation_loss": best.validation_loss,
        "validation_auc": best.validation_auc,
        "best_epoch": result.best_epoch,
        "seconds": seconds,
        "lists": (np.concatenate(users), np.concatenate(items), np.concatenate(ranks)),
    }


def ranking_figures(spark, lists, relevant, k: int) -> dict:
    """recspark's ranking metrics of ``(user_idx, item_idx, rank)`` lists against ``relevant``."""
    import pandas as pd

    from recspark.evaluate.metrics import ranking_metrics

    users, items, ranks = lists
    frame = spark.createDataFrame(
        pd.DataFrame(
            {
                "user_idx": users.astype("int32"),
                "item_idx": items.astype("int32"),
                "rank": ranks.astype("int32"),
            }
        ),
        "user_idx int, item_idx int, rank int",
    )
    return ranking_metrics(frame, relevant, k)


def ease_figures(spark, config, prepared: Path, n_items: int, k: int, relevant) -> dict:
    """EASE (``benchmark.ease_lambda``) fitted on the same train split, as the benchmark runs it:
    the Gram matrix in Spark, the lists through :func:`recspark.evaluate.ease.ease_top_k`, the
    train and validation items left out."""
    from recspark.core.constants import USER_IDX
    from recspark.data.prepared import rated_lists, seen_items
    from recspark.evaluate.ease import ease_top_k, fit_ease
    from recspark.evaluate.metrics import ranking_metrics

    train = spark.read.parquet(str(prepared / "train"))
    model = fit_ease(train, n_items, config.benchmark.ease_lambda)
    users = relevant.select(USER_IDX).distinct()
    history = train.select(USER_IDX, "item_idx").unionByName(
        spark.read.parquet(str(prepared / "validation")).select(USER_IDX, "item_idx")
    )
    every = rated_lists(seen_items(history)).join(users, USER_IDX)
    lists = ease_top_k(spark, every, model.weights, k, device="cpu")
    figures = ranking_metrics(lists, relevant, k)
    return {**figures, "lambda": config.benchmark.ease_lambda, "train_seconds": model.train_seconds}


def ranking_table(results: list[dict], ease: dict) -> str:
    keys = (("ndcg_at_k", "NDCG"), ("precision_at_k", "Precision"), ("recall_at_k", "Recall"))
    lines = [
        f"{'figure@k':<12} {'seeds':>5} {'mean':>7} {'std':>7} {'min':>7} {'max':>7} "
        f"{'EASE':>7}  per seed"
    ]
    for key, label in keys:
        values = [r[key] for r in results]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = ", ".join(f"{r['seed']}: {r[key]:.4f}" for r in results)
        lines.append(
            f"{label:<12} {len(values):>5} {statistics.mean(values):>7.4f} {spread:>7.4f} "
            f"{min(values):>7.4f} {max(values):>7.4f} {ease[key]:>7.4f}  {per_seed}"
        )
    return "\n".join(lines)


def run_ranking(args) -> None:
    """The ``ml100k-ranking`` protocol: prepare once, train per seed, measure with Spark."""
    from recspark.core.config import load_config
    from recspark.core.spark import get_spark
    from recspark.core.storage import Layout
    from recspark.data.prepared import read_manifest
    from recspark.evaluate.metrics import relevant_items

    if not (args.data / "u.data").exists():
        raise SystemExit(f"MovieLens 100K's u.data not found at {args.data}: pass --data")
    config_path = args.ranking_config.resolve()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ml100k-ranking-") as scratch:
        root = (args.root or Path(scratch)).resolve()
        data = args.data.resolve()
        prepare_ranking(root, data, config_path, args.ranking_validation)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(
                    train_ranking_once,
                    s,
                    str(root),
                    str(data),
                    str(config_path),
                    [f"split.validation_fraction={args.ranking_validation}", *args.extra],
                )
                for s in args.seeds
            ]
            runs = []
            for future in futures:
                runs.append(future.result())
                run = runs[-1]
                print(
                    f"recspark-ranking seed {run['seed']}: trained ({run['seconds']:.0f}s, best "
                    f"epoch {run['best_epoch']}, validation loss {run['validation_loss']:.4f})",
                    file=sys.stderr,
                    flush=True,
                )
        config = load_config(
            config_path, [*ranking_overrides(root, data, args.ranking_validation), *args.extra]
        )
        manifest = read_manifest(Layout(config.paths.root), config.run_date)
        prepared = Layout(config.paths.root).prepared(config.run_date)
        spark = get_spark("movielens-accuracy", master=config.spark.master, conf=config.spark.conf)
        k = config.evaluate.k
        test = spark.read.parquet(str(prepared / "test"))  # read once, after training
        relevant = relevant_items(test, config.evaluate.relevance_threshold).cache()
        results = []
        for run in runs:
            figures = ranking_figures(spark, run.pop("lists"), relevant, k)
            results.append({**run, **figures})
            print(
                f"recspark-ranking seed {run['seed']}: NDCG@{k} {figures['ndcg_at_k']:.4f} "
                f"precision@{k} {figures['precision_at_k']:.4f} recall@{k} "
                f"{figures['recall_at_k']:.4f}",
                file=sys.stderr,
                flush=True,
            )
        ease = ease_figures(spark, config, prepared, manifest.items, k, relevant)
        print(f"ease: NDCG@{k} {ease['ndcg_at_k']:.4f}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "ease": ease, "seconds": wall}, indent=2))
    print(f"ml100k-ranking, {config_path.name}, k={k}, {wall:.0f}s")
    print(ranking_table(results, ease))


def table(results: list[dict], honest: bool) -> str:
    figure = "test RMSE" if honest else "val. RMSE"
    lines = [
        f"{'model':<10} {'seeds':>5} {figure:>9} {'std':>7} {'min':>7} {'max':>7}  per seed"
        + ("  (validation RMSE that chose the epoch)" if honest else ""),
    ]
    for name in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == name]
        values = [r["rmse"] for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = ", ".join(
            f"{r['seed']}: {r['rmse']:.4f}"
            + (f" ({r['validation_rmse']:.4f})" if honest and r.get("validation_rmse") else "")
            for r in runs
        )
        lines.append(
            f"{name:<10} {len(values):>5} {statistics.mean(values):>9.4f} {spread:>7.4f} "
            f"{min(values):>7.4f} {max(values):>7.4f}  {per_seed}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--root", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run side by side")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, default=None, help="also write every run here")
    parser.add_argument("--no-als", action="store_true", help="leave out Spark ALS (u1)")
    parser.add_argument(
        "--protocol",
        choices=["ml100k-u1", "ml100k-u1-optimistic", "ml100k-ranking"],
        default="ml100k-u1",
        help="u1 test RMSE (default), the old u1 validation RMSE, or top-k ranking on u.data",
    )
    parser.add_argument(
        "--ranking-config",
        type=Path,
        default=RANKING_CONFIG,
        help="the config trained under --protocol ml100k-ranking (--models does not apply)",
    )
    parser.add_argument(
        "--ranking-validation",
        type=float,
        default=VALIDATION_SHARE,
        help="ml100k-ranking: the validation split's share of all rows, carved from the 75%%",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.protocol == "ml100k-ranking":
        run_ranking(args)
        return
    if not (args.data / "u1.base").exists():
        raise SystemExit(f"MovieLens 100K not found at {args.data}: pass --data")
    honest = args.protocol == "ml100k-u1"
    data = str(args.data.resolve())
    with tempfile.TemporaryDirectory(prefix="ml100k-accuracy-") as scratch:
        root = (args.root or Path(scratch)).resolve()
        prepare(root, args.data.resolve(), honest, args.extra)
        jobs = [(m, s) for m in args.models for s in args.seeds]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(train_once, m, s, str(root), data, args.extra, honest) for m, s in jobs
            ]
            results = []
            for future in futures:
                results.append(future.result())
                run = results[-1]
                print(
                    f"{run['model']} seed {run['seed']}: RMSE {run['rmse']:.4f} (epoch "
                    f"{run['best_epoch']}, {run['seconds']:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )
        if not args.no_als:
            for seed in args.seeds:
                results.append(als_once(seed, str(root), data, args.extra, honest))
                print(f"als seed {seed}: RMSE {results[-1]['rmse']:.4f}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(
        f"{args.protocol}: "
        + (
            "RMSE on u1.test, nothing selected on it"
            if honest
            else "RMSE on u1.test, which also chose the epochs (optimistic)"
        )
    )
    print(table(results, honest))


if __name__ == "__main__":
    main()
