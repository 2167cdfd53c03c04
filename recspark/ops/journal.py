"""nightly's journal of the run in flight: ``<paths.root>/_nightly/inflight.json``.

The journal says which stage a run has reached, which of the date's outputs it set aside, what
each stage reported and the gate's decision. It is rewritten atomically (a temporary file, flushed,
renamed into place) before every step, so a run that dies at any moment leaves a whole journal
from which the next run recovers it (:mod:`recspark.ops.nightly`). :class:`NightlyState` names the
files nightly keeps under ``_nightly/``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recspark.core.errors import BadInputError
from recspark.core.location import Location
from recspark.core.storage import Layout, publish_token
from recspark.ops.gate import GateResult
from recspark.serve.tables import OutputTable


class StageReport(BaseModel):
    """What one stage's summary reported: its ``outputs``, ``counts`` and ``metrics``."""

    model_config = ConfigDict(extra="ignore")

    outputs: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)


class NightlyJournal(BaseModel):
    """The run in flight, as ``_nightly/inflight.json`` holds it."""

    # A journal left by an older version must still be recoverable.
    model_config = ConfigDict(extra="allow")

    run_id: str
    run_date: str
    stage: str  # setting-aside, prepare, train, evaluate, gate, score or commit
    started_at: str | None = None
    host: str | None = None
    pid: int | None = None
    input_fingerprint: str | None = None
    settings_digest: str | None = None
    warm_start: bool | None = None
    # Which of the date's outputs existed and were (to be) set aside, by kind.
    stashed: dict[str, bool] = Field(default_factory=dict)
    # (device, inode) of the recommendations partition before the run: score's publish changes it.
    # The partition's publish token (older journals hold a [device, inode] pair).
    partition_before: str | list[int] | None = None
    summaries: dict[str, StageReport] = Field(default_factory=dict)
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    gate: GateResult | None = None


class NightlyState:
    """Where nightly keeps its own bookkeeping under ``<root>/_nightly``."""

    def __init__(self, layout: Layout, table: OutputTable | None = None):
        # The recommendations table score publishes to (its format decides how a publish is
        # recognised and how old dates go).
        self.table = table if table is not None else OutputTable(layout.recommendations)
        self.base = layout.root / "_nightly"
        self.lock = self.base / "lock"
        self.journal = self.base / "inflight.json"
        self.stash_root = self.base / "stash"
        self.rejected = self.base / "rejected"

    def stash(self, run_id: str) -> Location:
        return self.stash_root / run_id

    def rejected_run(self, run_date: str, run_id: str) -> Location:
        return self.rejected / f"{run_date}_{run_id}"

    def write_journal(self, journal: NightlyJournal) -> None:
        """Replace the journal whole: a reader (the next run) sees the old one or the new one."""
        # fallback=str: a stage may report a value JSON has no type for, as the summary line does.
        data = journal.model_dump(mode="json", fallback=str)
        self.journal.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def read_journal(self) -> NightlyJournal | None:
        """The journal a run left, or None when no run is in flight."""
        if not self.journal.exists():
            return None
        try:
            return NightlyJournal.model_validate_json(self.journal.read_text(encoding="utf-8"))
        except ValidationError as error:
            raise BadInputError(
                f"{self.journal} is not a nightly journal ({error.errors()[0]['msg']}): a run "
                "died and its journal cannot be read, so it cannot be rolled back. Check the "
                f"date's outputs against {self.stash_root}, then move the journal aside"
            ) from None

    def drop_journal(self) -> None:
        self.journal.unlink()

    def busy(self) -> bool:
        """Whether a run holds the lock record or left a journal: the next run then reports the
        holder, or recovers the dead run first, before it looks at today's input."""
        held = self.lock.exists() and self.lock.read_text().strip()
        return bool(held) or self.journal.exists()


def folder_identity(path: Location) -> str | None:
    """The publish token of a folder (:func:`recspark.core.storage.publish_token`)."""
    return publish_token(path)
