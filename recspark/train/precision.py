"""Numeric precision of training and validation: ``train.precision``.

``fp32`` runs every matrix product in full float32; ``tf32`` lets CUDA matrix products (and cuDNN)
use TensorFloat-32, which keeps float32's range with a 10-bit mantissa and runs several times
faster on Ampere and later GPUs; ``bf16`` runs the forward pass and the loss under
:func:`torch.autocast` with bfloat16 (mixed precision: the weights, their gradients and the
optimizer state stay float32, and bfloat16's float32 range needs no gradient scaler). ``auto`` is
``tf32`` on CUDA and ``fp32`` elsewhere; a CPU has no TF32, so ``tf32`` there is ``fp32``. CPU
autocast supports bfloat16 too, which is what lets a CPU-only test compare ``bf16`` with ``fp32``.

The loop (:mod:`recspark.train.loop`) sets the matrix-product precision for an epoch or a
validation pass (:func:`matmul_precision`) and wraps each forward pass and loss in
:func:`autocast`; objectives cast predictions to float32 before any loss or figure, so reported
losses and validation figures are float32 sums whatever the precision. No Spark here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "fp32", "tf32", "bf16")


def resolve_precision(setting: str, device: torch.device | str) -> str:
    """The precision ``setting`` (``train.precision``) means on ``device``: fp32, tf32 or bf16.

    Raises
    ------
    ValueError
        For a setting outside :data:`PRECISIONS`.
    RuntimeError
        For ``bf16`` on a GPU without bfloat16 support.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"unknown train.precision {setting!r}; choose one of {PRECISIONS}")
    on_cuda = torch.device(device).type == "cuda"
    if setting == "auto":
        return "tf32" if on_cuda else "fp32"
    if setting == "tf32" and not on_cuda:
        return "fp32"
    # A CPU-only driver reporting what its GPU processes ran cannot ask; they checked.
    if setting == "bf16" and on_cuda and torch.cuda.is_available():
        if not torch.cuda.is_bf16_supported():
            raise RuntimeError(
                "train.precision is 'bf16' but this GPU has no bfloat16 support: use tf32 or fp32"
            )
    return setting


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Float32 matrix products (and cuDNN) in TF32 for ``tf32``, in full float32 otherwise.

    ``precision`` is resolved (:func:`resolve_precision`). Torch holds this setting per process;
    the previous one is restored on exit, so scoring in the same process keeps its own.
    """
    previous = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.backends.cudnn.allow_tf32 = previous[1]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` for ``bf16``; no change for ``fp32`` and ``tf32``.

    Wrap the forward pass and the loss only: the backward pass runs each operation in the type
    its forward used.
    """
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
