"""Saving and loading trained models, their factors as Parquet tables, and warm starts.

``model.pt`` holds the state dict, the model's constructor arguments, and which prepared run's id
maps its rows refer to (``meta.index_date``); :func:`load_model` rebuilds the model from that
alone. The factor tables (``user_idx``, ``bias``, ``factors``) are for downstream use and for
scoring. :func:`carry_weights` starts a new model from an older one: because id maps are stable
(a known id keeps its index, new ids are appended), row ``i`` of an old user or item table is row
``i`` of the new one.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recspark.core.constants import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.core.errors import MissingInputError
from recspark.core.storage import Layout, local_path, read_json
from recspark.model.embedding import EmbeddingModel, build_model

MODEL_FILE = "model.pt"

log = logging.getLogger(__name__)


def model_bytes(model: EmbeddingModel, spec: dict[str, Any], meta: dict[str, Any]) -> bytes:
    """``model.pt``'s bytes: ``{"spec", "meta", "state_dict"}`` with CPU tensors."""
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"spec": spec, "meta": meta, "state_dict": state}, buffer)
    return buffer.getvalue()


def save_model(
    path: str | Path, model: EmbeddingModel, spec: dict[str, Any], meta: dict[str, Any]
) -> None:
    """Write ``model.pt``; ``spec`` are :func:`build_model` arguments, ``meta`` free-form facts."""
    Path(local_path(path)).write_bytes(model_bytes(model, spec, meta))


#: Parameters above which :func:`model_from_bytes` builds the model on the meta device.
META_BUILD_PARAMETERS = 1 << 24


def model_from_bytes(
    data: bytes, device: str | torch.device = "cpu"
) -> tuple[EmbeddingModel, dict, dict]:
    """(model in eval mode, spec, meta) from :func:`model_bytes` output."""
    payload = torch.load(io.BytesIO(data), map_location=device, weights_only=False)
    # The state replaces every parameter, so a large model is built without memory or random
    # initialisation (the meta device). A small one is built on the CPU: initialising it costs
    # less than the meta device's first use in a process (~1.5 s of imports), which every scoring
    # worker would pay for its item-side model. The random state is restored afterwards: loading
    # a model does not move the seeded stream of whatever runs next.
    size = sum(tensor.numel() for tensor in payload["state_dict"].values())
    building = torch.device("meta" if size > META_BUILD_PARAMETERS else "cpu")
    with torch.random.fork_rng(devices=[]), building:
        model = build_model(**payload["spec"])
    model.load_state_dict(payload["state_dict"], assign=True)
    model.to(device).eval()
    return model, payload["spec"], payload["meta"]


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[EmbeddingModel, dict, dict]:
    """(model in eval mode, spec, meta) from a ``model.pt`` file or the folder holding it."""
    target = local_path(path)
    if target.is_dir():
        target = target / MODEL_FILE
    return model_from_bytes(target.read_bytes(), device)


def _factor_table(
    index_name: str,
    factors: torch.Tensor,
    bias: torch.Tensor | None,
    id_name: str,
    ids: pa.Array | None,
) -> pa.Table:
    matrix = factors.detach().cpu().numpy().astype(np.float32)
    columns = {index_name: pa.array(np.arange(len(matrix), dtype=np.int32))}
    if ids is not None:
        if len(ids) != len(matrix):
            raise ValueError(
                f"{len(ids)} raw ids for a table of {len(matrix)} rows: the id map is not the "
                "model's"
            )
        columns[id_name] = ids
    columns.update({
        "bias": pa.array(
            bias.detach().cpu().numpy().reshape(-1).astype(np.float32)
            if bias is not None
            else np.zeros(len(matrix), dtype=np.float32)
        ),
        "factors": pa.ListArray.from_arrays(
            pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)),
            pa.array(matrix.reshape(-1)),
        ),
    })
    return pa.table(columns)


def write_factor_tables(
    model: EmbeddingModel,
    folder: str | Path,
    user_ids: pa.Array | None = None,
    item_ids: pa.Array | None = None,
) -> dict[str, str]:
    """Write ``user_factors/`` and ``item_factors/`` Parquet tables; return their paths.

    Columns: ``user_idx`` (``item_idx``), the raw ``user_id`` (``item_id``) when given (row ``i``
    is index ``i``), ``bias`` and ``factors``.
    """
    base = local_path(folder)
    outputs = {}
    for name, index_name, id_name, ids, factors, bias in (
        ("user_factors", USER_IDX, USER_ID, user_ids, model.user_factors.weight,
         getattr(model, "user_bias", None)),
        ("item_factors", ITEM_IDX, ITEM_ID, item_ids, model.item_factors.weight,
         getattr(model, "item_bias", None)),
    ):
        target = base / name
        target.mkdir(parents=True, exist_ok=True)
        table = _factor_table(
            index_name, factors, bias.weight if bias is not None else None, id_name, ids
        )
        pq.write_table(table, target / "part-00000.parquet")
        outputs[name] = str(target)
    return outputs


