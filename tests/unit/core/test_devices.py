"""The device is chosen where the work runs: a task's own GPU, a process's local rank, or the CPU.

No GPU is needed: CUDA's presence and device count are faked, and so is a Spark task's context.
"""

from __future__ import annotations

import pytest
import torch

from recspark.core.torch_utils import device_for_work, gpu_index


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_a_task_given_gpu_1_runs_on_cuda_1(two_gpus):
    assert device_for_work("auto", gpu_addresses=["1"]) == torch.device("cuda", 1)
    assert device_for_work("cuda", gpu_addresses=["1"]) == torch.device("cuda", 1)


def test_a_training_process_runs_on_its_local_rank(two_gpus):
    assert device_for_work("auto", local_rank=1) == torch.device("cuda", 1)
    assert device_for_work("auto", local_rank=0) == torch.device("cuda", 0)


def test_task_resources_win_over_the_local_rank(two_gpus):
    assert device_for_work("auto", gpu_addresses=["1"], local_rank=0) == torch.device("cuda", 1)


def test_addresses_are_read_through_cuda_visible_devices(two_gpus, monkeypatch):
    """An executor that sees physical GPUs 2 and 3 numbers them 0 and 1."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_index("3", "2,3") == 1 and gpu_index("1", None) == 1
    assert device_for_work("auto", gpu_addresses=["3"]) == torch.device("cuda", 1)


def test_a_gpu_that_is_not_there_is_named(two_gpus):
    with pytest.raises(RuntimeError, match="GPU 5 was assigned but only 2 are visible"):
        device_for_work("auto", gpu_addresses=["5"])


def test_the_cpu_setting_and_a_machine_without_cuda_stay_on_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_for_work("cpu", gpu_addresses=["1"]) == torch.device("cpu")
    assert device_for_work("auto", gpu_addresses=["1"], local_rank=1) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        device_for_work("cuda")


def test_the_scoring_task_reads_its_gpu_from_the_task_context(two_gpus, monkeypatch):
    """The Spark glue asks the task context for the GPU Spark assigned to this task."""
    from recspark.serve import scoring

    class Resource:
        addresses = ("1",)

    class FakeContext:
        def resources(self):
            return {"gpu": Resource()}

        def cpus(self):
            return 1

    monkeypatch.setattr(scoring.TaskContext, "get", staticmethod(lambda: FakeContext()))
    assert scoring.task_device("auto") == torch.device("cuda", 1)
    monkeypatch.setattr(scoring.TaskContext, "get", staticmethod(lambda: None))
    assert scoring.task_device("auto") == torch.device("cuda", 0)


def test_blocks_are_sized_by_the_device():
    """users_per_block: auto keeps the CPU's measured block and fills a GPU's free memory."""
    from recspark.serve.kernel import CPU_USERS_PER_BLOCK, users_per_block

    cpu = torch.device("cpu")
    assert users_per_block("auto", cpu, 20_000) == CPU_USERS_PER_BLOCK == 128
    assert users_per_block(512, cpu, 20_000) == 512


def test_a_gpu_block_takes_a_quarter_of_free_memory_within_bounds(monkeypatch):
    from recspark.serve import kernel

    free = 16 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * 2**30))
    gpu = torch.device("cuda", 1)
    # 50k items: 600 kB of scores and workspace per user; a quarter of 16 GiB holds 7,158 users.
    assert kernel.users_per_block("auto", gpu, 50_000) == (free // 4) // (50_000 * 12)
    assert kernel.users_per_block("auto", gpu, 100) == 16_384  # small catalogues: the cap
    assert kernel.users_per_block("auto", gpu, 50_000_000) == 128  # huge ones: the floor
    assert kernel.users_per_block(256, gpu, 50_000) == 256
