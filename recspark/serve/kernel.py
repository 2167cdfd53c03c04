"""The top-N kernel: a blocked matrix product and an exact top-k per block, in torch alone.

Nothing here imports pyspark: the kernel runs inside Spark's scoring tasks
(:mod:`recspark.serve.scoring` is the glue), and the same code runs in ``benchmarks/`` on a GPU
machine that has torch and pyarrow but no Java.

Per block of ``users_per_block`` users the kernel computes the full ``users x items`` score block
(:mod:`recspark.serve.ranking_keys` says how, and what it costs per model kind), masks the rated
items, and the items no user may be offered (too few training ratings,
``score.min_item_ratings``), with ``-inf`` and keeps the best ``top_n``
(:func:`~recspark.serve.topk.top_k`). With the default ``hidden: [64]`` scoring an ``mlp`` takes
about 40 times as long as a 32-factor ``dot_bias`` over the same users and items (measured on CPU
with the 600/411-wide embeddings fastai's rule gives 100k users x 20k items: ~31 s against
~0.75 s per 1,000 users). Budget for it, or score it on GPU executors (``train.device: auto``).
:func:`recommend_batches` runs it over Arrow batches of users (a scoring task's input).

Ties are broken by the lower item index, so re-running with the same model gives identical lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from recspark.core.constants import BIAS, FACTORS, ITEM_ID, ITEM_IDX, ITEMS, RANK, SCORE, USER_IDX
from recspark.core.errors import BadInputError
from recspark.core.torch_utils import resolve_device
from recspark.model.base import EmbeddingModel
from recspark.model.saving import model_from_bytes
from recspark.serve.ranking_keys import MLP_PAIRS_PER_CHUNK, DotKeys, SplitMLP, table
from recspark.serve.topk import Finish, top_k


class _Adder(Protocol):
    def add(self, value: int, /) -> None: ...


class Counters(Protocol):
    """What :func:`recommend_batches` adds its users and rows to (Spark accumulators in a job)."""

    @property
    def users(self) -> _Adder: ...

    @property
    def rows(self) -> _Adder: ...


_KERNEL_CACHE: dict[tuple[str, str], ScoringKernel] = {}


#: ``users_per_block: auto`` on the CPU: the fastest of 64-512 users per block at 20k items here.
CPU_USERS_PER_BLOCK = 128
#: ``auto`` on a GPU: the block's ``users x items`` float32 scores, and about twice that again of
#: top-k workspace, may use this share of the device's free memory, within these bounds.
GPU_BLOCK_MEMORY_SHARE = 0.25
GPU_USERS_PER_BLOCK = (128, 16384)


def users_per_block(setting: int | str, device: torch.device, n_items: int) -> int:
    """Users per matrix product: ``setting`` itself, or for ``auto`` a size fit for ``device``.

    On a GPU a block of 128 users leaves it mostly idle (launch and copy overheads dominate: 10x
    slower than 8,192 per block at 50k items on an H200), so ``auto`` takes as many users as a
    quarter of the free memory holds; on the CPU it keeps the block that measured fastest there.
    """
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return CPU_USERS_PER_BLOCK
    free, _ = torch.cuda.mem_get_info(device)
    per_user = max(1, n_items) * 4 * 3
    low, high = GPU_USERS_PER_BLOCK
    return int(min(high, max(low, free * GPU_BLOCK_MEMORY_SHARE // per_user)))


class ScoringKernel:
    """The item side of a model on one device, scoring blocks of users given by their vectors.

    Built once per Python worker from the broadcast bytes (see :func:`kernel_for`).
    """

    def __init__(self, model: EmbeddingModel, device: torch.device):
        self.model = model
        self.device = device
        self.n_items = model.n_items
        self.items = torch.arange(self.n_items, device=device)
        self._mlp = SplitMLP.build(model) if hasattr(model, "layers") else None
        self._dot = None if hasattr(model, "layers") else DotKeys.build(model)

    @torch.no_grad()
    def ranking(
        self, user_vectors: torch.Tensor, user_bias: torch.Tensor
    ) -> tuple[torch.Tensor, Finish | None]:
        """``(keys, finish)``: the block to rank and what turns its values into scores."""
        if self._mlp is not None:
            return self._mlp(user_vectors), None
        if hasattr(self.model, "layers"):
            # A network whose first layer could not be split: run it in bounded chunks of users.
            step = max(1, MLP_PAIRS_PER_CHUNK // max(1, self.n_items))
            return torch.cat(
                [
                    self.model.score_vectors(user_vectors[i : i + step], None, self.items).float()
                    for i in range(0, len(user_vectors), step)
                ]
            ), None
        if self._dot is not None:
            return self._dot.keys(user_vectors), self._dot.finisher(user_bias)
        return self.model.score_vectors(user_vectors, user_bias, self.items).float(), None

    @torch.no_grad()
    def scores(self, user_vectors: torch.Tensor, user_bias: torch.Tensor) -> torch.Tensor:
        """The ``users x items`` score block."""
        keys, finish = self.ranking(user_vectors, user_bias)
        return keys if finish is None else finish(keys, torch.arange(len(keys), device=keys.device))

    @torch.no_grad()
    def block(
        self,
        user_vectors: np.ndarray,
        user_bias: np.ndarray,
        top_n: int,
        seen_rows: np.ndarray | None = None,
        seen_items: np.ndarray | None = None,
        ineligible: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-N ``(item_idx, score, valid)`` arrays, each ``users x top_n``, for one block.

        ``seen_rows[j]`` (a row of this block) has rated ``seen_items[j]``; those are excluded.
        ``ineligible`` (from :meth:`ineligible_items`) are excluded for every row, the same way:
        a row with fewer than ``top_n`` items left has ``valid`` False in the slots past them.
        """
        vectors = torch.as_tensor(user_vectors, device=self.device)
        bias = torch.as_tensor(user_bias, device=self.device)
        keys, finish = self.ranking(vectors, bias)
        if seen_rows is not None and len(seen_rows):
            keys[
                torch.as_tensor(seen_rows, dtype=torch.long, device=self.device),
                torch.as_tensor(seen_items, dtype=torch.long, device=self.device),
            ] = -torch.inf
        if ineligible is not None and len(ineligible):
            keys[:, ineligible] = -torch.inf
        index, value, valid = top_k(keys, top_n, finish)
        return index.cpu().numpy(), value.cpu().numpy(), valid.cpu().numpy()

    def ineligible_items(self, eligible: np.ndarray | None) -> torch.Tensor | None:
        """The item indices ``eligible`` (one bool per item, or None: all) rules out, on the
        kernel's device, for :meth:`block`; None when it rules out none.

        Raises
        ------
        BadInputError
            When ``eligible`` does not have one entry per item of the model.
        """
        if eligible is None:
            return None
        eligible = np.asarray(eligible, dtype=bool)
        if eligible.shape != (self.n_items,):
            raise BadInputError(
                f"the eligible-items mask has shape {eligible.shape} for a model of {self.n_items} "
                "items: it was not computed on this model's prepared run"
            )
        excluded = np.flatnonzero(~eligible)
        if not len(excluded):
            return None
        return torch.as_tensor(excluded, dtype=torch.long, device=self.device)


