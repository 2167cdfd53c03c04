"""Validation RMSE of recspark's models on MovieLens 100K's u1 split, over several seeds.

Prepares u1.base -> u1.test once with ``recspark prepare`` (``split.method: given``), then trains
each config through the same seams as ``recspark train`` (``model_spec``, ``init_model``, the side
features, ``fit``: Petastorm-fed, one process) without publishing, and prints one table row per
model: RMSE per seed, mean, standard deviation and range. Not a test: it takes minutes.

    .venv/bin/python benchmarks/movielens_accuracy.py --seeds 42 43 44
    .venv/bin/python benchmarks/movielens_accuracy.py --models shipped --seeds 42 --jobs 2

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


def data_overrides(root: Path, data: Path) -> list[str]:
    return [
        f"paths.root={root}",
        f"run_date={RUN_DATE}",
        f"input.path={data / 'u1.base'}",
        f"input.validation_path={data / 'u1.test'}",
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
    from recspark.train.job import model_spec, side_features, train_settings
    from recspark.train.loop import fit, init_model

    torch.set_num_threads(1)
    path, overrides = CONFIGS[name]
    config = load_config(
        path, [*overrides, *data_overrides(Path(root), Path(data)), f"train.seed={seed}", *extra]
    )
    layout = Layout(config.paths.root)
    manifest = read_manifest(layout, config.run_date)
    prepared = layout.prepared(config.run_date)
    spec = model_spec(config, manifest, prepared)
    model = init_model(spec, config.train.seed)
    if config.model.side_info is not None:
        features = side_features(config, manifest, prepared)
        model.set_side_features(features.user, features.item)
    started = time.perf_counter()
    result = fit(
        model,
        str(prepared / "train"),
        str(prepared / "validation"),
        train_settings(config),
        resolve_device("cpu"),
    )
    best = result.history[result.best_epoch - 1]
    return {
        "model": name,
        "seed": seed,
        "rmse": best.validation_rmse,
        "mae": best.validation_mae,
        "best_epoch": result.best_epoch,
        "seconds": time.perf_counter() - started,
    }


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
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
