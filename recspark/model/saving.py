"""Saving and loading trained models, their factors as Parquet tables, and warm starts.

``model.pt`` holds the state dict, the model's constructor arguments (``spec``) and facts about it
(``meta``: which prepared run's id maps its rows refer to, ``meta.index_date``, and its objective),
as plain dicts; :func:`load_model` rebuilds the model from that alone. Saving goes through
:func:`recspark.model.published.save_model`, which checks them against their typed form (what the
later stages read of a published model); this module itself needs no pydantic, so the scoring
kernel loads models on a machine with torch alone. A model file holds tensors and plain data only
(:func:`plain_data`), and is read back with ``torch.load(weights_only=True)`` (:func:`load_plain`):
a file that holds anything else (a pickled object whose ``__reduce__`` would run code) is refused
before any of it runs. Checkpoints are written and read the same way. The factor tables
(``user_idx``, ``bias``, ``factors``) are for downstream use and for scoring. :func:`carry_weights`
starts a new model from an older one: because id maps are stable (a known id keeps its index, new
ids are appended), row ``i`` of an old user or item table is row ``i`` of the new one.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recspark.core import parquet_safety
from recspark.core.constants import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.core.errors import BadInputError
from recspark.core.location import Location
from recspark.core.storage import parquet_files, read_parquet
from recspark.model.base import EmbeddingModel
from recspark.model.registry import build_model
from recspark.model.spec import spec_from_dict
from recspark.model.tables import unfilled

MODEL_FILE = "model.pt"

log = logging.getLogger(__name__)


#: What a model or checkpoint file may hold besides tensors, dicts, lists and tuples.
PLAIN_SCALARS = (str, int, float, bool, type(None))


def plain_data(value: Any, where: str = "value") -> Any:
    """``value`` as a model or checkpoint file may hold it: tensors (moved to the CPU), dicts,
    lists, tuples, str, int, float, bool and None; numpy scalars become Python numbers.

    Such a file loads with ``torch.load(weights_only=True)``, which runs no code.

    Raises
    ------
    TypeError
        For anything else, naming where in ``value`` it is: convert it to plain data first.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.generic):  # before the scalars: np.float64 is a float subclass
        value = value.item()
    if value is None or type(value) in PLAIN_SCALARS:
        return value
    for kind in (bool, int, float, str):  # a subclass (an enum member) pickles as its class
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, dict):
        keys = [plain_data(key, f"a key of {where}") for key in value]
        if any(not isinstance(key, PLAIN_SCALARS) for key in keys):
            raise TypeError(f"{where} has a key that is not plain data")
        return {
            plain_key: plain_data(item, f"{where}[{key!r}]")
            for plain_key, (key, item) in zip(keys, value.items(), strict=True)
        }
    if isinstance(value, list | tuple):
        items = [plain_data(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, not plain data "
        "(tensors, dicts, lists, str, int, float, bool, None): convert it before saving"
    )


def load_plain(
    source: bytes | str | Path | Location,
    name: str,
    kind: str,
    advice: str,
    map_location: Any = "cpu",
) -> Any:
    """What ``torch.save`` wrote to ``source`` (bytes or a file), read with ``weights_only=True``.

    Parameters
    ----------
    name
        The file as the error message names it (its path).
    kind, advice
        What the file should be (``recspark model``) and what to do when it is not, for the
        error message.

    Raises
    ------
    BadInputError
        When the file holds code or objects that are not plain data (nothing of it was run), or
        is not a file ``torch.save`` wrote.
    """
    stream = io.BytesIO(source if isinstance(source, bytes) else Location(source).read_bytes())
    try:
        return torch.load(stream, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError) as error:
        text = str(error)
    # A pickle names a global (a function or class) to call or build: that is what weights_only
    # refuses, and what a planted ``__reduce__`` needs.
    named = re.search(r"GLOBAL ([\w.]+)", text)
    if named:
        raise BadInputError(
            f"{name} is not a {kind}: it holds code/objects that are not plain data: refusing "
            f"to load it (its pickle names {named.group(1)}); {advice}"
        )
    after = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
    reason = next((line.strip() for line in after.splitlines() if line.strip()), None)
    raise BadInputError(
        f"{name} is not a {kind}: torch cannot read it as plain data "
        f"({reason or (text.splitlines() or [''])[0][:200] or 'the file is empty'}); {advice}"
    )


def model_bytes(model: EmbeddingModel, spec: dict[str, Any], meta: dict[str, Any]) -> bytes:
    """``model.pt``'s bytes: ``{"spec", "meta", "state_dict"}`` with CPU tensors.

    Raises
    ------
    TypeError
        When ``spec`` or ``meta`` holds anything but plain data (:func:`plain_data`).
    """
    buffer = io.BytesIO()
    payload = {"spec": spec, "meta": meta, "state_dict": dict(model.state_dict())}
    torch.save(plain_data(payload, "the model file"), buffer)
    return buffer.getvalue()


#: Parameters above which :func:`model_from_bytes` builds the model on the meta device.
META_BUILD_PARAMETERS = 1 << 24


def model_from_bytes(
    data: bytes, device: str | torch.device = "cpu", name: str = "this model file"
) -> tuple[EmbeddingModel, dict, dict]:
    """(model in eval mode, spec, meta) from :func:`model_bytes` output.

    Raises
    ------
    BadInputError
        When ``data`` is not a model file recspark wrote, in particular when it holds code or
        objects that are not plain data: it is refused unread (``weights_only=True``).
    """
    advice = "re-run `recspark train` to write a new one, and find out what wrote this one"
    payload = load_plain(data, name, "recspark model", advice, map_location=device)
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("spec"), dict)
        and isinstance(payload.get("meta"), dict)
        and isinstance(payload.get("state_dict"), dict)
        and all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    ):
        raise BadInputError(
            f"{name} is not a recspark model: it holds no spec, meta and state_dict; {advice}"
        )
    # The state replaces every parameter, so a large model is built without memory or random
    # initialisation (the meta device). A small one is built on the CPU, its random tables left
    # unfilled (:func:`unfilled`): that costs less than the meta device's first use in a process
    # (~1.5 s of imports), which every scoring worker would pay for its item-side model. The
    # random state is restored afterwards: loading a model does not move the seeded stream of
    # whatever runs next.
    size = sum(tensor.numel() for tensor in payload["state_dict"].values())
    building = torch.device("meta" if size > META_BUILD_PARAMETERS else "cpu")
    with torch.random.fork_rng(devices=[]), building, unfilled():
        model = build_model(spec_from_dict(payload["spec"]))
    model.load_state_dict(payload["state_dict"], assign=True)  # strict: every table is set
    model.to(device).eval()
    return model, payload["spec"], payload["meta"]


