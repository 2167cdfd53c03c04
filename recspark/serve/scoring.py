"""The Spark side of scoring: the kernel (:mod:`recspark.serve.kernel`) run over every user.

Executors receive the item side of the model once, as a broadcast (item factors and biases, or the
MLP's weights), with the mask of the items that may be recommended at all (one bool per item:
enough training ratings, ``score.min_item_ratings``). Each scoring task receives one row per user
with every item it rated as one array (``prepare`` writes these rows once per run as ``rated/``)
as Arrow buffers: the list columns are the block's sparse mask (and matrix) without a per-row
loop. The users' vectors come one of two ways: with a user table small enough to broadcast, the
table rides the broadcast and the tasks read ``rated/``'s files themselves
(:mod:`recspark.serve.rated_files`), with no shuffle and no Spark decoding at all; otherwise
(:func:`recommend_all`) the rows of the ``user_factors`` table are joined by user with the rated
arrays (one shuffle of one row per user). Candidate user x item pairs never become rows, and no
rating crosses a shuffle at scoring time. Blocks are formed from user-sorted partitions, so
re-running with the same model gives identical lists.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import torch
from pyspark import Accumulator, TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_type
from pyspark.sql.types import FloatType, IntegerType, StructField, StructType
from torch import nn

from recspark.core.constants import (
    BIAS,
    FACTORS,
    ITEM_ID,
    ITEM_IDX,
    ITEMS,
    PREDICTION,
    RANK,
    SCORE,
    USER_IDX,
)
from recspark.core.torch_utils import device_for_work
from recspark.model.base import EmbeddingModel
from recspark.model.saving import model_bytes
from recspark.serve.kernel import UserTable, kernel_for, recommend_batches

if TYPE_CHECKING:  # pandas and pydantic stay out of the Python workers' imports (seconds cold)
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class ScoreCounters:
    """Users given a list and rows produced, added up by the scoring tasks (Spark accumulators:
    a successful task's updates count once, so they are exact once the writing action ends)."""

    users: Accumulator[int]
    rows: Accumulator[int]

    @classmethod
    def create(cls, spark: SparkSession) -> ScoreCounters:
        return cls(spark.sparkContext.accumulator(0), spark.sparkContext.accumulator(0))


@dataclass(frozen=True, eq=False)
class ScoringPlan:
    """How every user is scored: what a caller decides once and every scoring function reads.

    Parameters
    ----------
    payload
        :func:`item_side_payload` bytes; broadcast once to the executors.
    top_n
        List length per user.
    users_per_block
        Users per matrix product (memory per block: ``users_per_block x items`` floats), or
        ``auto``: sized by each task for its device (:func:`recspark.serve.kernel.users_per_block`).
    device
        ``train.device``: ``auto`` uses CUDA on executors that have a GPU.
    partitions
        Scoring tasks at least; default the session's default parallelism. (Spark may raise it to
        ``spark.sql.shuffle.partitions`` for the joins.)
    eligible
        One bool per item index: only these items are recommended, to anyone (broadcast with the
        model; :func:`recspark.data.prepared.eligible_items`). None: every item.
    counters
        Accumulators the tasks add their users and rows to (:class:`ScoreCounters`).
    """

    payload: bytes
    top_n: int
    users_per_block: int | str = "auto"
    device: str = "auto"
    partitions: int | None = None
    eligible: np.ndarray | None = None
    counters: ScoreCounters | None = None

    def tasks(self, spark: SparkSession) -> int:
        """Scoring tasks at least: ``partitions``, else the session's default parallelism."""
        return self.partitions or spark.sparkContext.defaultParallelism


@dataclass(frozen=True, eq=False)
class TaskInputs:
    """What every scoring task reads, broadcast once: the plan's kernel settings, the item side
    (``payload``), the raw item ids, the broadcast user table (or None) and the eligible mask."""

    payload: bytes
    top_n: int
    users_per_block: int | str
    device: str
    carry: tuple[str, ...]
    item_ids: pa.Array | None
    user_table: UserTable | None
    eligible: np.ndarray | None


def item_side_payload(model: nn.Module, spec: Mapping[str, Any], meta: Mapping[str, Any]) -> bytes:
    """The model's bytes with its user tables cut to one row: executors score user vectors."""
    light = cast(EmbeddingModel, copy.deepcopy(model).cpu())
    light.cut_users()
    return model_bytes(light, _one_user(spec), dict(meta))


def _one_user(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` of the cut model: one user row, dense tables; a blend's parts alike."""
    cut = {**spec, "n_users": 1, "sparse": False}
    if "parts" in spec:
        cut["parts"] = [_one_user(part) for part in spec["parts"]]
    return cut


def recommend_all(
    spark: SparkSession,
    user_factors: DataFrame,
    seen: DataFrame | None,
    plan: ScoringPlan,
    *,
    user_columns: DataFrame | None = None,
    carry: tuple[str, ...] = (),
    item_ids: pa.Array | None = None,
) -> DataFrame:
    """Top-N ``(user_idx, item_idx, rank, score)`` for every row of ``user_factors``.

    The user rows, each user's rated items (one array per user) and ``user_columns`` are
    hash-partitioned by ``user_idx`` into the same partitions and joined without a further
    shuffle: a scoring task receives one row per user, never one row per rating. When the model's
    user table is small enough to broadcast,
    :func:`recspark.serve.rated_files.recommend_rated_files` avoids these shuffles.

    Parameters
    ----------
    spark
        The session; the payload is broadcast through its context once.
    user_factors
        DataFrame ``(user_idx, bias, factors)``: the model's user table, or the part to score.
    seen
        What to exclude: ``(user_idx, items)`` arrays (``prepare``'s ``rated/`` table) or
        ``(user_idx, item_idx)`` pairs, grouped here with :func:`rated_lists`; None excludes
        nothing. Users not in ``user_factors`` are ignored.
    plan
        The model's item side, list length, blocks, device, tasks, eligible items and counters.
    user_columns
        ``(user_idx, ...)``, one row per user (e.g. the raw ``user_id``): its other columns are
        carried into the output after ``user_idx``.
    carry
        Columns of ``user_factors`` itself carried into the output the same way (no join).
    item_ids
        Raw item id of each item index (``item_ids[i]`` for index ``i``): broadcast with the
        model, and the output gains ``item_id`` after ``item_idx``.
    """
    missing = [c for c in (USER_IDX, BIAS, FACTORS) if c not in user_factors.columns]
    if missing:
        raise ValueError(f"user_factors lacks column(s) {missing}; it has {user_factors.columns}")
    # An explicit count is kept by adaptive execution, which would otherwise merge small user
    # tables into one task; equal partitioning on every side makes the joins shuffle-free.
    count = plan.tasks(spark)
    carry = tuple(carry)
    users = user_factors.select(
        F.col(USER_IDX).cast("int").alias(USER_IDX),
        F.col(BIAS).cast("float").alias(BIAS),
        F.col(FACTORS).cast("array<float>").alias(FACTORS),
        *carry,
    ).repartition(count, USER_IDX)
    users = _with_rated_items(users, seen, count)
    if user_columns is not None:
        joined = tuple(c for c in user_columns.columns if c != USER_IDX)
        extra = user_columns.withColumn(USER_IDX, F.col(USER_IDX).cast("int"))
        users = users.join(extra.repartition(count, USER_IDX), USER_IDX)
        carry += joined
    # Sorted, so blocks (and any floating-point blocking effect) do not depend on join order.
    users = users.sortWithinPartitions(USER_IDX).select(USER_IDX, BIAS, FACTORS, ITEMS, *carry)
    return _map_users(spark, users, plan, user_table=None, carry=carry, item_ids=item_ids)


def _with_rated_items(users: DataFrame, seen: DataFrame | None, count: int) -> DataFrame:
    """``users`` (partitioned by user into ``count``) with the ``items`` each rated in ``seen``
    (arrays, or pairs grouped here), null where none; a null column when ``seen`` is None."""
    if seen is None:
        return users.withColumn(ITEMS, F.lit(None).cast("array<int>"))
    if ITEMS not in seen.columns:
        for column in (USER_IDX, ITEM_IDX):
            if column not in seen.columns:
                raise ValueError(f"seen lacks column {column!r}; it has {seen.columns}")
        from recspark.data.prepared import rated_lists  # pydantic: not for the workers

        seen = rated_lists(seen)
    lists = seen.select(
        F.col(USER_IDX).cast("int").alias(USER_IDX),
        F.col(ITEMS).cast("array<int>").alias(ITEMS),
    ).repartition(count, USER_IDX)
    return users.join(lists, USER_IDX, "left")


def _map_users(
    spark: SparkSession,
    users: DataFrame,
    plan: ScoringPlan,
    *,
    user_table: UserTable | None,
    carry: tuple[str, ...],
    item_ids: pa.Array | None,
) -> DataFrame:
    """``users`` (the rows :func:`recommend_batches` reads) scored by one ``mapInArrow``."""
    clash = set(carry) & {BIAS, FACTORS, ITEMS, ITEM_IDX, ITEM_ID, RANK, SCORE}
    if clash:
        raise ValueError(f"cannot carry {sorted(clash)} into the output: the names are taken")
    eligible = None if plan.eligible is None else np.asarray(plan.eligible, dtype=bool)
    inputs = TaskInputs(
        plan.payload,
        plan.top_n,
        plan.users_per_block,
        plan.device,
        carry,
        item_ids,
        user_table,
        eligible,
    )
    shared = spark.sparkContext.broadcast(inputs)
    counters = plan.counters
    schema = output_schema([users.schema[name] for name in carry], item_ids)

    def score(batches: Iterable[pa.RecordBatch]) -> Iterable[pa.RecordBatch]:
        # score_partition is looked up as this module's global when Spark pickles the closure.
        return score_partition(iter(batches), shared.value, counters)

    return users.mapInArrow(score, schema)


def output_schema(carried: list[StructField], item_ids: pa.Array | None) -> StructType:
    """The scoring tasks' rows: ``user_idx``, the ``carried`` columns, ``item_idx``, ``item_id``
    (with ``item_ids``), ``rank``, ``score``."""
    item_id_field = (
        [] if item_ids is None else [StructField(ITEM_ID, from_arrow_type(item_ids.type))]
    )
    return StructType(
        [
            StructField(USER_IDX, IntegerType(), False),
            *carried,
            StructField(ITEM_IDX, IntegerType(), False),
            *item_id_field,
            StructField(RANK, IntegerType(), False),
            StructField(SCORE, FloatType(), False),
        ]
    )


def score_partition(
    batches: Iterator[pa.RecordBatch], inputs: TaskInputs, counters: ScoreCounters | None
) -> Iterator[pa.RecordBatch]:
    """One scoring task: its users' rows in, their top-N rows out (:func:`recommend_batches` on
    the task's device, with as many torch threads as the task has cores)."""
    here = task_device(inputs.device)
    if here.type == "cpu":
        _threads_per_task()
    return recommend_batches(
        batches,
        inputs.payload,
        inputs.top_n,
        inputs.users_per_block,
        str(here),
        carry=inputs.carry,
        item_ids=inputs.item_ids,
        counters=counters,
        users=inputs.user_table,
        eligible=inputs.eligible,
    )


class WorkerWarmup:
    """Start every core's Python worker and import the scoring code in it, in the background.

    A cold scoring job pays, before its first block, for Spark starting one Python worker per
    core and each worker importing torch and this module (seconds per worker, all at once on a
    busy machine). Spark keeps its Python workers for later tasks
    (``spark.python.worker.reuse``), so a tiny job that does only that, started when a command
    begins, pays it while the driver loads the model and plans, and the scoring tasks find warm
    workers. Best effort: the job runs in a daemon thread, its failure is logged, never raised
    (the real job would raise the same error with its own context).

    ``result()`` waits for the job and gives what each task saw: ``(pid, kernel imported)``.
    """

    def __init__(self, spark: SparkSession, tasks: int | None = None):
        import threading

        self._spark = spark
        self._tasks = tasks or spark.sparkContext.defaultParallelism
        self._seen: list[tuple[int, bool]] = []
        self._thread = threading.Thread(target=self._run, name="recspark-warm-workers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            context = self._spark.sparkContext
            context.setJobDescription("recspark: start and warm Python workers")
            # An RDD job, not a DataFrame one: in a fresh JVM it is submitted at once, while
            # planning a query would take longer than the driver's own work it should overlap.
            rows = (
                context.parallelize(range(self._tasks), self._tasks)
                .mapPartitions(_warm_worker)
                .collect()  # one row per task: bounded by the cores, not the data
            )
            self._seen = [(int(pid), bool(ready)) for pid, ready in rows]
        except Exception as exc:  # best effort, see the class docstring
            log.warning("warming the Python workers failed (scoring goes on cold): %s", exc)

    def result(self, timeout: float | None = None) -> list[tuple[int, bool]]:
        self._thread.join(timeout)
        return list(self._seen)


def _warm_worker(rows: Iterable[int]) -> Iterator[tuple[int, bool]]:
    """mapPartitions body of :class:`WorkerWarmup`: unpickling it imported this module (and
    torch); one ``(pid, kernel imported)`` per task."""
    import sys

    del rows  # one task per element: the element itself tells nothing
    yield os.getpid(), "recspark.serve.kernel" in sys.modules


def task_device(setting: str) -> torch.device:
    """This scoring task's device: the GPU Spark assigned to the task (its ``gpu`` resource)
    under ``train.device: auto``/``cuda``, so several GPUs per executor each score their own
    tasks; the CPU otherwise."""
    context = TaskContext.get()
    resources = context.resources() if context is not None else {}
    gpu = resources.get("gpu")
    return device_for_work(setting, gpu_addresses=list(gpu.addresses) if gpu is not None else None)


def _threads_per_task() -> None:
    """Torch threads = the task's cores (``spark.task.cpus``), not every core of the machine:
    concurrent tasks would otherwise oversubscribe the executor's CPUs."""
    context = TaskContext.get()
    if context is not None:
        torch.set_num_threads(max(1, context.cpus()))


def predict_partition(
    batches: Iterator[pd.DataFrame], model_payload: bytes, device_setting: str = "auto"
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: ``(user_idx, item_idx, ...)`` rows in, the same plus ``prediction`` out."""
    kernel = kernel_for(model_payload, task_device(device_setting))
    model, device = kernel.model, kernel.device
    for batch in batches:
        with torch.no_grad():
            users = torch.as_tensor(batch[USER_IDX].to_numpy(), dtype=torch.long, device=device)
            items = torch.as_tensor(batch[ITEM_IDX].to_numpy(), dtype=torch.long, device=device)
            model.check_indices(users, items)
            prediction = model(users, items).float().cpu().numpy()
        yield batch.assign(**{PREDICTION: prediction})


def predict(
    spark: SparkSession, pairs: DataFrame, payload: bytes, device: str = "auto"
) -> DataFrame:
    """``pairs`` with a float ``prediction`` column; ``payload`` is the whole model's bytes."""
    shared = spark.sparkContext.broadcast(payload)
    # A new StructType: ``schema.add`` would mutate the input frame's cached schema in place.
    schema = StructType([*pairs.schema.fields, StructField(PREDICTION, FloatType())])

    def run(batches):
        return predict_partition(batches, shared.value, device)

    return pairs.mapInPandas(run, schema)
