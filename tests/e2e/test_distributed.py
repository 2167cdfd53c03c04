"""Data-parallel training through TorchDistributor gives what one process gives.

Two gloo processes on the driver (Spark ``local[2]``), over a train split whose row groups split
into unequal shards (3,500 and 2,100 rows): were the step counts not kept equal, DDP would hang;
were the shards weighted equally, the quality would drift from one process's.
"""

from __future__ import annotations

import json
import math
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import torch

from recspark.cli import main
from recspark.core.location import Location
from recspark.model.saving import load_model
from tests.unit.train.test_training import write_prepared

OVERRIDES = {
    "run_date": "2026-01-15",
    "model.kind": "dot_bias",
    "model.factors": 6,
    "train.epochs": 6,
    "train.batch_size": 256,
    "train.lr": 0.03,
    "train.weight_decay": 0.0005,
    "train.shuffle_buffer": 4096,
    "train.seed": 5,
    # Data-parallel quality is compared on the rating objective alone; the ranking head's
    # gradients across processes are checked in tests/unit/model/test_lists_head.py.
    "lists.source": "ratings",
    "spark.conf": "{}",
}


def train(root: Path, **extra) -> dict:
    values = {**OVERRIDES, "paths.root": str(root), **extra}
    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main(
            ["train", *[part for k, v in values.items() for part in ("--set", f"{k}={v}")]]
        )
    summary = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert status == 0, summary
    return summary


def test_two_processes_reach_the_quality_of_one(spark, tmp_path):
    root = tmp_path / "root"
    write_prepared(
        root / "prepared" / "2026-01-15", count=7000, train_files=[2000, 1500, 1500, 600]
    )
    single = train(root)
    parallel = train(root, **{"train.num_processes": 2})
    assert parallel["metrics"]["num_processes"] == 2
    # Each process decided its own device where it ran, and the summary says which.
    assert parallel["metrics"]["devices"] == ["cpu", "cpu"]
    assert single["metrics"]["devices"] == ["cpu"]
    assert parallel["metrics"]["epochs"] == single["metrics"]["epochs"] == 6
    one, two = single["metrics"]["validation_rmse"], parallel["metrics"]["validation_rmse"]
    assert two < 0.6  # learned: the ratings spread ~1.0
    assert abs(one - two) < 0.01, (one, two)
    # The published model is rank 0's trained weights, and it scores what the summary says.
    model, spec, _ = load_model(Location(parallel["outputs"]["model"]))
    assert spec["n_users"] == 300
    history = json.loads(Location(parallel["outputs"]["metrics"]).read_text())["history"]
    # Every process did the same steps: together they saw (nearly) the whole split each epoch.
    assert all(5000 <= record["rows"] <= 5600 for record in history)
    assert math.isfinite(float(model.user_factors.weight.detach().sum()))
    assert not (root / "_checkpoints" / "2026-01-15").exists()


def test_too_many_processes_for_the_row_groups_fail_with_advice(spark, tmp_path):
    root = tmp_path / "root"
    write_prepared(root / "prepared" / "2026-01-15", count=2000, train_files=[800, 800])
    values = {**OVERRIDES, "paths.root": str(root), "train.num_processes": 3}
    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main(
            ["train", *[part for k, v in values.items() for part in ("--set", f"{k}={v}")]]
        )
    summary = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert status == 1 and "num_processes" in summary["error"]


def test_the_driver_gets_rank_zeros_result_whoever_ends_last(spark):
    # The weights come back as the task's result, through no file: rank 0's bytes are broadcast
    # and every process returns them. On the driver's machine TorchDistributor keeps the return
    # value of the process that ends last; here rank 1 ends last, and the driver still gets
    # rank 0's result. (Defined in here so that cloudpickle ships it by value to the workers.)
    from pyspark.ml.torch.distributor import TorchDistributor

    def worker():
        import time

        import torch
        import torch.distributed as dist

        from recspark.train.distributed import TorchProcessGroup, rank0_result

        dist.init_process_group("gloo")
        try:
            group = TorchProcessGroup(torch.device("cpu"))
            own = f"rank {group.rank}".encode()
            shared = rank0_result(own, group)
        finally:
            dist.destroy_process_group()
        if group.rank != 0:
            time.sleep(3)  # end last
        return shared, own

    with redirect_stdout(StringIO()):
        shared, own = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run(worker)
    assert own == b"rank 1"  # the kept return value is indeed the last process's, not rank 0's
    assert shared == b"rank 0"


@pytest.fixture(autouse=True)
def _threads():
    # Workers set their own thread counts; keep the driver's unchanged for the other tests.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
