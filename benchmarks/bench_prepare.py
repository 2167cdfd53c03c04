"""Measure `recspark prepare` on synthetic data: wall time and the driver's peak memory.

Each measurement runs in a fresh child process, so that the figures belong to one run: the child
is the Python driver and starts its own JVM (local mode: the JVM is the Spark driver and executor
at once). The child reports

* ``python_peak_rss_mb``: the Python driver's peak resident memory (``getrusage``),
* ``jvm_peak_rss_mb``: the JVM's peak resident memory (``VmHWM`` in ``/proc``), whose heap is
  capped by ``spark.driver.memory``,
* ``seconds``: prepare's own wall time (Spark already started), and ``total_seconds`` for the child.

Measuring two sizes shows whether driver memory grows with the data: it should not, because no
ratings or id lists are collected. Example (data generated once, then prepared)::

    .venv/bin/recspark generate --set synthetic.users=500000 --set synthetic.items=50000 \\
        --set synthetic.ratings=25000000 --set paths.root=/tmp/big
    .venv/bin/python benchmarks/bench_prepare.py --root /tmp/big

``--generate USERS ITEMS RATINGS`` generates the data first when ``ROOT/data/ratings`` is absent.
This is a script for people, not a test: it prints figures and asserts nothing about them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a live process from ``/proc/PID/status`` (``VmHWM``), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def java_descendants(pid: int) -> list[int]:
    """Pids of the java processes under ``pid`` (the JVM that pyspark launched)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            frontier.append(child)
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if command.endswith(b"java"):
                found.append(child)
    return found


def child(args: argparse.Namespace) -> None:
    """Run prepare in this process and print one JSON line of figures."""
    sys.path.insert(0, str(REPO))
    from recspark.cli import run_command
    from recspark.core.config import load_config

    overrides = [f"paths.root={args.root}", "input.format=synthetic", f"run_date={args.run_date}"]
    config = load_config(args.config, overrides)
    config.spark.conf = {
        "spark.driver.memory": args.driver_memory,
        "spark.sql.shuffle.partitions": str(args.shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.local.dir": args.local_dir,
    }
    started = time.perf_counter()
    clock = {"started": started}
    summary = run_command("prepare", config, clock)
    seconds = time.perf_counter() - clock["started"]
    jvm = [peak_rss_mb(pid) for pid in java_descendants(os.getpid())]
    figures = {
        "root": args.root,
        "input_rows": summary["counts"]["input_rows"],
        "users": summary["counts"]["users"],
        "items": summary["counts"]["items"],
        "train": summary["counts"]["train"],
        "seconds": round(seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "rows_per_second": round(summary["counts"]["input_rows"] / seconds),
        "python_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "jvm_peak_rss_mb": round(max((m for m in jvm if m is not None), default=float("nan")), 1),
        "spark_driver_memory": args.driver_memory,
    }
    print(json.dumps(figures), flush=True)


def generate(root: str, users: int, items: int, ratings: int) -> None:
    if (Path(root) / "data" / "ratings").exists():
        return
    command = [
        sys.executable,
        "-m",
        "recspark.cli",
        "generate",
        "--set",
        f"paths.root={root}",
        "--set",
        f"synthetic.users={users}",
        "--set",
        f"synthetic.items={items}",
        "--set",
        f"synthetic.ratings={ratings}",
    ]
    print("generating:", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root",
        action="append",
        required=True,
        help="paths.root holding data/ratings (repeatable: one run per root)",
    )
    parser.add_argument(
        "--generate",
        nargs=3,
        type=int,
        metavar=("USERS", "ITEMS", "RATINGS"),
        help="generate the data first when a root has none",
    )
    parser.add_argument("--config", default=None, help="YAML config (default conf/default.yaml)")
    parser.add_argument("--run-date", default="2026-01-01")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument("--local-dir", default="/tmp")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.root = args.root[0]
        child(args)
        return
    results = []
    for root in args.root:
        if args.generate:
            generate(root, *args.generate)
        command = [
            sys.executable,
            __file__,
            "--child",
            "--root",
            root,
            "--run-date",
            args.run_date,
            "--driver-memory",
            args.driver_memory,
            "--shuffle-partitions",
            str(args.shuffle_partitions),
            "--local-dir",
            args.local_dir,
        ]
        if args.config:
            command += ["--config", args.config]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-5000:])
            raise SystemExit(f"prepare failed on {root}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    header = (
        "input_rows",
        "users",
        "items",
        "seconds",
        "rows_per_second",
        "python_peak_rss_mb",
        "jvm_peak_rss_mb",
    )
    print("\n| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for result in results:
        print("| " + " | ".join(str(result[key]) for key in header) + " |")


if __name__ == "__main__":
    main()
