"""Accuracy of recspark's models on MovieLens 100K, over several seeds.

Two protocols (``--protocol``):

- ``ml100k-u1`` (the default): validation RMSE on the u1 split. Prepares u1.base -> u1.test once
  with ``recspark prepare`` (``split.method: given``), then trains each config through the same
  seams as ``recspark train`` (``model_spec``, ``init_model``, the side features, ``fit``:
  Petastorm-fed, one process) without publishing, and prints one table row per model: RMSE per
  seed, mean, standard deviation and range.
- ``ml100k-ranking``: the benchmark's ranking protocol (``recspark.evaluate.benchmark``'s
  ``ml100k-ranking``): u.data split 75/25 per user (``user_stratified``, seed 42), every validation
  item relevant, items seen in train never recommended, top ``evaluate.k``. Prepares u.data once
  with ``--ranking-config`` (default ``conf/movielens-100k-ranking.yaml``), trains that config per
  seed through the same seams (with its ranking objective), ranks every item for every user and
  reports NDCG/precision/recall at k per seed, their mean, standard deviation and range, beside
  EASE (``benchmark.ease_lambda``) on the same prepared split, all measured by recspark's Spark
  metrics (:func:`recspark.evaluate.metrics.ranking_metrics`).

Not a test: it takes minutes.

    .venv/bin/python benchmarks/movielens_accuracy.py --seeds 42 43 44
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
# The benchmark's ml100k-ranking protocol (recspark.evaluate.benchmark.datasets), whatever the
# ranking config says: u.data, 75/25 per user with seed 42, every validation item relevant.
RANKING_PROTOCOL = [
    "split.method=user_stratified",
    "split.validation_fraction=0.25",
    "split.seed=42",
    "evaluate.relevance_threshold=0",
    "score.exclude_seen=true",
]


def data_overrides(root: Path, data: Path) -> list[str]:
    return [
        f"paths.root={root}",
        f"run_date={RUN_DATE}",
        f"input.path={data / 'u1.base'}",
        f"input.validation_path={data / 'u1.test'}",
        "input.test_path=null",  # u1.test as validation, the protocol these figures were set on
    ]


def prepare(root: Path, data: Path) -> None:
    """Run ``recspark prepare`` once; later calls find its manifest and skip."""
    if (root / "prepared" / RUN_DATE / "manifest.json").exists():
        return
    command = [
        str(Path(sys.executable).parent / "recspark"),
        "prepare",
        "--config",
        str(CONFIGS["shipped"][0]),
        *[item for pair in data_overrides(root, data) for item in ("--set", pair)],
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0:
        raise SystemExit(f"prepare failed:\n{done.stderr[-3000:]}\n{summary}")
    print(f"prepared: {summary}", file=sys.stderr)


def train_once(name: str, seed: int, root: str, data: str, extra: list[str]) -> dict:
    """Train one config under one seed; returns the best epoch's figures."""
    import torch

    from recspark.core.config import load_config
    from recspark.core.storage import Layout
    from recspark.core.torch_utils import resolve_device
    from recspark.data.prepared import read_manifest
    from recspark.train.job import build_objective
    from recspark.train.loop import fit, init_model
    from recspark.train.publication_gate import ValidationScores, best_figures
    from recspark.train.spec import model_spec, side_features, train_settings

    torch.set_num_threads(1)
    path, overrides = CONFIGS[name]
    config = load_config(
        path, [*overrides, *data_overrides(Path(root), Path(data)), f"train.seed={seed}", *extra]
    )
    layout = Layout(config.paths.root)
    manifest = read_manifest(layout, config.run_date)
    prepared = layout.prepared(config.run_date)
    spec = model_spec(config.model, config.train, config.lists, manifest, prepared)
    model = init_model(spec.as_dict(), config.train.seed)
    if config.model.side_info is not None:
        features = side_features(config.model, manifest, prepared)
        model.set_side_features(features.user, features.item)
    started = time.perf_counter()
    result = fit(
        model,
        str(prepared / "train"),
        str(prepared / "validation"),
        train_settings(config.train, config.lists.head_lr_scale if config.lists_head else None),
        resolve_device("cpu"),
        objective=build_objective(
            config.model, config.ranking, config.lists, manifest=manifest
        ),  # with lists.source: head, the joint one
    )
    best = best_figures(result, ValidationScores())
    if config.model.blend is not None:  # as `recspark train` does: the autoencoder, then the mean
        best = blend(config, model, spec, manifest, prepared, best).best
    return {
        "model": name,
        "seed": seed,
        "rmse": best.validation_rmse,
        "mae": best.validation_mae,
        "best_epoch": result.best_epoch,
        "seconds": time.perf_counter() - started,
    }


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


