"""Data-parallel training through Spark's ``TorchDistributor`` (``train.num_processes > 1``).

The driver hands :func:`train_worker` (a module-level function, so it pickles by reference) and
a :class:`WorkerJob` of plain values to ``TorchDistributor``. Every process joins a
``torch.distributed`` group (gloo on CPU, nccl on GPU), wraps the model in
``DistributedDataParallel``, reads its own shard of row groups through the feed
(``shard``/``shard_count``), and runs the very loop a single process runs
(:func:`recspark.train.loop.fit`) with a :class:`TorchProcessGroup` for its sums and barriers.
Workers never touch Spark: paths, settings and the initial weights travel in the job, so
``paths.root`` must be a filesystem every process sees (as it must be for every command).

The trained weights come back as the task's result, not through a file: rank 0 serialises them
(with its history) as plain data, broadcasts those bytes through the process group, and every
process returns them. TorchDistributor keeps one process's return value (on the driver's machine
whichever ends last, on executors partition 0's), so the driver gets rank 0's result either way,
and reads it with ``torch.load(weights_only=True)`` like any other bytes it did not write.

Shards hold whole row groups and so can differ in size;
:func:`recspark.train.batching.plan_feed` gives each process a batch proportional to its shard and
the same number of steps, and
:func:`weighted_allreduce` weights each process's gradient by its share of the global batch, so a
step is the same average over ``train.batch_size`` rows that one process would take.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from recspark.core import location
from recspark.core.torch_utils import device_for_work
from recspark.model.saving import load_plain, plain_data
from recspark.train.loop import TrainSettings, fit
from recspark.train.objectives.base import Objective
from recspark.train.processes import LocalProcess
from recspark.train.records import EpochRecord, FitResult

log = logging.getLogger(__name__)


def weighted_allreduce(weight, bucket):
    """DDP communication hook: sum over processes of ``weight x`` each process's gradient.

    ``weight`` is a float, ``bucket`` a ``torch.distributed.GradBucket``; the result a future of
    the reduced tensor. (No annotations: under postponed evaluation they would be strings, and DDP
    rejects a hook whose ``bucket`` annotation is not the class itself.)

    With ``weight`` this process's share of the global batch, the sum is the gradient of the mean
    loss over the global batch, where DDP's default (a plain mean over processes) would overweight
    the rows of a smaller shard.
    """
    buffer = bucket.buffer().mul_(weight)
    future = dist.all_reduce(buffer, async_op=True).get_future()
    return future.then(lambda done: done.value()[0])


class TorchProcessGroup(LocalProcess):
    """:class:`~recspark.train.processes.LocalProcess` over an initialised ``torch.distributed``
    group."""

    def __init__(self, device: torch.device):
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device
        # nccl reduces only GPU tensors; gloo only CPU ones.
        self.reduce_device = device if dist.get_backend() == "nccl" else torch.device("cpu")

    def wrap(self, model: nn.Module, batch_weight: float) -> nn.Module:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        wrapped.register_comm_hook(state=batch_weight, hook=weighted_allreduce)
        return wrapped

    def sum(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.reduce_device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        dist.barrier()


def _plain_bytes(value: Any, where: str) -> bytes:
    buffer = io.BytesIO()
    torch.save(plain_data(value, where), buffer)
    return buffer.getvalue()


def _state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return _plain_bytes(dict(state), "the initial weights")


# What to do when bytes this module reads back hold more than plain data.
_ADVICE = "something other than recspark wrote it: run the training again"


def rank0_result(payload: bytes | None, group: TorchProcessGroup) -> bytes:
    """Rank 0's ``payload`` on every process of ``group`` (the other ranks' is ignored).

    A collective: every process must call it. The bytes travel through the process group
    (``broadcast_object_list``), over ``group.reduce_device``: the process's own GPU under nccl,
    which carries only GPU tensors, the CPU under gloo.
    """
    box = [payload if group.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, device=group.reduce_device)
    received = box[0]
    if not isinstance(received, bytes):
        raise RuntimeError("rank 0 broadcast no training result: see its log above")
    return received


@dataclass(frozen=True)
class WorkerJob:
    """What every training process gets from the driver: plain values only, so it pickles.

    Attributes
    ----------
    spec
        The model's :func:`recspark.model.registry.build_model` arguments.
    initial_state
        The starting weights, ``torch.save`` bytes of plain data.
    train_path, validation_path
        The prepared splits, on a filesystem every process sees.
    settings
        The loop's settings (``train.*``).
    device_setting
        ``train.device``: each process decides its device from it, where it runs.
    cpu_threads
        Torch threads per process; None divides the machine's cores among its processes.
    objective
        An :class:`~recspark.train.objectives.Objective`: its settings and item counts, no torch
        state.
    checkpoint_dir, resume, fingerprint
        Checkpoint settings, as :func:`recspark.train.loop.fit` takes them.
    storage
        The driver's storage settings (:func:`recspark.core.location.settings`), so the
        processes reach ``paths.root`` as the driver does.
    """

    spec: dict[str, Any]
    initial_state: bytes
    train_path: str
    validation_path: str
    settings: TrainSettings
    device_setting: str
    cpu_threads: int | None
    objective: Objective | None
    checkpoint_dir: str | None
    resume: bool
    fingerprint: str
    storage: dict[str, str]


@dataclass
class WorkerResult:
    """What rank 0 sends back: the trained weights and the run's :class:`FitResult` fields.

    It travels as ``torch.save`` bytes of plain data (:meth:`plain`, :meth:`from_plain`), which
    the driver reads with ``weights_only=True``.
    """

    state_dict: dict[str, torch.Tensor]
    result: FitResult

    def plain(self) -> dict[str, Any]:
        """This result as plain data (the bytes' layout)."""
        return {
            "state_dict": self.state_dict,
            "history": [dataclasses.asdict(record) for record in self.result.history],
            "best_epoch": self.result.best_epoch,
            "stopped_early": self.result.stopped_early,
            "resumed_from_epoch": self.result.resumed_from_epoch,
            "devices": self.result.devices,
            "seconds_by_phase": self.result.seconds_by_phase,
        }

    @classmethod
    def from_plain(cls, output: Any) -> WorkerResult:
        """The result :meth:`plain` wrote.

        Raises
        ------
        RuntimeError
            When ``output`` is not a training result.
        """
        if not isinstance(output, dict) or "state_dict" not in output:
            raise RuntimeError(f"the data-parallel result is not a training result; {_ADVICE}")
        return cls(
            state_dict=output["state_dict"],
            result=FitResult(
                history=[EpochRecord(**record) for record in output["history"]],
                best_epoch=output["best_epoch"],
                stopped_early=output["stopped_early"],
                resumed_from_epoch=output["resumed_from_epoch"],
                devices=list(output.get("devices") or []),
                seconds_by_phase=dict(output.get("seconds_by_phase") or {}),
            ),
        )


def _start_process(job: WorkerJob) -> torch.device:
    """Set up one training process: logging, storage, threads and its device (joined to the
    process group through :func:`torch.distributed.init_process_group` by the caller)."""
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("recspark").setLevel(logging.INFO)
    location.configure(job.storage)
    # Processes on one machine share its cores: without this each would start one thread per core.
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(job.cpu_threads or max(1, (os.cpu_count() or 1) // local_processes))
    # Decided here, in the process that trains: a CPU-only driver may run GPU executors.
    device = device_for_work(job.device_setting, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def train_worker(job: WorkerJob) -> bytes:
    """Body of one training process: returns rank 0's trained weights and history, as bytes.

    ``job`` holds plain values only (:class:`WorkerJob`). TorchDistributor keeps the return value
    of one process (whichever ends last on the driver's machine, partition 0's on executors), so
    rank 0 broadcasts its result (``torch.save`` bytes of plain data, :class:`WorkerResult`) and
    every process returns it.
    """
    from recspark.model.registry import build_model
    from recspark.model.spec import spec_from_dict

    device = _start_process(job)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        model = build_model(spec_from_dict(job.spec))
        model.load_state_dict(
            load_plain(job.initial_state, "the initial weights", "state dict", _ADVICE)
        )
        group = TorchProcessGroup(device)
        devices: list[str | None] = [None] * group.world_size
        dist.all_gather_object(devices, str(device))
        result = fit(
            model,
            job.train_path,
            job.validation_path,
            job.settings,
            device,
            objective=job.objective,
            checkpoint_dir=job.checkpoint_dir,
            resume=job.resume,
            fingerprint=job.fingerprint,
            parallel=group,
        )
        payload = None
        if group.rank == 0:
            result.devices = [str(name) for name in devices]
            output = WorkerResult(model.state_dict(), result).plain()
            payload = _plain_bytes(output, "the training result")
        return rank0_result(payload, group)
    finally:
        dist.destroy_process_group()


def _uses_gpu(
    device: torch.device, *, local_mode: bool, device_setting: str, executor_gpus: bool
) -> bool:
    """Whether the processes train on GPUs (and so ask Spark for one each, and use nccl).

    On the driver's machine the driver's device says whether there are GPUs; on executors the
    setting and Spark's GPU scheduling do (``train.device: auto`` with
    ``spark.task.resource.gpu.amount``).
    """
    if local_mode:
        return device.type == "cuda"
    return device_setting == "cuda" or (device_setting == "auto" and executor_gpus)


def _run_distributor(distributor: Any, job: WorkerJob) -> bytes:
    """``distributor.run(train_worker, job)``, its echo kept off stdout and its failure told."""
    # TorchDistributor echoes the workers' output on stdout, which must hold only the summary line.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            returned = distributor.run(train_worker, job)
        except RuntimeError as exc:
            raise RuntimeError(
                f"data-parallel training failed ({str(exc).splitlines()[0][:200]}); the workers' "
                "traceback is in the log above, prefixed by their rank"
            ) from exc
    if not isinstance(returned, bytes):
        raise RuntimeError("data-parallel training returned no result: see the workers' log above")
    return returned


def fit_distributed(
    model: nn.Module,
    spec: dict[str, Any],
    *,
    train_path: str,
    validation_path: str,
    settings: TrainSettings,
    device: torch.device,
    num_processes: int,
    local_mode: bool = True,
    cpu_threads: int | None = None,
    device_setting: str = "auto",
    executor_gpus: bool = False,
    objective: Objective | None = None,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    fingerprint: str = "",
) -> FitResult:
    """Train ``model`` in place with ``num_processes`` data-parallel processes.

    Parameters
    ----------
    model
        Built from ``spec``; its weights are every process's starting point.
    local_mode
        Run the processes on the driver's machine (``local[*]`` masters), else as a barrier
        stage on the executors (one process per task; GPUs need ``spark.task.resource.gpu.amount``).
    cpu_threads
        Torch threads per process; None divides the machine's cores among its processes.
    device_setting
        ``train.device``: each process decides its own device from it and its local rank
        (:func:`recspark.core.torch_utils.device_for_work`), where it runs.
    executor_gpus
        Whether executors have GPUs to schedule (``spark.task.resource.gpu.amount`` > 0): with
        ``auto`` off the driver's machine, the processes then ask Spark for one GPU each.
    Other parameters are those of :func:`recspark.train.loop.fit`.

    Returns
    -------
    The :class:`~recspark.train.loop.FitResult` of rank 0; ``model`` holds the best weights.
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    job = WorkerJob(
        spec=spec,
        initial_state=_state_bytes(model.state_dict()),
        train_path=str(train_path),
        validation_path=str(validation_path),
        settings=settings,
        device_setting=device_setting,
        cpu_threads=cpu_threads,
        objective=objective,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        resume=resume,
        fingerprint=fingerprint,
        storage=location.settings(),
    )
    use_gpu = _uses_gpu(
        device, local_mode=local_mode, device_setting=device_setting, executor_gpus=executor_gpus
    )
    distributor = TorchDistributor(
        num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu
    )
    log.info(
        "data-parallel training: %d processes (%s, %s)",
        num_processes,
        "on the driver" if local_mode else "on executors",
        "nccl" if use_gpu else "gloo",
    )
    returned = _run_distributor(distributor, job)
    output = load_plain(returned, "the data-parallel result", "training result", _ADVICE)
    trained = WorkerResult.from_plain(output)
    model.load_state_dict(trained.state_dict)
    return trained.result
