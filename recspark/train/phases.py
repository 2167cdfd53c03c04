"""Where a training run's seconds go: a clock that adds wall time up by phase.

The train job reports ``seconds_by_phase`` (``metrics.json`` and the summary line) from one
:class:`PhaseClock`: ``feed`` (the step loop waiting for its next batch: reading, shuffling and
casting that the read-ahead thread did not hide), ``step`` (forward, backward, penalty, optimizer
and schedule), ``validation`` (every validation pass: the starting weights', each epoch's and the
publication gate's baseline), ``checkpoint`` (each epoch's ``last.pt``), ``write`` (publishing
``models/RUN_DATE``) and ``other`` (the rest of the command: reading the manifest, building the
model and objective, setting up the run). Plain wall-clock sums, no torch, no Spark.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["PHASES", "PhaseClock"]

PHASES = ("feed", "step", "validation", "checkpoint", "write", "other")

T = TypeVar("T")


@dataclass
class PhaseClock:
    """Seconds per phase of :data:`PHASES`, added up as a run goes."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    started: float = field(default_factory=time.perf_counter)  # when the run began

    def add(self, phase: str, seconds: float) -> None:
        """Count ``seconds`` more to ``phase``."""
        if phase not in self.seconds:
            raise ValueError(f"unknown phase {phase!r}; the phases are {PHASES}")
        self.seconds[phase] += seconds

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        """Count the wall time of the ``with`` block to ``phase``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started)

    def waited(self, items: Iterable[T], phase: str = "feed") -> Iterator[T]:
        """``items``, counting the time spent waiting for each next one to ``phase``."""
        iterator = iter(items)
        while True:
            started = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self.add(phase, time.perf_counter() - started)
                return
            self.add(phase, time.perf_counter() - started)
            yield item

    def merge(self, other: dict[str, float]) -> None:
        """Add another clock's seconds (a fit's) to these."""
        for phase, seconds in other.items():
            self.add(phase, seconds)

    def report(self) -> dict[str, float]:
        """The seconds per phase to 0.01 s, ``other`` holding as well whatever no phase counted
        since the clock started."""
        seconds = dict(self.seconds)
        elapsed = time.perf_counter() - self.started
        seconds["other"] += max(0.0, elapsed - sum(seconds.values()))
        return {phase: round(value, 2) for phase, value in seconds.items()}
