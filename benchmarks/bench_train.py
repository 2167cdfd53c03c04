"""Rows per second of each training feed alone and of training, on CPU and (when present) GPU.

Not a test: a measurement to run by hand. It writes a synthetic prepared train split with pyarrow
(planted factors; ``--files`` files of row groups of ``--row-group`` rows, the layout prepare
writes), or reads an existing one given by ``--path``, then times:

- each feed of ``--feeds`` (``train.feed``: ``petastorm``, ``make_batch_reader`` +
  ``BatchedDataLoader``, for each ``--reader-workers`` count; ``arrow``, pyarrow alone): one
  shuffled epoch, its rows/s and seconds;
- training: one epoch of :func:`recspark.train.loop.train_epoch` per feed, optimizer and device,
  as the train job runs it.

Feeds that do not import on this stack (petastorm past pyarrow 15) are left out, saying so.
Example::

    .venv/bin/python benchmarks/bench_train.py --rows 10000000 --users 100000 --items 20000
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recspark.train.batching import plan_feed
from recspark.train.feeding import open_feed, petastorm_available, row_groups
from recspark.train.loop import init_model
from recspark.train.optim import Schedule, is_sparse_optimizer, make_optimizer
from recspark.train.steps import train_epoch


def write_synthetic(
    folder: Path, rows: int, users: int, items: int, files: int, row_group: int
) -> None:
    """Planted rank-8 ratings in [1, 5], written as ``files`` Parquet files."""
    rng = np.random.default_rng(0)
    user_factors = rng.normal(0, 0.5, (users, 8)).astype(np.float32)
    item_factors = rng.normal(0, 0.5, (items, 8)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = math.ceil(rows / files)
    for number in range(files):
        count = min(per_file, rows - number * per_file)
        user_idx = rng.integers(0, users, count, dtype=np.int32)
        item_idx = rng.integers(0, items, count, dtype=np.int32)
        raw = 3.5 + (user_factors[user_idx] * item_factors[item_idx]).sum(1)
        rating = np.clip(np.rint(raw + rng.normal(0, 0.5, count)), 1, 5).astype(np.float32)
        table = pa.table({"user_idx": user_idx, "item_idx": item_idx, "rating": rating})
        pq.write_table(table, folder / f"part-{number:05d}.parquet", row_group_size=row_group)


def time_feed(path: str, batch_size: int, workers: int, feed: str) -> tuple[float, float]:
    """(rows/s, seconds) of one shuffled epoch of ``feed``."""
    started, rows = time.perf_counter(), 0
    with open_feed(path, batch_size, shuffle=True, seed=1, workers=workers, feed=feed) as batches:
        for batch in batches:
            rows += len(batch["rating"])
    seconds = time.perf_counter() - started
    return rows / seconds, seconds


def time_training(
    path: str,
    users: int,
    items: int,
    optimizer_name: str,
    device: torch.device,
    batch_size: int,
    factors: int,
    lr: float,
    feed: str,
) -> float:
    spec = {
        "kind": "dot_bias",
        "n_users": users,
        "n_items": items,
        "factors": factors,
        "y_range": [0.5, 5.5],
        "sparse": is_sparse_optimizer(optimizer_name),
    }
    model = init_model(spec, 0).to(device)
    optimizer = make_optimizer(model, optimizer_name, lr)
    plan = plan_feed(row_groups(path), batch_size, 0, 1)
    schedule = Schedule(optimizer, "one_cycle", lr, 1, plan.steps_per_epoch)
    started = time.perf_counter()
    with open_feed(path, batch_size, shuffle=True, seed=1, feed=feed) as batches:
        _, rows = train_epoch(model, batches, optimizer, schedule, device, weight_decay=1e-4)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return rows / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", help="an existing prepared train folder (else synthetic)")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--row-group", type=int, default=250_000)
    parser.add_argument("--batch-size", type=int, default=32768)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--reader-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--optimizers", nargs="+", default=["adam", "sparse_adam"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--feeds", nargs="+", default=["petastorm", "arrow"], choices=["petastorm", "arrow"]
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        path = args.path
        if path is None:
            path = str(Path(scratch) / "train")
            write_synthetic(
                Path(path), args.rows, args.users, args.items, args.files, args.row_group
            )
        counts = row_groups(path)
        print(
            f"train split: {sum(counts):,} rows in {len(counts)} row groups; "
            f"batch {args.batch_size}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads",
            file=sys.stderr,
        )
        devices = [torch.device("cpu")] + (
            [torch.device("cuda")] if torch.cuda.is_available() else []
        )
        feeds = [f for f in args.feeds if f != "petastorm" or petastorm_available()]
        lines = [f"{'what':<50} {'rows/s':>14} {'epoch s':>9}"]
        if len(feeds) < len(args.feeds):
            lines.append("(petastorm does not import on this stack: its rows left out)")
        for feed in feeds:
            for workers in args.reader_workers if feed == "petastorm" else [1]:
                speed, seconds = time_feed(path, args.batch_size, workers, feed)
                label = f"feed {feed}" + (
                    f", {workers} reader threads" if feed == "petastorm" else ""
                )
                lines.append(f"{label:<50} {speed:>14,.0f} {seconds:>9.2f}")
        for device in devices:
            name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
            for feed in feeds:
                for optimizer in args.optimizers:
                    speed = time_training(
                        path,
                        args.users,
                        args.items,
                        optimizer,
                        device,
                        args.batch_size,
                        args.factors,
                        args.lr,
                        feed,
                    )
                    label = f"train dot_bias/{args.factors} {optimizer} on {name}, {feed} feed"
                    lines.append(f"{label:<50} {speed:>14,.0f} {sum(counts) / speed:>9.2f}")
        if not torch.cuda.is_available():
            lines.append("(no GPU visible: GPU rows left out)")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
