"""Top-N recommendations for every user: a blocked matrix product and a top-k per block.

Executors receive the item side of the model once, as a broadcast (item factors and biases, or
the MLP's weights); each user row arrives with its own embedding row, joined from the model's
``user_factors`` table, and the items it has already rated. Per block of users the kernel computes
the full ``users x items`` score block (one matrix product for the dot models; the network over
every pair for ``mlp``, which costs ``users x items`` forward passes), masks seen items and keeps
the best ``top_n``. User x item pairs never become rows.

Ties are broken by the lower item index, so re-running gives identical lists.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from pyspark.sql.types import FloatType, StructField, StructType

from recspark.constants import ITEM_IDX, PREDICTION, RANK, SCORE, USER_IDX
from recspark.model_io import model_from_bytes

SEEN = "seen"
FACTORS = "factors"
BIAS = "bias"

_MODEL_CACHE: dict[int, object] = {}


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best ``k`` columns of each row, ties broken by the lower column index.

    ``-inf`` marks excluded entries. Returns (indices, values, valid), each ``rows x k``, best
    first; ``valid`` is False where a row had fewer than ``k`` eligible columns.
    """
    rows, columns = scores.shape
    k = min(k, columns)
    finite = torch.isfinite(scores)
    kth = scores.topk(k, dim=1).values[:, -1:]
    greater = (scores > kth) & finite
    equal = (scores == kth) & finite
    room = k - greater.sum(dim=1, keepdim=True)
    chosen = greater | (equal & (equal.cumsum(dim=1) <= room))
    # Chosen columns in ascending index order: a unique key per chosen column, zero elsewhere.
    key = chosen * (columns - torch.arange(columns, device=scores.device, dtype=torch.float32))
    position = key.topk(k, dim=1).indices
    valid = chosen.gather(1, position)
    values = torch.where(valid, scores.gather(1, position), torch.full_like(kth.expand(-1, k), -torch.inf))
    # Stable sort keeps ascending index among equal scores.
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return position.gather(1, order), values.gather(1, order), valid.gather(1, order)


