"""How big a step and how long a run: batch size, epoch count and each process's share of them.

``train.batch_size: auto`` and ``train.epochs: auto`` are resolved from the train split's row
count (:func:`auto_batch_size`, :func:`auto_epochs`), and :func:`plan_feed` splits an epoch over
the processes of a data-parallel run so that each takes the same number of steps
(:class:`FeedPlan`). Plain arithmetic over row counts: no torch, no Spark, no files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FeedPlan:
    """How one process reads the train split: its shard, batch size and steps per epoch."""

    shard: int | None
    shard_count: int | None
    batch_size: int
    steps_per_epoch: int
    max_steps: int | None
    batch_weight: float
    rows_per_epoch: int


#: ``train.batch_size: auto``: an epoch of about :data:`AUTO_BATCH_STEPS` steps, in batches of
#: 1,024 to 65,536 rows. On the CPU a step has a fixed cost (a few ms of Python and dispatch) that
#: small batches pay too often; 8M train rows in 65,536-row batches run at ~0.9M rows/s on one
#: core with ``sparse_adam``, where 4,096-row batches ran at ~110k.
AUTO_BATCH_STEPS = 128
AUTO_BATCH_BOUNDS = (1024, 65536)


def auto_batch_size(setting: int | str, rows: int) -> int:
    """``train.batch_size``: itself when a number; for ``auto``, the power of two nearest
    ``rows / AUTO_BATCH_STEPS`` within :data:`AUTO_BATCH_BOUNDS`.

    Large tables get large batches (a step's fixed cost is paid fewer times) and small ones keep
    enough steps per epoch to converge: 4,096 for the 640k train rows of the default synthetic
    data, 65,536 for 8M.
    """
    if setting != "auto":
        return int(setting)
    low, high = AUTO_BATCH_BOUNDS
    nearest = 2 ** round(math.log2(max(1, rows) / AUTO_BATCH_STEPS))
    return min(high, max(low, nearest))


#: ``train.epochs: auto``: enough epochs to train about :data:`AUTO_EPOCH_ROWS` rows, within
#: :data:`AUTO_EPOCH_BOUNDS`. Small tables need every one of 8 epochs (the default synthetic data's
#: lists beat most-popular by 0.014 NDCG@10 after 8, by 0.0003 after 5); on 8M train rows 5 epochs
#: reach validation RMSE 0.805, below Spark ALS rank 32 x 10 (0.829), in 82-100 s where 8 took
#: 147-153 s (benchmarks/bench_train_vs_als.py).
AUTO_EPOCH_ROWS = 40_000_000
AUTO_EPOCH_BOUNDS = (3, 8)


def auto_epochs(setting: int | str, rows: int) -> int:
    """``train.epochs``: itself when a number; for ``auto``, ``AUTO_EPOCH_ROWS / rows`` rounded
    to the nearest whole number within :data:`AUTO_EPOCH_BOUNDS`: 8 up to 5.3M train rows, 5
    for 8M, 3 from 11.5M.

    A large table gives each epoch many rows of every user and item, so fewer passes over it
    converge; the one-cycle schedule spans whatever number of epochs this gives.
    """
    if setting != "auto":
        return int(setting)
    low, high = AUTO_EPOCH_BOUNDS
    return min(high, max(low, math.floor(AUTO_EPOCH_ROWS / max(1, rows) + 0.5)))


def plan_feed(row_counts: list[int], batch_size: int | str, rank: int, world_size: int) -> FeedPlan:
    """Split an epoch over processes so that each does the same number of steps.

    Petastorm gives row group ``i`` to shard ``i % world_size``, so shards can hold different row
    counts; a process that ran out of batches before the others would leave them waiting forever
    inside DistributedDataParallel. Each process therefore gets a batch size proportional to its
    shard (the global batch stays ``batch_size``), every process stops after the same number of
    steps, and each one's gradient is weighted by its share of the global batch, which makes a
    step the same average over ``batch_size`` rows that one process would take.
    """
    total = sum(row_counts)
    if total == 0:
        raise ValueError("the train split is empty: prepare must leave train rows")
    size = auto_batch_size(batch_size, total)
    steps = math.ceil(total / size)
    if world_size == 1:
        return FeedPlan(None, None, size, steps, None, 1.0, total)
    if len(row_counts) < world_size:
        raise ValueError(
            f"the train split has {len(row_counts)} Parquet row groups, fewer than "
            f"train.num_processes={world_size}: lower train.num_processes, or re-run prepare with "
            "a smaller prepare.row_group_mb or prepare.rows_per_file"
        )
    shard_rows = [sum(row_counts[shard::world_size]) for shard in range(world_size)]
    batches = [math.ceil(rows / steps) for rows in shard_rows]
    steps = min(math.ceil(rows / size) for rows, size in zip(shard_rows, batches, strict=True))
    used = sum(min(rows, size * steps) for rows, size in zip(shard_rows, batches, strict=True))
    return FeedPlan(
        rank, world_size, batches[rank], steps, steps, batches[rank] / sum(batches), used
    )
