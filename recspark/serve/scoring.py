"""The Spark side of scoring: the kernel (:mod:`recspark.serve.kernel`) run over every user.

Executors receive the item side of the model once, as a broadcast (item factors and biases, or the
MLP's weights), with the mask of the items that may be recommended at all (one bool per item:
enough training ratings, ``score.min_item_ratings``). Each scoring task receives one row per user with every item it rated as one array
(``prepare`` writes these rows once per run as ``rated/``) and reads them as Arrow buffers
(``mapInArrow``): the list columns are the block's sparse mask (and matrix) without a per-row loop.
The users' vectors come one of two ways: with a user table small enough to broadcast
(:func:`recommend_listed`), the table rides the broadcast and the tasks read ``rated/`` as it
lies, with no shuffle at all; otherwise (:func:`recommend_all`) the rows of the ``user_factors``
table are joined by user with the rated arrays (one shuffle of one row per user). Candidate
user x item pairs never become rows, and no rating crosses a shuffle at scoring time. Blocks are
formed from user-sorted partitions, so re-running with the same model gives identical lists.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from pyspark import Accumulator, TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_type, to_arrow_type
from pyspark.sql.types import FloatType, IntegerType, StructField, StructType
from torch import nn

from recspark.core.constants import (
    BIAS,
    FACTORS,
    ITEM_ID,
    ITEM_IDX,
    ITEMS,
    MODEL_VERSION,
    PREDICTION,
    RANK,
    SCORE,
    USER_ID,
    USER_IDX,
)
from recspark.core.storage import parquet_rows
from recspark.core.torch_utils import device_for_work
from recspark.data.prepared import RATED, lists_every_user, rated_by_user, rated_lists
from recspark.model.saving import model_bytes, raw_ids
from recspark.serve.kernel import UserTable, kernel_for, recommend_batches

#: Fault-injection hook for the kill test: each scoring task sleeps this many seconds after it has
#: handed its first block to Spark's writer, so a test can kill the job while it is writing.
PAUSE_ENV = "RECSPARK_SCORE_PAUSE_SECONDS"
#: With the pause, a local file each pausing task creates first: the test then knows the write job
#: is under way (Spark may hold the rows back to sort them, so no output file need exist yet).
PAUSE_MARKER_ENV = "RECSPARK_SCORE_PAUSE_MARKER"

log = logging.getLogger(__name__)


@dataclass
class ScoreCounters:
    """Users given a list and rows produced, added up by the scoring tasks (Spark accumulators:
    a successful task's updates count once, so they are exact once the writing action ends)."""

    users: Accumulator
    rows: Accumulator

    @classmethod
    def create(cls, spark: SparkSession) -> ScoreCounters:
        return cls(spark.sparkContext.accumulator(0), spark.sparkContext.accumulator(0))


def item_side_payload(model: nn.Module, spec: dict, meta: dict) -> bytes:
    """The model's bytes with its user tables cut to one row: executors score user vectors."""
    light = copy.deepcopy(model).cpu()
    light.cut_users()
    return model_bytes(light, _one_user(spec), meta)


def _one_user(spec: dict) -> dict:
    """``spec`` of the cut model: one user row, dense tables; a blend's parts alike."""
    cut = {**spec, "n_users": 1, "sparse": False}
    if "parts" in spec:
        cut["parts"] = [_one_user(part) for part in spec["parts"]]
    return cut


def recommend_all(
    spark: SparkSession,
    user_factors: DataFrame,
    seen: DataFrame | None,
    payload: bytes,
    top_n: int,
    users_per_block: int | str = "auto",
    device: str = "auto",
    partitions: int | None = None,
    user_columns: DataFrame | None = None,
    carry: tuple[str, ...] = (),
    item_ids: pa.Array | None = None,
    counters: ScoreCounters | None = None,
    eligible: np.ndarray | None = None,
) -> DataFrame:
    """Top-N ``(user_idx, item_idx, rank, score)`` for every row of ``user_factors``.

    The user rows, each user's rated items (one array per user) and ``user_columns`` are
    hash-partitioned by ``user_idx`` into the same partitions and joined without a further
    shuffle: a scoring task receives one row per user, never one row per rating. When the model's
    user table is small enough to broadcast, :func:`recommend_listed` avoids these shuffles.

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
    user_columns
        ``(user_idx, ...)``, one row per user (e.g. the raw ``user_id``): its other columns are
        carried into the output after ``user_idx``.
    carry
        Columns of ``user_factors`` itself carried into the output the same way (no join).
    item_ids
        Raw item id of each item index (``item_ids[i]`` for index ``i``): broadcast with the
        model, and the output gains ``item_id`` after ``item_idx``.
    counters
        Accumulators the tasks add their users and rows to (:class:`ScoreCounters`).
    eligible
        One bool per item index: only these items are recommended, to anyone (broadcast with the
        model; :func:`recspark.data.prepared.eligible_items`). None: every item.
    """
    missing = [c for c in (USER_IDX, BIAS, FACTORS) if c not in user_factors.columns]
    if missing:
        raise ValueError(f"user_factors lacks column(s) {missing}; it has {user_factors.columns}")
    # An explicit count is kept by adaptive execution, which would otherwise merge small user
    # tables into one task; equal partitioning on every side makes the joins shuffle-free.
    count = partitions or spark.sparkContext.defaultParallelism
    users = user_factors.select(
        F.col(USER_IDX).cast("int").alias(USER_IDX),
        F.col(BIAS).cast("float").alias(BIAS),
        F.col(FACTORS).cast("array<float>").alias(FACTORS),
        *carry,
    ).repartition(count, USER_IDX)
    if seen is not None:
        if ITEMS not in seen.columns:
            for column in (USER_IDX, ITEM_IDX):
                if column not in seen.columns:
                    raise ValueError(f"seen lacks column {column!r}; it has {seen.columns}")
            seen = rated_lists(seen)
        lists = seen.select(
            F.col(USER_IDX).cast("int").alias(USER_IDX), F.col(ITEMS).cast("array<int>").alias(ITEMS)
        ).repartition(count, USER_IDX)
        users = users.join(lists, USER_IDX, "left")
    else:
        users = users.withColumn(ITEMS, F.lit(None).cast("array<int>"))
    carry = tuple(carry)
    if user_columns is not None:
        joined = tuple(c for c in user_columns.columns if c != USER_IDX)
        extra = user_columns.withColumn(USER_IDX, F.col(USER_IDX).cast("int"))
        users = users.join(extra.repartition(count, USER_IDX), USER_IDX)
        carry += joined
    # Sorted, so blocks (and any floating-point blocking effect) do not depend on join order.
    users = users.sortWithinPartitions(USER_IDX).select(USER_IDX, BIAS, FACTORS, ITEMS, *carry)
    return _map_users(spark, users, payload, None, top_n, users_per_block, device, carry, item_ids,
                      counters, eligible)


def recommend_listed(
    spark: SparkSession,
    users: DataFrame,
    user_table: UserTable,
    payload: bytes,
    top_n: int,
    users_per_block: int | str = "auto",
    device: str = "auto",
    partitions: int | None = None,
    carry: tuple[str, ...] = (),
    item_ids: pa.Array | None = None,
    counters: ScoreCounters | None = None,
    eligible: np.ndarray | None = None,
) -> DataFrame:
    """Top-N ``(user_idx, *carry, item_idx, rank, score)`` for every row of ``users``, no shuffle.

    ``users`` is ``(user_idx, items, *carry)``, one row per user (``prepare``'s ``rated/`` table;
    ``items`` null or empty excludes nothing), read as it lies: the model's user table is
    broadcast with the item side, and each task looks its users' vectors up in it. Use it when the
    user table fits the executors' Python workers (``score.broadcast_users_mb``);
    :func:`recommend_all` joins the table instead. Other parameters as in :func:`recommend_all`;
    ``partitions``: when ``users`` is read as fewer partitions, it is repartitioned by user (one
    shuffle) so every core has a task.
    """
    missing = [c for c in (USER_IDX, ITEMS, *carry) if c not in users.columns]
    if missing:
        raise ValueError(f"users lacks column(s) {missing}; it has {users.columns}")
    count = partitions or spark.sparkContext.defaultParallelism
    rows = users.select(
        F.col(USER_IDX).cast("int").alias(USER_IDX),
        F.col(ITEMS).cast("array<int>").alias(ITEMS),
        *carry,
    )
    if rows.rdd.getNumPartitions() < count:
        rows = rows.repartition(count, USER_IDX).sortWithinPartitions(USER_IDX)
    return _map_users(spark, rows, payload, user_table, top_n, users_per_block, device,
                      tuple(carry), item_ids, counters, eligible)


def _map_users(
    spark: SparkSession,
    users: DataFrame,
    payload: bytes,
    user_table: UserTable | None,
    top_n: int,
    users_per_block: int | str,
    device: str,
    carry: tuple[str, ...],
    item_ids: pa.Array | None,
    counters: ScoreCounters | None,
    eligible: np.ndarray | None = None,
) -> DataFrame:
    """``users`` (the rows :func:`recommend_batches` reads) scored by one ``mapInArrow``."""
    clash = set(carry) & {BIAS, FACTORS, ITEMS, ITEM_IDX, ITEM_ID, RANK, SCORE}
    if clash:
        raise ValueError(f"cannot carry {sorted(clash)} into the output: the names are taken")
    if eligible is not None:
        eligible = np.asarray(eligible, dtype=bool)
    shared = spark.sparkContext.broadcast((payload, item_ids, user_table, eligible))
    carried = [users.schema[name] for name in carry]
    schema = StructType(
        [
            StructField(USER_IDX, IntegerType(), False),
            *carried,
            StructField(ITEM_IDX, IntegerType(), False),
            *([StructField(ITEM_ID, from_arrow_type(item_ids.type))] if item_ids is not None else []),
            StructField(RANK, IntegerType(), False),
            StructField(SCORE, FloatType(), False),
        ]
    )

    def score(batches):
        model_bytes_, ids, table, candidates = shared.value
        here = task_device(device)
        if here.type == "cpu":
            _threads_per_task()
        scored = recommend_batches(
            batches, model_bytes_, top_n, users_per_block, str(here), carry, ids, counters, table,
            candidates,
        )
        for position, batch in enumerate(scored):
            yield batch
            if position == 0:
                _pause_for_fault_injection()

    return users.mapInArrow(score, schema)


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
        schema = StructType(
            [StructField("pid", IntegerType(), False), StructField("ready", IntegerType(), False)]
        )
        try:
            self._spark.sparkContext.setJobDescription("recspark: start and warm Python workers")
            rows = (
                self._spark.range(0, self._tasks, 1, self._tasks)
                .mapInArrow(_warm_worker, schema)
                .collect()  # one row per task: bounded by the cores, not the data
            )
            self._seen = [(row.pid, bool(row.ready)) for row in rows]
        except Exception as exc:  # best effort, see the class docstring
            log.warning("warming the Python workers failed (scoring goes on cold): %s", exc)

    def result(self, timeout: float | None = None) -> list[tuple[int, bool]]:
        self._thread.join(timeout)
        return list(self._seen)


def _warm_worker(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body of :class:`WorkerWarmup`: unpickling it imported this module (and torch)."""
    import sys

    for batch in batches:
        yield pa.RecordBatch.from_pydict(
            {
                "pid": pa.array([os.getpid()] * batch.num_rows, pa.int32()),
                "ready": pa.array(
                    [int("recspark.serve.kernel" in sys.modules)] * batch.num_rows, pa.int32()
                ),
            }
        )


def _pause_for_fault_injection() -> None:
    seconds = float(os.environ.get(PAUSE_ENV) or 0)
    if seconds > 0:
        marker = os.environ.get(PAUSE_MARKER_ENV)
        if marker:
            with open(marker, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()}\n")
        time.sleep(seconds)


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


def predict(spark: SparkSession, pairs: DataFrame, payload: bytes, device: str = "auto") -> DataFrame:
    """``pairs`` with a float ``prediction`` column; ``payload`` is the whole model's bytes."""
    shared = spark.sparkContext.broadcast(payload)
    # A new StructType: ``schema.add`` would mutate the input frame's cached schema in place.
    schema = StructType([*pairs.schema.fields, StructField(PREDICTION, FloatType())])

    def run(batches):
        return predict_partition(batches, shared.value, device)

    return pairs.mapInPandas(run, schema)


def recommendation_table(
    spark: SparkSession,
    model_users: DataFrame | UserTable,
    prepared: Path,
    exclude_seen: bool,
    payload: bytes,
    model_version: str,
    top_n: int,
    users_per_block: int | str = "auto",
    device: str = "auto",
    partitions: int | None = None,
    counters: ScoreCounters | None = None,
    eligible: np.ndarray | None = None,
) -> DataFrame:
    """The published table's rows: ``user_id``, ``item_id`` (raw, input types), rank, score, version.

    ``model_users`` is the model's user table, as arrays broadcast to the tasks (a
    :class:`UserTable`: the users to score are then ``prepare``'s ``rated/`` table as it lies,
    which must list every user, see :func:`lists_every_user`) or as the ``user_factors``
    DataFrame, joined by user with the rated items. No join after scoring: the raw user id
    travels with the user's row (from ``rated/``, or from ``user_factors`` where ``train`` wrote
    it; an older table without it is joined with the prepared ``user_index`` before scoring), and
    the raw item ids are broadcast with the model (one per item, like the item factors), and so
    is ``eligible``, the items that may be listed (:func:`recommend_all`).
    """
    index = prepared / "item_index"
    id_type = spark.read.parquet(str(index)).schema[ITEM_ID].dataType  # as Spark reads it
    item_ids = raw_ids(index, ITEM_ID, ITEM_IDX, parquet_rows(index)).cast(to_arrow_type(id_type))
    if isinstance(model_users, UserTable):
        listed = spark.read.parquet(str(prepared / RATED))
        if not exclude_seen:
            listed = listed.withColumn(ITEMS, F.lit(None).cast("array<int>"))
        recommendations = recommend_listed(
            spark, listed, model_users, payload, top_n, users_per_block, device, partitions,
            carry=(USER_ID,), item_ids=item_ids, counters=counters, eligible=eligible,
        )
    else:
        carried = USER_ID in model_users.columns
        recommendations = recommend_all(
            spark, model_users, rated_by_user(spark, prepared) if exclude_seen else None, payload,
            top_n, users_per_block, device, partitions,
            user_columns=None if carried else spark.read.parquet(str(prepared / "user_index")).select(
                USER_IDX, USER_ID
            ),
            carry=(USER_ID,) if carried else (),
            item_ids=item_ids,
            counters=counters,
            eligible=eligible,
        )
    return recommendations.select(
        USER_ID,
        ITEM_ID,
        F.col(RANK).cast("int").alias(RANK),
        F.col(SCORE).cast("float").alias(SCORE),
        F.lit(model_version).alias(MODEL_VERSION),
    )


def model_users(
    spark: SparkSession, model, folder: Path, prepared: Path, limit_mb: float
) -> DataFrame | UserTable:
    """The model's user table as :func:`recommendation_table` takes it: broadcast arrays when they
    fit ``limit_mb`` and ``rated/`` lists every user, else the ``user_factors`` DataFrame."""
    weights = model.user_factors.weight
    size = (weights.numel() + len(weights)) * 4  # factors and one bias per user, float32
    if size <= limit_mb * 2**20 and lists_every_user(prepared, len(weights)):
        return UserTable.of(model)
    log.info(
        "joining the user table (%.1f MiB; score.broadcast_users_mb=%s) with %s",
        size / 2**20, limit_mb, prepared / RATED,
    )
    return spark.read.parquet(str(folder / "user_factors"))
