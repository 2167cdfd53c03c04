"""``nightly`` with ``paths.root`` on an object store beside the same run on local disk.

Not a test: a measurement to run by hand. It starts a SeaweedFS S3 server on loopback (the one the
tests use, ``tests/objectstore.py``), then for each root, one after the other in fresh processes
(each its own JVM): ``generate`` (the synthetic data set, ``--ratings`` ratings) and ``nightly`` for
one date on it, through the CLI, as a scheduler runs them. It prints one JSON line per root and a
last line with both, side by side: wall seconds of ``generate`` and ``nightly`` (process start to
exit, JVM start included) and the seconds of each nightly stage from its summary.

    .venv/bin/python benchmarks/bench_storage.py --ratings 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.objectstore import start_object_store  # noqa: E402


def run(command: str, overrides: dict[str, object]) -> tuple[float, dict]:
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
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    if done.returncode != 0:
        raise SystemExit(f"{command} failed: {summary.get('error')}\n{done.stderr[-3000:]}")
    return seconds, summary


def measure(root: str, spark_conf: dict[str, str], ratings: int) -> dict:
    users, items = max(1000, ratings // 100), max(500, ratings // 1000)
    common = {
        "paths.root": root,
        "run_date": "2026-11-26",
        "spark.conf": json.dumps(spark_conf),
        "spark.master": "local[*]",
        "synthetic.ratings": ratings,
        "synthetic.users": users,
        "synthetic.items": items,
    }
    generate_seconds, _ = run("generate", common)
    nightly = {**common, "input.format": "synthetic", "evaluate.baselines": "[]", "train.epochs": 5}
    nightly_seconds, summary = run("nightly", nightly)
    return {
        "root": root,
        "ratings": ratings,
        "generate_seconds": round(generate_seconds, 1),
        "nightly_seconds": round(nightly_seconds, 1),
        "stage_seconds": summary["nightly"]["stage_seconds"],
        "validation_rmse": summary["metrics"].get("validation_rmse"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as scratch:
        store = start_object_store(Path(scratch) / "store")
        try:
            store.create_bucket("bench")
            quiet = {"spark.ui.enabled": "false"}
            local = measure(str(Path(scratch) / "local"), quiet, args.ratings)
            print(json.dumps(local), flush=True)
            remote = measure("s3a://bench/recspark", {**quiet, **store.hadoop_conf()}, args.ratings)
            print(json.dumps(remote), flush=True)
        finally:
            store.stop()
    keys = ("generate_seconds", "nightly_seconds")
    print(json.dumps({key: {"local": local[key], "object_store": remote[key]} for key in keys}))


if __name__ == "__main__":
    main()