def ranking_overrides(root: Path, data: Path) -> list[str]:
    return [
        f"paths.root={root}",
        f"run_date={RUN_DATE}",
        f"input.path={data / 'u.data'}",
        "input.format=movielens-100k",
        *RANKING_PROTOCOL,
    ]


def prepare_ranking(root: Path, data: Path, config_path: Path) -> None:
    """``recspark prepare`` of u.data with the ranking config's split; skipped when done."""
    if (root / "prepared" / RUN_DATE / "manifest.json").exists():
        return
    command = [
        str(Path(sys.executable).parent / "recspark"),
        "prepare",
        "--config",
        str(config_path),
        *[item for pair in ranking_overrides(root, data) for item in ("--set", pair)],
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
    seen[
        torch.as_tensor(train["user_idx"].to_numpy()), torch.as_tensor(train["item_idx"].to_numpy())
    ] = True
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
    """EASE (``benchmark.ease_lambda``) on the same prepared split, as the benchmark runs it:
    the Gram matrix in Spark, the lists through :func:`recspark.evaluate.ease.ease_top_k`."""
    from recspark.core.constants import USER_IDX
    from recspark.data.prepared import rated_lists, seen_items
    from recspark.evaluate.ease import ease_top_k, fit_ease
    from recspark.evaluate.metrics import ranking_metrics

    train = spark.read.parquet(str(prepared / "train"))
    model = fit_ease(train, n_items, config.benchmark.ease_lambda)
    users = relevant.select(USER_IDX).distinct()
    every = rated_lists(seen_items(train)).join(users, USER_IDX)
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
        prepare_ranking(root, data, config_path)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(
                    train_ranking_once, s, str(root), str(data), str(config_path), args.extra
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
        config = load_config(config_path, [*ranking_overrides(root, data), *args.extra])
        manifest = read_manifest(Layout(config.paths.root), config.run_date)
        prepared = Layout(config.paths.root).prepared(config.run_date)
        spark = get_spark("movielens-accuracy", master=config.spark.master, conf=config.spark.conf)
        k = config.evaluate.k
        validation = spark.read.parquet(str(prepared / "validation"))
        relevant = relevant_items(validation, config.evaluate.relevance_threshold).cache()
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


def table(results: list[dict]) -> str:
    lines = [
        f"{'model':<10} {'seeds':>5} {'mean RMSE':>9} {'std':>7} {'min':>7} {'max':>7}  per seed",
    ]
    for name in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == name]
        values = [r["rmse"] for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = ", ".join(f"{r['seed']}: {r['rmse']:.4f}" for r in runs)
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
    parser.add_argument(
        "--protocol",
        choices=["ml100k-u1", "ml100k-ranking"],
        default="ml100k-u1",
        help="u1 validation RMSE (default), or the benchmark's top-k ranking protocol on u.data",
    )
    parser.add_argument(
        "--ranking-config",
        type=Path,
        default=RANKING_CONFIG,
        help="the config trained under --protocol ml100k-ranking (--models does not apply)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.protocol == "ml100k-ranking":
        run_ranking(args)
        return
    if not (args.data / "u1.base").exists():
        raise SystemExit(f"MovieLens 100K not found at {args.data}: pass --data")
    with tempfile.TemporaryDirectory(prefix="ml100k-accuracy-") as scratch:
        root = (args.root or Path(scratch)).resolve()
        prepare(root, args.data.resolve())
        jobs = [(m, s) for m in args.models for s in args.seeds]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(train_once, m, s, str(root), str(args.data.resolve()), args.extra)
                for m, s in jobs
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
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
