"""The top-N kernel: a blocked matrix product and an exact top-k per block, in torch alone.

Nothing here imports pyspark: the kernel runs inside Spark's scoring tasks
(:mod:`recspark.serve.scoring` is the glue), and the same code runs in ``benchmarks/`` on a GPU
machine that has torch and pyarrow but no Java.

Per block of ``users_per_block`` users the kernel computes the full ``users x items`` score block,
masks the rated items, and the items no user may be offered (too few training ratings,
``score.min_item_ratings``), with ``-inf`` and keeps the best ``top_n``. Cost per block of ``u`` users over
``i`` items:

- ``dot`` / ``dot_bias``: one ``u x f`` by ``f x i`` matrix product (``u * i * f`` multiply-adds)
  and, for ``dot_bias``, one in-place addition of the item biases. The user bias and the sigmoid
  do not change the order within a user's row, so they are applied only to each user's ``k + 1``
  candidates (see :class:`_DotKeys`).
- ``mlp``: the network runs over every (user, item) pair. The first layer acts on the concatenated
  embeddings, so it splits into a user part (``u x h1``, per block) and an item part (``i x h1``,
  once per worker); each pair then costs ``h1`` additions and the remaining layers
  (``h1*h2 + ... + h_last`` multiply-adds), in chunks that keep ``pairs x h1`` floats near
  :data:`MLP_PAIRS_PER_CHUNK`. Each pair still passes through a ``users x items x h1`` tensor
  rather than one GEMM, so with the default ``hidden: [64]`` scoring an ``mlp`` takes about 40
  times as long as a 32-factor ``dot_bias`` over the same users and items (measured on CPU with
  the 600/411-wide embeddings fastai's rule gives 100k users x 20k items: ~31 s against ~0.75 s
  per 1,000 users). Budget for it, or score it on GPU executors (``train.device: auto``).

Ties are broken by the lower item index, so re-running with the same model gives identical lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
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
from recspark.model.base import scale_to_range
from recspark.model.saving import model_from_bytes


class _Adder(Protocol):
    def add(self, value: int) -> None: ...


class Counters(Protocol):
    """What :func:`recommend_batches` adds its users and rows to (Spark accumulators in a job)."""

    users: _Adder
    rows: _Adder


#: (user, item) pairs per chunk when the MLP runs over a block; bounds memory to ~pairs x h1 floats.
MLP_PAIRS_PER_CHUNK = 1 << 18

_KERNEL_CACHE: dict[tuple[str, str], ScoringKernel] = {}


Finish = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


#: Columns per chunk of :func:`best_columns`' first pass.
CHUNK = 64


def best_columns(scores: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, count, dim=1)``'s values, and columns holding them, in two cheap passes.

    A full ``topk`` over every column of a wide block costs about as much as the matrix product
    that made it. Here the first :data:`CHUNK`-column chunks of each row are reduced to their
    maxima (one vectorised pass), the ``count`` chunks with the highest maxima are gathered with
    the leftover columns past the last whole chunk, and ``topk`` runs over those
    ``count * CHUNK`` candidates only. Exact: a column outside the chosen chunks is at most the
    lowest chosen maximum, so at least ``count`` candidates are at least as high; the values are
    ``topk``'s, and among equal values at the cut the column may differ, which :func:`top_k`
    resolves by index.
    """
    rows, columns = scores.shape
    whole = columns - columns % CHUNK
    chunks = whole // CHUNK
    if chunks <= count:
        return scores.topk(count, dim=1)
    maxima = scores[:, :whole].view(rows, chunks, CHUNK).amax(dim=2)
    chosen = maxima.topk(count, dim=1).indices
    offsets = torch.arange(CHUNK, device=scores.device)
    candidates = (chosen[:, :, None] * CHUNK + offsets).reshape(rows, -1)
    if whole < columns:
        rest = torch.arange(whole, columns, device=scores.device).expand(rows, -1)
        candidates = torch.cat([candidates, rest], dim=1)
    values, position = scores.gather(1, candidates).topk(count, dim=1)
    return values, candidates.gather(1, position)


