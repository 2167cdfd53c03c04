"""Torch helpers shared by every stage: which device runs the work, and seeding.

No Spark here: the scoring kernel and the training loop import this on machines without pyspark.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def resolve_device(setting: str = "auto") -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is an error."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no GPU is visible: use 'auto' or 'cpu'")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def gpu_index(address: str, visible: str | None = None) -> int:
    """The CUDA device index of a GPU that Spark assigned by ``address`` (a discovery-script id).

    When ``CUDA_VISIBLE_DEVICES`` (``visible``) lists the executor's GPUs, CUDA numbers them by
    their place in that list, so an assigned ``"3"`` among ``"2,3"`` is ``cuda:1``; otherwise the
    address is the index itself.
    """
    listed = [part.strip() for part in (visible or "").split(",") if part.strip()]
    if address in listed:
        return listed.index(address)
    return int(address)


def device_for_work(
    setting: str = "auto",
    gpu_addresses: Sequence[str] | None = None,
    local_rank: int | None = None,
) -> torch.device:
    """The device of the process or task that does the work, decided where it runs.

    ``setting`` is ``train.device``. With CUDA: a Spark task's own GPU (``gpu_addresses``, its
    ``TaskContext.resources()["gpu"].addresses``) wins, then a data-parallel process's
    ``local_rank`` (``LOCAL_RANK``, one process per GPU), else the current CUDA device. Deciding
    here rather than on the driver is what lets a CPU-only driver run GPU executors, and several
    GPUs per executor each run their own task.
    """
    device = resolve_device(setting)
    if device.type != "cuda" or device.index is not None:
        return device
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu_addresses:
        index = gpu_index(str(gpu_addresses[0]), visible)
    elif local_rank is not None:
        index = local_rank % max(1, torch.cuda.device_count())
    else:
        return torch.device("cuda", torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise RuntimeError(
            f"GPU {index} was assigned but only {torch.cuda.device_count()} are visible "
            f"(CUDA_VISIBLE_DEVICES={visible!r}): check spark.task.resource.gpu.amount and the "
            "executors' GPU discovery script"
        )
    return torch.device("cuda", index)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch in one process: a function of nothing else, so resume is exact."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return getattr(model, "module", model)