def kernel_for(model_payload: bytes, device: torch.device) -> ScoringKernel:
    """The worker's kernel for this payload, rebuilt only when the payload or device changes."""
    key = (hashlib.sha1(model_payload).hexdigest(), str(device))
    if key not in _KERNEL_CACHE:
        model, _, _ = model_from_bytes(model_payload, device)
        _KERNEL_CACHE.clear()
        _KERNEL_CACHE[key] = ScoringKernel(model, device)
    return _KERNEL_CACHE[key]


def _fixed_width(column: pa.Array, rows: int) -> np.ndarray:
    """A ``list<float>`` column of equal-length rows as a ``rows x width`` float32 matrix."""
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if rows and (column.null_count or (lengths != lengths[0]).any()):
        raise BadInputError(
            "user factor rows differ in length or are missing: the user_factors table is not one "
            "model's; re-run `recspark train`"
        )
    width = int(lengths[0]) if rows else 0
    # A copy: Arrow's buffers are read-only, and torch wants memory it may write.
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(rows, width)


def _rated_csr(column: pa.Array, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``list<int>`` column (null: nothing rated) as CSR ``(starts, items)``; no per-row loop."""
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    starts = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    items = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64)
    return starts, items


@dataclass(frozen=True)
class UserTable:
    """A model's user side as arrays, row ``i`` for user index ``i``: what a scoring task looks a
    user's vector up in when the table is broadcast instead of joined to the users' rows."""

    factors: np.ndarray  # users x width, float32: the ``factors`` column of ``user_factors``
    bias: np.ndarray  # users, float32: the ``bias`` column (zeros for a model without biases)

    @classmethod
    def of(cls, model: nn.Module) -> UserTable:
        """The rows :func:`recspark.model.saving.write_factor_tables` writes to ``user_factors``."""
        factors = table(model, "user_factors").weight.detach().cpu().float().numpy()
        bias = getattr(model, "user_bias", None)
        return cls(
            np.ascontiguousarray(factors),
            bias.weight.detach().cpu().float().numpy().reshape(-1).copy()
            if bias is not None
            else np.zeros(len(factors), dtype=np.float32),
        )

    def rows(self, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(factors, bias)`` of the given users.

        Raises
        ------
        ValueError
            When an index is not a row of the table (the users are not this model's).
        """
        if len(user_idx) and (user_idx.min() < 0 or user_idx.max() >= len(self.bias)):
            raise BadInputError(
                f"user index {int(user_idx.max())} is outside the model's {len(self.bias)} users: "
                "the users to score are not this model's (re-run `recspark train`)"
            )
        return self.factors[user_idx], self.bias[user_idx]


def recommend_batches(
    batches: Iterator[pa.RecordBatch],
    model_payload: bytes,
    top_n: int,
    block_setting: int | str,
    device_setting: str = "auto",
    *,
    carry: tuple[str, ...] = (),
    item_ids: pa.Array | None = None,
    counters: Counters | None = None,
    users: UserTable | None = None,
    eligible: np.ndarray | None = None,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: one row per user in, its top-N rows out.

    Each input row is ``(user_idx, bias, factors, items, *carry)``: the user's row of the model's
    user table and every item it rated (``items``, null when none), so a batch is scored on its
    own, in blocks of ``block_setting`` users (``auto``: :func:`users_per_block`), without holding
    the partition. With ``users``
    (the broadcast user table) a row is ``(user_idx, items, *carry)`` and the user's ``bias`` and
    ``factors`` are looked up in it. The Arrow list columns become the block's matrix and its
    sparse mask directly. Output: ``user_idx``, the
    ``carry`` columns, ``item_idx``, ``item_id`` (when ``item_ids``, the raw id of each index, is
    given), ``rank`` (1 = best), ``score``; a user with fewer than ``top_n`` unrated items gets
    them all. ``eligible`` (one bool per item index, broadcast with the model; None: every item)
    leaves the other items out of every list, as a rated item is left out of its user's.
    """
    kernel = kernel_for(model_payload, resolve_device(device_setting))
    block = users_per_block(block_setting, kernel.device, kernel.n_items)
    ineligible = kernel.ineligible_items(eligible)
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        user_idx = batch.column(USER_IDX).to_numpy(zero_copy_only=False).astype(np.int32)
        if users is not None:
            vectors, bias = users.rows(user_idx)
        else:
            bias = pc.fill_null(batch.column(BIAS), 0.0).to_numpy(zero_copy_only=False)
            bias = bias.astype(np.float32)
            vectors = _fixed_width(batch.column(FACTORS), n)
        starts, rated = _rated_csr(batch.column(ITEMS), n)
        index, score, valid = _top_n_rows(
            kernel, vectors, bias, (starts, rated), top_n=top_n, block=block, ineligible=ineligible
        )
        # One output batch per input batch: each batch crossing to the JVM costs a fixed
        # overhead there, so 128-user blocks are gathered here first.
        columns = index.shape[1]
        keep = valid.reshape(-1)
        owner = np.repeat(np.arange(n), columns)[keep]
        out = {USER_IDX: pa.array(user_idx[owner])}
        for name in carry:
            out[name] = batch.column(name).take(pa.array(owner))
        chosen = index.reshape(-1)[keep].astype(np.int32)
        out[ITEM_IDX] = pa.array(chosen)
        if item_ids is not None:
            out[ITEM_ID] = item_ids.take(pa.array(chosen))
        out[RANK] = pa.array(np.tile(np.arange(1, columns + 1, dtype=np.int32), n)[keep])
        out[SCORE] = pa.array(score.reshape(-1)[keep].astype(np.float32))
        if counters is not None:
            counters.users.add(int(valid[:, 0].sum()) if columns else 0)
            counters.rows.add(len(chosen))
        yield pa.RecordBatch.from_pydict(out)


def _top_n_rows(
    kernel: ScoringKernel,
    vectors: np.ndarray,
    bias: np.ndarray,
    rated: tuple[np.ndarray, np.ndarray],
    *,
    top_n: int,
    block: int,
    ineligible: torch.Tensor | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(item_idx, score, valid)``, each ``rows x min(top_n, items)``, for every row of
    ``vectors``, scored ``block`` rows at a time; ``rated`` is the rows' CSR ``(starts, items)``."""
    starts, items = rated
    parts = []
    for start in range(0, len(vectors), block):
        stop = min(start + block, len(vectors))
        low, high = starts[start], starts[stop]
        seen_rows = np.repeat(np.arange(stop - start), np.diff(starts[start : stop + 1]))
        parts.append(
            kernel.block(
                vectors[start:stop], bias[start:stop], top_n, seen_rows, items[low:high], ineligible
            )
        )
    index, score, valid = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    return index, score, valid