def top_k(
    scores: torch.Tensor, k: int, finish: Finish | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best ``k`` columns of each row, ties broken by the lower column index.

    ``-inf`` marks excluded entries. One pass over the block (:func:`best_columns`) finds the
    candidates; only rows where equal scores straddle the cut (rare for continuous scores, and
    rows with fewer than ``k + 1`` eligible columns) are re-ranked exactly with a stable sort of
    the whole row.

    Parameters
    ----------
    scores
        ``rows x columns`` float tensor: the scores, or ranking keys that ``finish`` turns into
        the scores.
    k
        How many columns to keep per row; more than ``columns`` keeps them all.
    finish
        ``finish(values, rows) -> scores`` for values taken from the given rows of ``scores``: a
        transform that never decreases within a row and keeps ``-inf``, so it can be applied to
        the ``k + 1`` candidates only instead of to the whole block. Ties and order are decided on
        the finished scores, so the result is the same as ranking the finished block.

    Returns
    -------
    (indices, values, valid)
        Each ``rows x min(k, columns)``, best first. ``valid`` is False where a row had fewer than
        ``k`` eligible (finite) columns; those slots hold ``-inf``.

    Raises
    ------
    FloatingPointError
        When a row's best scores include NaN (the model produced NaN).
    """
    rows, columns = scores.shape
    k = min(k, columns)
    if k == 0 or rows == 0:
        empty = torch.zeros((rows, k), dtype=torch.long, device=scores.device)
        return empty, scores.new_zeros((rows, k)), empty.bool()
    every_row = torch.arange(rows, device=scores.device)
    values, index = best_columns(scores, k + 1 if k < columns else k)
    if finish is not None:
        values = finish(values, every_row)
    if k < columns:
        # If the (k+1)-th best equals the k-th, an equal score may have been cut arbitrarily.
        straddling = values[:, k - 1] == values[:, k]
        values, index = values[:, :k].contiguous(), index[:, :k].contiguous()
    else:
        straddling = torch.ones(rows, dtype=torch.bool, device=scores.device)
    if torch.isnan(values).any():
        raise FloatingPointError("the model produced NaN scores: retrain it (check train.lr)")
    redo = straddling.nonzero().squeeze(1)
    if len(redo):
        whole = scores[redo] if finish is None else finish(scores[redo], redo)
        exact_values, exact_index = torch.sort(whole, dim=1, descending=True, stable=True)
        values[redo], index[redo] = exact_values[:, :k], exact_index[:, :k]
    # Within the chosen k: descending score, then ascending item index (stable sort on sorted index).
    index, order = index.sort(dim=1)
    values = values.gather(1, order)
    values, order = values.sort(dim=1, descending=True, stable=True)
    index = index.gather(1, order)
    return index, values, torch.isfinite(values)


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

    def __init__(self, model: nn.Module, device: torch.device):
        self.model = model
        self.device = device
        self.n_items = model.n_items
        self.items = torch.arange(self.n_items, device=device)
        self._mlp = _SplitMLP.build(model) if hasattr(model, "layers") else None
        self._dot = None if hasattr(model, "layers") else _DotKeys.build(model)

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


class _DotKeys:
    """A dot model's block as ranking keys, finished into scores for the chosen items only.

    ``dot_bias`` scores are ``scale(q . p + b_i + b_u)`` with a non-decreasing ``scale`` (the
    sigmoid into ``y_range``); ``b_u`` is the same along a user's row, so ranking by
    ``q . p + b_i`` (one matrix product and one in-place addition) ranks by score, and the bias
    and sigmoid are applied to the ``k + 1`` candidates per user instead of to every item. The item
    rows are gathered once per worker. :meth:`build` checks on a probe that finishing the whole
    block gives the model's own ``score_vectors`` bit for bit, and returns None otherwise, so the
    kernel falls back to the model's code.
    """

    def __init__(self, model: nn.Module):
        items = torch.arange(model.n_items, device=model.item_factors.weight.device)
        self.item_matrix = model.item_factors(items).detach()
        biased = hasattr(model, "item_bias") and hasattr(model, "user_bias")
        self.item_bias = model.item_bias(items).T.detach() if biased else None
        self.y_range = getattr(model, "y_range", None) if biased else None

    @classmethod
    def build(cls, model: nn.Module) -> _DotKeys | None:
        with torch.no_grad():
            fast = cls(model)
            device = fast.item_matrix.device
            width = fast.item_matrix.shape[1]
            if model.user_factors.embedding_dim != width:
                return None  # user rows of another width (a blend's): only the model's code
            users = torch.linspace(-1.5, 1.5, 4 * width, device=device).view(4, width)
            bias = torch.linspace(-0.5, 0.5, 4, device=device)
            expected = model.score_vectors(users, bias, torch.arange(model.n_items, device=device))
            keys, finish = fast.keys(users), fast.finisher(bias)
            got = keys if finish is None else finish(keys, torch.arange(4, device=device))
            return fast if torch.equal(got, expected.float()) else None

    def keys(self, user_vectors: torch.Tensor) -> torch.Tensor:
        raw = user_vectors @ self.item_matrix.T
        if self.item_bias is not None:
            raw.add_(self.item_bias)
        return raw

    def finisher(self, user_bias: torch.Tensor | None) -> Finish | None:
        if self.item_bias is None:
            return None
        y_range = self.y_range

        def finish(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            # The model's own operations in its order: (raw + b_i) + b_u, then the scaling.
            raw = values + user_bias[rows, None] if user_bias is not None else values
            if y_range is None:
                return raw
            return torch.where(torch.isneginf(values), values, scale_to_range(raw, y_range))

        return finish


class _SplitMLP:
    """An EmbeddingNet's pair scores with its first layer split into user and item halves.

    ``W [u; i] + b = W_u u + (W_i i + b)``: the item half is computed once, the user half once per
    block, and only the layers after the first run per pair. :meth:`build` checks the split against
    the model's own ``score_vectors`` and returns None when they disagree (a changed network), so
    the kernel falls back to the model's own code.
    """

    def __init__(self, model: nn.Module):
        first = model.layers[0]
        width = model.user_factors.embedding_dim
        self.user_weight = first.weight[:, :width]
        self.item_hidden = model.item_factors.weight @ first.weight[:, width:].T + first.bias
        self.rest = model.layers[1:]
        self.y_range = getattr(model, "y_range", None)

    @classmethod
    def build(cls, model: nn.Module) -> _SplitMLP | None:
        if not isinstance(model.layers[0], nn.Linear):
            return None
        with torch.no_grad():
            split = cls(model)
            items = torch.arange(min(model.n_items, 64), device=model.item_factors.weight.device)
            probe = torch.linspace(-0.05, 0.05, 3 * model.user_factors.embedding_dim)
            users = probe.view(3, -1).to(items.device)
            expected = model.score_vectors(users, None, items).float()
            got = split(users)[:, : len(items)]
        return split if torch.allclose(got, expected, rtol=1e-4, atol=1e-5) else None

    def __call__(self, user_vectors: torch.Tensor) -> torch.Tensor:
        user_hidden = user_vectors @ self.user_weight.T
        items = self.item_hidden.shape[0]
        step = max(1, MLP_PAIRS_PER_CHUNK // max(1, items))
        blocks = []
        for start in range(0, len(user_hidden), step):
            pairs = user_hidden[start : start + step, None, :] + self.item_hidden[None, :, :]
            raw = scale_to_range(self.rest(pairs).squeeze(-1), self.y_range)
            blocks.append(raw.float())
        return torch.cat(blocks) if blocks else user_hidden.new_zeros((0, items))


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
        """The same rows :func:`recspark.model.saving.write_factor_tables` writes to ``user_factors``."""
        factors = model.user_factors.weight.detach().cpu().float().numpy()
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
        for start in range(0, n, block):
            stop = min(start + block, n)
            low, high = starts[start], starts[stop]
            seen_rows = np.repeat(np.arange(stop - start), np.diff(starts[start : stop + 1]))
            index, score, valid = kernel.block(
                vectors[start:stop], bias[start:stop], top_n, seen_rows, rated[low:high], ineligible
            )
            columns = index.shape[1]
            keep = valid.reshape(-1)
            owner = np.repeat(np.arange(start, stop), columns)[keep]
            out = {USER_IDX: pa.array(user_idx[owner])}
            for name in carry:
                out[name] = batch.column(name).take(pa.array(owner))
            chosen = index.reshape(-1)[keep].astype(np.int32)
            out[ITEM_IDX] = pa.array(chosen)
            if item_ids is not None:
                out[ITEM_ID] = item_ids.take(pa.array(chosen))
            out[RANK] = pa.array(
                np.tile(np.arange(1, columns + 1, dtype=np.int32), stop - start)[keep]
            )
            out[SCORE] = pa.array(score.reshape(-1)[keep].astype(np.float32))
            if counters is not None:
                counters.users.add(int(valid[:, 0].sum()) if columns else 0)
                counters.rows.add(len(chosen))
            yield pa.RecordBatch.from_pydict(out)
