"""Top-N recommendations for every user: a blocked matrix product and a top-k per block.

Executors receive the item side of the model once, as a broadcast (item factors and biases, or the
MLP's weights). The user rows of the model's ``user_factors`` table (each with its embedding row)
and the (user, item) pairs each user already rated go through one shuffle together, partitioned
by user, so every scoring task holds its users and a sparse mask of their rated items. Per block
of ``users_per_block`` users the kernel computes the full ``users x items`` score block, masks the
rated items with ``-inf`` and keeps the best ``top_n``. Candidate user x item pairs never become
rows.

Cost per block of ``u`` users over ``i`` items:

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

Ties are broken by the lower item index, and blocks are formed from user-sorted partitions, so
re-running with the same model gives identical lists.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import FloatType, StructField, StructType
from torch import nn

from recspark.constants import ITEM_IDX, PREDICTION, RANK, SCORE, USER_IDX
from recspark.model_io import model_bytes, model_from_bytes

SEEN = "seen"
FACTORS = "factors"
BIAS = "bias"

#: (user, item) pairs per chunk when the MLP runs over a block; bounds memory to ~pairs x h1 floats.
MLP_PAIRS_PER_CHUNK = 1 << 18

#: Fault-injection hook for the kill test: each scoring task sleeps this many seconds after it has
#: handed its first block to Spark's writer, so a test can kill the job while it is writing.
PAUSE_ENV = "RECSPARK_SCORE_PAUSE_SECONDS"

_KERNEL_CACHE: dict[tuple[str, str], ScoringKernel] = {}


Finish = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def top_k(
    scores: torch.Tensor, k: int, finish: Finish | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best ``k`` columns of each row, ties broken by the lower column index.

    ``-inf`` marks excluded entries. One ``topk`` pass over the block finds the candidates; only
    rows where equal scores straddle the cut (rare for continuous scores, and rows with fewer than
    ``k + 1`` eligible columns) are re-ranked exactly with a stable sort of the whole row.

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
    values, index = scores.topk(k + 1 if k < columns else k, dim=1)
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
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-N ``(item_idx, score, valid)`` arrays, each ``users x top_n``, for one block.

        ``seen_rows[j]`` (a row of this block) has rated ``seen_items[j]``; those are excluded.
        """
        vectors = torch.as_tensor(user_vectors, device=self.device)
        bias = torch.as_tensor(user_bias, device=self.device)
        keys, finish = self.ranking(vectors, bias)
        if seen_rows is not None and len(seen_rows):
            keys[
                torch.as_tensor(seen_rows, dtype=torch.long, device=self.device),
                torch.as_tensor(seen_items, dtype=torch.long, device=self.device),
            ] = -torch.inf
        index, value, valid = top_k(keys, top_n, finish)
        return index.cpu().numpy(), value.cpu().numpy(), valid.cpu().numpy()


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
            low, high = y_range
            scaled = torch.sigmoid(raw) * (high - low) + low
            return torch.where(torch.isneginf(values), values, scaled)

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
            raw = self.rest(pairs).squeeze(-1)
            if self.y_range is not None:
                low, high = self.y_range
                raw = torch.sigmoid(raw) * (high - low) + low
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


def score_block(
    model: nn.Module,
    user_vectors: np.ndarray,
    user_bias: np.ndarray,
    seen: list | None,
    top_n: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-N ``(item_idx, score, valid)`` for a block of users; ``seen[r]``: row r's rated items."""
    rows = cols = None
    if seen is not None:
        lengths = np.fromiter((0 if s is None else len(s) for s in seen), dtype=np.int64)
        rows = np.repeat(np.arange(len(seen)), lengths)
        cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in seen if s is not None] or [[]])
    return ScoringKernel(model, device).block(user_vectors, user_bias, top_n, rows, cols)


def _pause_for_fault_injection() -> None:
    seconds = float(os.environ.get(PAUSE_ENV) or 0)
    if seconds > 0:
        time.sleep(seconds)


