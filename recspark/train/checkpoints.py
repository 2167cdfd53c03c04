"""Per-epoch training checkpoints, so a killed run can resume where it stopped.

A checkpoint is one file, ``last.pt``, under ``paths.root/_checkpoints/RUN_DATE/``: the model and
optimizer state, the schedule's position, the epoch, the best validation loss and its weights, the
patience counter and the history so far. No random-generator state is kept because the loop
reseeds every epoch from ``(seed, epoch, rank)`` (see :mod:`recspark.train.loop`), which makes the
epoch number all a resumed run needs. A fingerprint of the settings and tables guards against
resuming with a different config: that is an error that says what to do. The file is written to a
temporary name and renamed, so a kill during the write leaves the previous checkpoint whole. It
holds tensors and plain data only (optimizer and schedule state dicts, history records as dicts)
and is read back with ``weights_only=True``: a checkpoint that holds anything else is refused
unread (:func:`recspark.model.saving.load_plain`).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import torch
from torch import nn

from recspark.core.errors import BadInputError, RecsparkError
from recspark.core.location import Location
from recspark.model.saving import load_plain, plain_data

CHECKPOINT_FILE = "last.pt"

log = logging.getLogger(__name__)


class Stateful(Protocol):
    """What a checkpoint saves and restores besides the model: an optimizer or a schedule."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


@dataclass
class Checkpoint:
    """Everything :func:`recspark.train.loop.fit` needs to carry on after ``epoch``."""

    fingerprint: str = ""
    epoch: int = 0
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: list[dict] = field(default_factory=list)
    schedule: dict[str, Any] = field(default_factory=dict)
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    waited: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(folder: str | os.PathLike | Location, checkpoint: Checkpoint) -> Location:
    """Write ``folder/last.pt`` atomically and return its path."""
    target = Location(folder) / CHECKPOINT_FILE
    buffer = io.BytesIO()
    torch.save(plain_data(vars(checkpoint), "the checkpoint"), buffer)
    target.write_bytes(buffer.getvalue())
    return target


def load_checkpoint(folder: str | os.PathLike, fingerprint: str) -> Checkpoint | None:
    """The checkpoint under ``folder``, or None when there is none.

    Raises
    ------
    RecsparkError
        When the checkpoint was written by a run with other settings or other tables.
    BadInputError
        When it is not a checkpoint recspark wrote; in particular when it holds code or objects
        that are not plain data, which is refused unread.
    """
    target = Location(folder) / CHECKPOINT_FILE
    if not target.exists():
        return None
    advice = f"delete {target}, or set train.resume=false to start over (which replaces it)"
    payload = load_plain(target, str(target), "recspark checkpoint", advice)
    known = {f.name for f in fields(Checkpoint)}
    if not isinstance(payload, dict) or not set(payload) <= known:
        raise BadInputError(f"{target} is not a recspark checkpoint: {advice}")
    checkpoint = Checkpoint(**payload)
    if checkpoint.fingerprint != fingerprint:
        raise RecsparkError(
            f"the checkpoint {target} was written by a run with other model/train settings or "
            "other prepared tables: resume with the same config, or set train.resume=false to "
            "start over (which replaces it)"
        )
    return checkpoint


def resume_state(
    folder: str | None,
    fingerprint: str,
    *,
    resume: bool,
    model: nn.Module,
    optimizer: Stateful,
    schedule: Stateful,
    announce: bool = True,
) -> Checkpoint:
    """The state a run starts from: the checkpoint under ``folder`` restored into ``model``,
    ``optimizer`` and ``schedule`` when ``resume`` asks for it and there is one, else a fresh one.

    ``announce`` logs which it was (the leading process of a data-parallel run says it once).
    """
    if not resume or folder is None:
        return Checkpoint(fingerprint=fingerprint)
    saved = load_checkpoint(folder, fingerprint)
    if saved is None:
        if announce:
            log.info("train.resume: no checkpoint under %s; starting from epoch 1", folder)
        return Checkpoint(fingerprint=fingerprint)
    model.load_state_dict(saved.model)
    optimizer.load_state_dict(saved.optimizer)
    schedule.load_state_dict(saved.schedule)
    if announce:
        log.info("resuming after epoch %d from %s", saved.epoch, folder)
    return saved


def capture(
    state: Checkpoint,
    *,
    model: nn.Module,
    optimizer: Stateful,
    schedule: Stateful,
    history: Sequence[dict[str, Any]],
) -> Checkpoint:
    """``state`` holding the current weights, optimizer and schedule state, and ``history``
    (plain dicts, as :meth:`~recspark.train.records.EpochRecord.published` gives them)."""
    state.model = model.state_dict()
    state.optimizer = optimizer.state_dict()
    state.schedule = schedule.state_dict()
    state.history = list(history)
    return state


def remove_checkpoints(folder: str | os.PathLike) -> None:
    """Delete a run's checkpoints once its model is published."""
    Location(folder).rmtree()