def load_model(
    path: str | Path | Location, device: str | torch.device = "cpu"
) -> tuple[EmbeddingModel, dict, dict]:
    """(model in eval mode, spec, meta) from a ``model.pt`` file or the folder holding it."""
    target = Location(path)
    if target.is_dir():
        target = target / MODEL_FILE
    return model_from_bytes(target.read_bytes(), device, str(target))


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
            raise BadInputError(
                f"{len(ids)} raw ids for a table of {len(matrix)} rows: the id map is not the "
                "model's; re-run `recspark train` on this prepared run"
            )
        columns[id_name] = ids
    columns.update(
        {
            "bias": pa.array(
                bias.detach().cpu().numpy().reshape(-1).astype(np.float32)
                if bias is not None
                else np.zeros(len(matrix), dtype=np.float32)
            ),
            "factors": pa.ListArray.from_arrays(
                pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)),
                pa.array(matrix.reshape(-1)),
            ),
        }
    )
    return pa.table(columns)


def write_factor_tables(
    model: EmbeddingModel,
    folder: str | Path | Location,
    user_ids: pa.Array | None = None,
    item_ids: pa.Array | None = None,
) -> dict[str, str]:
    """Write ``user_factors/`` and ``item_factors/`` Parquet tables; return their paths.

    Columns: ``user_idx`` (``item_idx``), the raw ``user_id`` (``item_id``) when given (row ``i``
    is index ``i``), ``bias`` and ``factors``.
    """
    base = Location(folder)
    outputs = {}
    for name, index_name, id_name, ids, factors, bias in (
        (
            "user_factors",
            USER_IDX,
            USER_ID,
            user_ids,
            model.user_factors.weight,
            getattr(model, "user_bias", None),
        ),
        (
            "item_factors",
            ITEM_IDX,
            ITEM_ID,
            item_ids,
            model.item_factors.weight,
            getattr(model, "item_bias", None),
        ),
    ):
        target = base / name
        table = _factor_table(
            index_name, factors, bias.weight if bias is not None else None, id_name, ids
        )
        with (target / "part-00000.parquet").open("wb") as handle:
            pq.write_table(table, handle)
        outputs[name] = str(target)
    return outputs


def raw_ids(
    index_folder: str | Path | Location, id_name: str, index_name: str, size: int
) -> pa.Array:
    """The raw ids of an id map (``prepared/D/user_index``), ordered by their dense index.

    Read with pyarrow: the map has one row per id, the size of the model's own table.

    Raises
    ------
    BadInputError
        When the folder is not an id map, or its indices are not exactly ``0 .. size - 1``.
    """
    files = parquet_files(index_folder)
    names = set(parquet_safety.read_schema(files[0]).names) if files else set()
    if not {id_name, index_name} <= names:
        raise BadInputError(
            f"{index_folder} is not an id map with {id_name} and {index_name}: re-run `recspark "
            "prepare` for this run date"
        )
    table = read_parquet(index_folder, columns=[id_name, index_name])
    order = pc.sort_indices(table.column(index_name))
    indices = table.column(index_name).take(order).to_numpy()
    if len(indices) != size or (size and (indices[0] != 0 or indices[-1] != size - 1)):
        raise BadInputError(
            f"{index_folder} does not hold indices 0..{size - 1}: it is not this model's id map; "
            "re-run `recspark train` on this prepared run"
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
        table_side = _table_side(key, old, new, old_sizes, new_sizes) if new.dim() >= 1 else None
        if table_side is not None:
            new[: old.shape[0]] = old.to(new.device)
            carried[table_side] = old.shape[0]
        elif old.shape == new.shape:
            new.copy_(old.to(new.device))
    return carried