def _seen_by_user(users: np.ndarray, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of rated items by position in the sorted ``users`` array: (starts, positions, items).

    Pairs of users not in ``users`` (scoring only a subset) are dropped.
    """
    owners = pairs[USER_IDX].to_numpy(dtype=np.int64)
    items = pairs[ITEM_IDX].to_numpy(dtype=np.int64)
    position = np.searchsorted(users, owners)
    known = position < len(users)
    known[known] = users[position[known]] == owners[known]
    position, items = position[known], items[known]
    order = np.argsort(position, kind="stable")
    position, items = position[order], items[order]
    starts = np.searchsorted(position, np.arange(len(users) + 1))
    return starts, position, items


VALUE = "value"
#: ``item_idx`` of the row carrying a user's bias; ``-2 - j`` carries factor ``j``.
BIAS_SLOT = -1


def user_rows(user_factors: DataFrame) -> DataFrame:
    """The user table in the long, all-scalar form the scoring shuffle carries.

    One row ``(user_idx, item_idx=-1, value=bias)`` and one ``(user_idx, -2 - j, factor j)`` per
    factor. Scalar columns cross into Python as plain Arrow buffers; an array column mixed with
    millions of rated-pair rows would be converted row by row.
    """
    bias = user_factors.select(
        F.col(USER_IDX).cast("int").alias(USER_IDX),
        F.lit(BIAS_SLOT).cast("int").alias(ITEM_IDX),
        F.col(BIAS).cast("float").alias(VALUE),
    )
    factors = user_factors.select(
        F.col(USER_IDX).cast("int").alias(USER_IDX), F.posexplode(F.col(FACTORS))
    ).select(
        USER_IDX,
        (F.lit(-2) - F.col("pos")).cast("int").alias(ITEM_IDX),
        F.col("col").cast("float").alias(VALUE),
    )
    return bias.unionByName(factors)


def recommend_partition(
    batches: Iterator[pd.DataFrame],
    model_payload: bytes,
    top_n: int,
    users_per_block: int,
    device_setting: str = "auto",
) -> Iterator[pd.DataFrame]:
    """mapInPandas body over one user partition: ``(user_idx, item_idx, value)`` rows in.

    Rows with ``item_idx >= 0`` are rated pairs; the others carry the user's bias and factors
    (see :func:`user_rows`). All arrive hash-partitioned by ``user_idx``, so the partition holds
    every rated item of its users: they become one sparse mask (CSR) and the users are scored in
    blocks in ``user_idx`` order. Output: ``user_idx``, ``item_idx``, ``rank`` (1 = best),
    ``score``. A user with fewer than ``top_n`` unseen items gets them all.
    """
    from recspark.training import resolve_device

    kernel = kernel_for(model_payload, resolve_device(device_setting))
    owners, slots, values = [], [], []
    for batch in batches:
        owners.append(batch[USER_IDX].to_numpy(dtype=np.int64))
        slots.append(batch[ITEM_IDX].to_numpy(dtype=np.int64))
        values.append(batch[VALUE].to_numpy(dtype=np.float32))
    if not owners:
        return
    owner, slot, value = np.concatenate(owners), np.concatenate(slots), np.concatenate(values)
    del owners, slots, values
    described = slot < 0
    user_idx, position = np.unique(owner[described], return_inverse=True)
    if not len(user_idx):
        return
    width = int(-slot[described].min()) - 1
    vectors = np.zeros((len(user_idx), width), dtype=np.float32)
    bias = np.zeros(len(user_idx), dtype=np.float32)
    is_bias = slot[described] == BIAS_SLOT
    bias[position[is_bias]] = value[described][is_bias]
    vectors[position[~is_bias], -2 - slot[described][~is_bias]] = value[described][~is_bias]
    pairs = pd.DataFrame({USER_IDX: owner[~described], ITEM_IDX: slot[~described]})
    del owner, slot, value
    starts, positions, items = _seen_by_user(user_idx, pairs)
    first = True
    for start in range(0, len(user_idx), users_per_block):
        stop = min(start + users_per_block, len(user_idx))
        low, high = starts[start], starts[stop]
        index, score, valid = kernel.block(
            vectors[start:stop], bias[start:stop], top_n, positions[low:high] - start, items[low:high]
        )
        columns = index.shape[1]
        keep = valid.reshape(-1)
        yield pd.DataFrame(
            {
                USER_IDX: np.repeat(user_idx[start:stop].astype(np.int32), columns)[keep],
                ITEM_IDX: index.reshape(-1)[keep].astype(np.int32),
                RANK: np.tile(np.arange(1, columns + 1, dtype=np.int32), stop - start)[keep],
                SCORE: score.reshape(-1)[keep].astype(np.float32),
            }
        )
        if first:
            first = False
            _pause_for_fault_injection()


RECOMMENDATION_SCHEMA = f"{USER_IDX} int, {ITEM_IDX} int, {RANK} int, {SCORE} float"


def item_side_payload(model: nn.Module, spec: dict, meta: dict) -> bytes:
    """The model's bytes with its user tables cut to one row: executors score user vectors."""
    light = copy.deepcopy(model).cpu()
    light.user_factors = nn.Embedding(1, light.user_factors.embedding_dim)
    if hasattr(light, "user_bias"):
        light.user_bias = nn.Embedding(1, 1)
    light.n_users = 1
    return model_bytes(light, {**spec, "n_users": 1, "sparse": False}, meta)


def recommend_all(
    spark: SparkSession,
    user_factors: DataFrame,
    seen: DataFrame | None,
    payload: bytes,
    top_n: int,
    users_per_block: int = 256,
    device: str = "auto",
    partitions: int | None = None,
) -> DataFrame:
    """Top-N ``(user_idx, item_idx, rank, score)`` for every row of ``user_factors``.

    The user rows (in the long form of :func:`user_rows`) and the rated pairs go through one
    shuffle together, hash-partitioned by ``user_idx``; no per-user array of seen items is ever
    aggregated or joined.

    Parameters
    ----------
    spark
        The session; the payload is broadcast through its context once.
    user_factors
        DataFrame ``(user_idx, bias, factors)``: the model's user table, or the part to score.
    seen
        DataFrame of ``(user_idx, item_idx)`` pairs to exclude (the user's rated items), or None.
        Pairs of users not in ``user_factors`` are ignored.
    payload
        :func:`item_side_payload` bytes; broadcast once to the executors.
    top_n
        List length per user.
    users_per_block
        Users per matrix product; memory per block is ``users_per_block x items`` floats.
    device
        ``train.device``: ``auto`` uses CUDA on executors that have a GPU.
    partitions
        Scoring tasks; default the session's default parallelism. Each task holds its share of
        the rated pairs and user rows in memory (about 20 bytes a row).
    """
    missing = [c for c in (USER_IDX, BIAS, FACTORS) if c not in user_factors.columns]
    if missing:
        raise ValueError(f"user_factors lacks column(s) {missing}; it has {user_factors.columns}")
    shared = spark.sparkContext.broadcast(payload)
    rows = user_rows(user_factors)
    if seen is not None:
        for column in (USER_IDX, ITEM_IDX):
            if column not in seen.columns:
                raise ValueError(f"seen lacks column {column!r}; it has {seen.columns}")
        rows = rows.unionByName(
            seen.select(
                F.col(USER_IDX).cast("int").alias(USER_IDX),
                F.col(ITEM_IDX).cast("int").alias(ITEM_IDX),
                F.lit(None).cast("float").alias(VALUE),
            )
        )
    # An explicit count is kept by adaptive execution, which would otherwise merge small user
    # tables into one task.
    count = partitions or spark.sparkContext.defaultParallelism
    rows = rows.repartition(count, USER_IDX)

    def score(batches):
        return recommend_partition(batches, shared.value, top_n, users_per_block, device)

    return rows.mapInPandas(score, RECOMMENDATION_SCHEMA)


def seen_items(ratings: DataFrame, user_col: str = USER_IDX, item_col: str = ITEM_IDX) -> DataFrame:
    """``(user_idx, item_idx)`` pairs of ``ratings``: what :func:`recommend_all` excludes."""
    return ratings.select(
        F.col(user_col).cast("int").alias(USER_IDX), F.col(item_col).cast("int").alias(ITEM_IDX)
    )


def predict_partition(
    batches: Iterator[pd.DataFrame], model_payload: bytes, device_setting: str = "auto"
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: ``(user_idx, item_idx, ...)`` rows in, the same plus ``prediction`` out."""
    from recspark.training import resolve_device

    kernel = kernel_for(model_payload, resolve_device(device_setting))
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
