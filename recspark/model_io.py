"""Saving and loading trained models, and their factors as Parquet tables.

``model.pt`` holds the state dict, the model's constructor arguments, and which prepared run's id
maps its rows refer to; :func:`load_model` rebuilds the model from that alone. The factor tables
(``user_idx``, ``bias``, ``factors``) are for downstream use and for scoring.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recspark.artifacts import local_path
from recspark.constants import ITEM_IDX, USER_IDX
from recspark.models import EmbeddingModel, build_model

MODEL_FILE = "model.pt"


def model_bytes(model: EmbeddingModel, spec: dict[str, Any], meta: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"spec": spec, "meta": meta, "state_dict": state}, buffer)
    return buffer.getvalue()


def save_model(path: str | Path, model: EmbeddingModel, spec: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write ``model.pt``; ``spec`` are :func:`build_model` arguments, ``meta`` free-form facts."""
    Path(local_path(path)).write_bytes(model_bytes(model, spec, meta))


def model_from_bytes(data: bytes, device: str | torch.device = "cpu") -> tuple[EmbeddingModel, dict, dict]:
    payload = torch.load(io.BytesIO(data), map_location=device, weights_only=False)
    model = build_model(**payload["spec"])
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return model, payload["spec"], payload["meta"]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[EmbeddingModel, dict, dict]:
    """(model in eval mode, spec, meta) from a ``model.pt`` file or the folder holding it."""
    target = local_path(path)
    if target.is_dir():
        target = target / MODEL_FILE
    return model_from_bytes(target.read_bytes(), device)


def _factor_table(index_name: str, factors: torch.Tensor, bias: torch.Tensor | None) -> pa.Table:
    matrix = factors.detach().cpu().numpy().astype(np.float32)
    columns = {
        index_name: pa.array(np.arange(len(matrix), dtype=np.int32)),
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
    return pa.table(columns)


def write_factor_tables(model: EmbeddingModel, folder: str | Path) -> dict[str, str]:
    """Write ``user_factors/`` and ``item_factors/`` Parquet tables; return their paths."""
    base = local_path(folder)
    outputs = {}
    for name, index_name, factors, bias in (
        ("user_factors", USER_IDX, model.user_factors.weight, getattr(model, "user_bias", None)),
        ("item_factors", ITEM_IDX, model.item_factors.weight, getattr(model, "item_bias", None)),
    ):
        target = base / name
        target.mkdir(parents=True, exist_ok=True)
        table = _factor_table(index_name, factors, bias.weight if bias is not None else None)
        pq.write_table(table, target / "part-00000.parquet")
        outputs[name] = str(target)
    return outputs
