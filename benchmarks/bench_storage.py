"""``prepare`` and ``nightly`` with ``paths.root`` on an object store beside the same run on local
disk.

Not a test: a measurement to run by hand, or to import (:func:`measure_prepare_storage`). It starts
a SeaweedFS S3 server on loopback (the one the tests use, ``tests/objectstore.py``), then for each
root, one after the other in fresh processes (each its own JVM): ``generate`` (the synthetic data
set) and ``prepare`` (or ``nightly``) for one date on it, through the CLI, as a scheduler runs
them. Wall seconds are process start to exit (JVM start included); a command's own ``seconds`` come
from its summary line.

    .venv/bin/python benchmarks/bench_storage.py --ratings 200000              # prepare
    .venv/bin/python benchmarks/bench_storage.py --ratings 800000 --nightly    # and nightly
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.objectstore import ObjectStore, start_object_store  # noqa: E402

RUN_DATE = "2026-11-26"


def _default_spark_conf() -> dict[str, str]:
    """``spark.conf`` of ``conf/default.yaml`` (shuffle partitions, driver memory): ``--set
    spark.conf=...`` replaces the whole section, so the benchmark passes it along."""
    import yaml

    data = yaml.safe_load((REPO / "conf" / "default.yaml").read_text())
    return {key: str(value) for key, value in data["spark"]["conf"].items()}


QUIET = {**_default_spark_conf(), "spark.ui.enabled": "false"}


def run(command: str, overrides: dict[str, object]) -> tuple[float, dict]:
    """Run one CLI command in a fresh process; its wall seconds and its summary line."""
    arguments = [part for key, value in overrides.items() for part in ("--set", f"{key}={value}")]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "recspark.cli", command, *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0:
        raise SystemExit(f"{command} failed: {summary.get('error')}\n{done.stderr[-3000:]}")
    return seconds, summary


def _common(root: str, spark_conf: dict[str, str], ratings: int, users: int, items: int) -> dict:
    return {
        "paths.root": root,
        "run_date": RUN_DATE,
        "spark.conf": json.dumps(spark_conf),
        "spark.master": "local[*]",
        "synthetic.ratings": ratings,
        "synthetic.users": users,
        "synthetic.items": items,
    }


def _sizes(ratings: int, users: int | None, items: int | None) -> tuple[int, int]:
    return users or max(1000, ratings // 100), items or max(500, ratings // 1000)


def _prepare_once(root: str, spark_conf: dict[str, str], common: dict) -> dict[str, Any]:
    run("generate", common)
    wall, summary = run("prepare", {**common, "input.format": "synthetic"})
    return {"root": root, "seconds": summary["seconds"], "wall_seconds": round(wall, 1)}


def _nightly_once(common: dict) -> dict[str, Any]:
    nightly = {
        **common,
        "input.format": "synthetic",
        "evaluate.baselines": "[]",
        "train.epochs": 5,
        "run_date": "2026-11-27",  # a date prepare has not published: nightly prepares it itself
    }
    wall, summary = run("nightly", nightly)
    return {
        "seconds": summary["seconds"],
        "wall_seconds": round(wall, 1),
        "stage_seconds": summary["nightly"]["stage_seconds"],
        "validation_rmse": summary["metrics"].get("validation_rmse"),
    }


def _ratio(local: float, remote: float) -> float:
    return round(remote / local, 2) if local else float("nan")


def _measure(
    store: ObjectStore, scratch: Path, common_for, *, nightly: bool
) -> dict[str, dict[str, Any]]:
    store.create_bucket("bench")
    roots = {
        "local": (str(scratch / "local"), dict(QUIET)),
        "s3": ("s3a://bench/recspark", {**QUIET, **store.hadoop_conf()}),
    }
    found: dict[str, dict[str, Any]] = {}
    for name, (root, conf) in roots.items():
        common = common_for(root, conf)
        found[name] = {"prepare": _prepare_once(root, conf, common)}
        if nightly:
            found[name]["nightly"] = _nightly_once(common)
    return found


def measure_prepare_storage(
    *, ratings: int, users: int | None = None, items: int | None = None, nightly: bool = False
) -> dict[str, Any]:
    """``generate`` then ``prepare`` through the CLI on a local root and on an ``s3a://`` root.

    Parameters
    ----------
    ratings, users, items
        The synthetic data set's size (users and items default to ratings/100 and ratings/1000,
        at least 1,000 and 500).
    nightly
        Also time one ``nightly`` for a new date on each root (prepare, train, evaluate, score,
        history), after the prepare.

    Returns
    -------
    dict
        ``local_seconds``, ``s3_seconds`` (prepare's own ``seconds`` from its summary), their
        ``ratio``, ``local_wall_seconds``, ``s3_wall_seconds`` (process start to exit) and
        ``wall_ratio``; with ``nightly`` the same keys prefixed ``nightly_`` and each root's
        stage seconds under ``nightly_stage_seconds``.
    """
    users, items = _sizes(ratings, users, items)

    def common_for(root: str, conf: dict[str, str]) -> dict:
        return _common(root, conf, ratings, users, items)

    with tempfile.TemporaryDirectory(prefix="bench-storage-") as folder:
        scratch = Path(folder)
        store = start_object_store(scratch / "store")
        try:
            found = _measure(store, scratch, common_for, nightly=nightly)
        finally:
            store.stop()
    local, remote = found["local"]["prepare"], found["s3"]["prepare"]
    result: dict[str, Any] = {
        "ratings": ratings,
        "users": users,
        "items": items,
        "local_seconds": local["seconds"],
        "s3_seconds": remote["seconds"],
        "ratio": _ratio(local["seconds"], remote["seconds"]),
        "local_wall_seconds": local["wall_seconds"],
        "s3_wall_seconds": remote["wall_seconds"],
        "wall_ratio": _ratio(local["wall_seconds"], remote["wall_seconds"]),
    }
    if nightly:
        local_n, remote_n = found["local"]["nightly"], found["s3"]["nightly"]
        result |= {
            "nightly_local_seconds": local_n["seconds"],
            "nightly_s3_seconds": remote_n["seconds"],
            "nightly_ratio": _ratio(local_n["seconds"], remote_n["seconds"]),
            "nightly_local_wall_seconds": local_n["wall_seconds"],
            "nightly_s3_wall_seconds": remote_n["wall_seconds"],
            "nightly_stage_seconds": {
                "local": local_n["stage_seconds"],
                "s3": remote_n["stage_seconds"],
            },
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--nightly", action="store_true", help="also time one nightly per root")
    args = parser.parse_args()
    result = measure_prepare_storage(
        ratings=args.ratings, users=args.users, items=args.items, nightly=args.nightly
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