def score_block(
    model,
    user_vectors: np.ndarray,
    user_bias: np.ndarray,
    seen: list,
    top_n: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-N (item_idx, score, valid) for a block of users given by their vectors."""
    items = torch.arange(model.n_items, device=device)
    with torch.no_grad():
        vectors = torch.as_tensor(user_vectors, device=device)
        bias = torch.as_tensor(user_bias, device=device)
        scores = model.score_vectors(vectors, bias, items).float()
        if seen is not None:
            lengths = [len(s) if s is not None else 0 for s in seen]
            if sum(lengths):
                rows = np.repeat(np.arange(len(seen)), lengths)
                cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in seen if s is not None and len(s)])
                scores[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = -torch.inf
        index, value, valid = top_k(scores, top_n)
    return index.cpu().numpy(), value.cpu().numpy(), valid.cpu().numpy()


def item_side_model(model_payload: bytes, device: torch.device):
    """Rebuild the model once per Python worker from the broadcast bytes."""
    key = hash((model_payload[:64], len(model_payload), str(device)))
    if key not in _MODEL_CACHE:
        model, _, _ = model_from_bytes(model_payload, device)
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = model
    return _MODEL_CACHE[key]


def recommend_partition(
    batches: Iterator[pd.DataFrame],
    model_payload: bytes,
    top_n: int,
    users_per_block: int,
    device_setting: str = "auto",
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: rows (user_idx, factors, bias, seen) in, (user_idx, item_idx, rank, score) out."""
    from recspark.training import resolve_device

    device = resolve_device(device_setting)
    model = item_side_model(model_payload, device)
    for batch in batches:
        for start in range(0, len(batch), users_per_block):
            block = batch.iloc[start : start + users_per_block]
            vectors = np.stack(block[FACTORS].to_numpy()).astype(np.float32)
            bias = block[BIAS].to_numpy(dtype=np.float32)
            seen = list(block[SEEN]) if SEEN in block else None
            index, value, valid = score_block(model, vectors, bias, seen, top_n, device)
            users = np.repeat(block[USER_IDX].to_numpy(), index.shape[1])
            ranks = np.tile(np.arange(1, index.shape[1] + 1, dtype=np.int32), len(block))
            keep = valid.reshape(-1)
            yield pd.DataFrame(
                {
                    USER_IDX: users[keep].astype(np.int32),
                    ITEM_IDX: index.reshape(-1)[keep].astype(np.int32),
                    RANK: ranks[keep],
                    SCORE: value.reshape(-1)[keep].astype(np.float32),
                }
            )


RECOMMENDATION_SCHEMA = f"{USER_IDX} int, {ITEM_IDX} int, {RANK} int, {SCORE} float"


def item_side_payload(model, spec: dict, meta: dict) -> bytes:
    """The model's bytes with its user tables cut to one row: executors score user vectors."""
    import copy

    from torch import nn

    from recspark.model_io import model_bytes

    light = copy.deepcopy(model).cpu()
    light.user_factors = nn.Embedding(1, light.user_factors.embedding_dim)
    if hasattr(light, "user_bias"):
        light.user_bias = nn.Embedding(1, 1)
    light.n_users = 1
    return model_bytes(light, {**spec, "n_users": 1, "sparse": False}, meta)


def recommend_all(
    spark,
    user_factors,
    seen,
    payload: bytes,
    top_n: int,
    users_per_block: int = 2048,
    device: str = "auto",
):
    """Top-N (user_idx, item_idx, rank, score) for every row of ``user_factors``.

    Parameters
    ----------
    user_factors
        DataFrame ``(user_idx, bias, factors)``, the model's user table.
    seen
        DataFrame ``(user_idx, seen: array<int>)`` of items to exclude, or None.
    payload
        :func:`item_side_payload` bytes; broadcast once to the executors.
    """
    from pyspark.sql import functions as F

    shared = spark.sparkContext.broadcast(payload)
    users = user_factors.select(USER_IDX, F.col(BIAS), F.col(FACTORS))
    if seen is not None:
        users = users.join(seen.select(USER_IDX, SEEN), USER_IDX, "left")

    def score(batches):
        return recommend_partition(batches, shared.value, top_n, users_per_block, device)

    return users.mapInPandas(score, RECOMMENDATION_SCHEMA)


def seen_items(ratings, user_col: str = USER_IDX, item_col: str = ITEM_IDX):
    """``(user_idx, seen)``: each user's rated item indices as an array."""
    from pyspark.sql import functions as F

    return ratings.groupBy(user_col).agg(F.collect_set(F.col(item_col).cast("int")).alias(SEEN))


def predict_partition(batches, model_payload: bytes, device_setting: str = "auto"):
    """mapInPandas body: (user_idx, item_idx, ...) rows in, the same plus ``prediction`` out."""
    from recspark.training import resolve_device

    device = resolve_device(device_setting)
    model = item_side_model(model_payload, device)
    for batch in batches:
        with torch.no_grad():
            users = torch.as_tensor(batch[USER_IDX].to_numpy(), dtype=torch.long, device=device)
            items = torch.as_tensor(batch[ITEM_IDX].to_numpy(), dtype=torch.long, device=device)
            model.check_indices(users, items)
            prediction = model(users, items).float().cpu().numpy()
        yield batch.assign(**{PREDICTION: prediction})


def predict(spark, pairs, payload: bytes, device: str = "auto"):
    """``pairs`` with a float ``prediction`` column; ``payload`` is the whole model's bytes."""
    shared = spark.sparkContext.broadcast(payload)
    # A new StructType: ``schema.add`` would mutate the input frame's cached schema in place.
    schema = StructType([*pairs.schema.fields, StructField(PREDICTION, FloatType())])

    def run(batches):
        return predict_partition(batches, shared.value, device)

    return pairs.mapInPandas(run, schema)