def raw_ids(index_folder: str | Path, id_name: str, index_name: str, size: int) -> pa.Array:
    """The raw ids of an id map (``prepared/D/user_index``), ordered by their dense index.

    Read with pyarrow: the map has one row per id, the size of the model's own table.

    Raises
    ------
    ValueError
        When the map's indices are not exactly ``0 .. size - 1``.
    """
    folder = local_path(index_folder)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    names = set(pq.read_schema(files[0]).names) if files else set()
    if not {id_name, index_name} <= names:
        raise ValueError(
            f"{index_folder} is not an id map with {id_name} and {index_name}: re-run `recspark "
            "prepare` for this run date"
        )
    table = pq.read_table(str(folder), columns=[id_name, index_name])
    order = pc.sort_indices(table.column(index_name))
    indices = table.column(index_name).take(order).to_numpy()
    if len(indices) != size or (size and (indices[0] != 0 or indices[-1] != size - 1)):
        raise ValueError(
            f"{index_folder} does not hold indices 0..{size - 1}: it is not this model's id map"
        )
    return table.column(id_name).take(order).combine_chunks()


def _table_side(
    key: str, old: torch.Tensor, new: torch.Tensor, old_sizes: dict, new_sizes: dict
) -> str | None:
    """``users`` or ``items`` when ``key`` is a per-user or per-item table in both models."""
    sides = [
        side
        for side in ("users", "items")
        if old.shape[0] == old_sizes[side] and new.shape[0] == new_sizes[side]
    ]
    if len(sides) > 1:  # as many users as items: the parameter's name decides
        sides = [side for side in sides if side[:-1] in key] or sides[:1]
    return sides[0] if sides and old.dim() >= 1 else None


@torch.no_grad()
def carry_weights(
    model: EmbeddingModel, old_state: dict[str, torch.Tensor], old_spec: dict[str, Any]
) -> dict[str, int]:
    """Copy an older model's weights into ``model`` (warm start); return rows carried.

    Rows ``0..n-1`` of every user and item table (embeddings and biases) are copied from the old
    model; rows of ids new since then keep their fresh initialisation. Any other weight (MLP
    layers) is copied when its shape is unchanged. A table whose width changed is left fresh.

    Returns
    -------
    ``{"users": rows carried, "items": rows carried}``; 0 where no table could be carried.

    Raises
    ------
    ValueError
        When the old model has more users or items than the new one: its id maps are not an
        ancestor of the new ones.
    """
    old_sizes = {"users": old_spec["n_users"], "items": old_spec["n_items"]}
    new_sizes = {"users": model.n_users, "items": model.n_items}
    for side in ("users", "items"):
        if old_sizes[side] > new_sizes[side]:
            raise ValueError(
                f"the previous model has {old_sizes[side]} {side} but the new id map only "
                f"{new_sizes[side]}: the id maps are not stable between the two runs; set "
                "train.warm_start=false to start fresh"
            )
    carried = {"users": 0, "items": 0}
    state = model.state_dict()
    for key, new in state.items():
        old = old_state.get(key)
        if old is None or old.dtype != new.dtype or old.shape[1:] != new.shape[1:]:
            if old is not None:
                log.warning(
                    "warm start: %s changed shape %s -> %s; left fresh",
                    key,
                    tuple(old.shape),
                    tuple(new.shape),
                )
            continue
        side = _table_side(key, old, new, old_sizes, new_sizes) if new.dim() >= 1 else None
        if side is not None:
            new[: old.shape[0]] = old.to(new.device)
            carried[side] = old.shape[0]
        elif old.shape == new.shape:
            new.copy_(old.to(new.device))
    return carried


def load_published_model(layout: Layout, run_date):
    """``(folder, model, spec, meta, model_version)`` of the model published for ``run_date``."""
    folder = layout.model(run_date)
    if not (folder / "model.pt").exists():
        raise MissingInputError(
            f"no trained model for run_date {run_date} under {layout.root}: run `recspark train` first"
        )
    model, spec, meta = load_model(folder)
    metrics = read_json(folder / "metrics.json")
    return folder, model, spec, meta, metrics["model_version"]
