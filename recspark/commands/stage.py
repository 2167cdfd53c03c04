"""The shape every command has: a :class:`Stage` that runs on a config and a Spark session and
returns a :class:`StageResult`, the fields of its JSON summary line.

A command module defines one ``STAGE``: its name, the config sections it reads (what
``recspark COMMAND --help`` lists), an optional ``precheck`` of its input that runs before Spark
starts, and ``run``. :func:`recspark.cli.run_command` wraps every stage the same way (precheck,
writable-root check, Spark session, timing, the summary line), as MLflow recipes' ``BaseStep.run``
wraps ``_run``; nightly reads a stage's result back as a :class:`~recspark.ops.journal.StageReport`
(the same ``outputs``, ``counts`` and ``metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from recspark.core.config import Config


@dataclass(frozen=True)
class StageResult:
    """What a stage reports: the ``outputs``, ``counts`` and ``metrics`` of its summary line, and
    any further top-level fields a command documents (e.g. ``recommend``'s ``recommendations``).
    """

    outputs: Mapping[str, Any] = field(default_factory=dict)
    counts: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The summary line's fields, in the order ``docs/INTERFACE.md`` gives them."""
        fields = dict(self.extra)
        fields.update(
            outputs=dict(self.outputs), counts=dict(self.counts), metrics=dict(self.metrics)
        )
        return fields


@dataclass(frozen=True)
class Stage:
    """One command: its ``name``, the config ``sections`` it reads, what it does (``purpose``,
    ``example`` for ``--help``), the cheap ``precheck`` of its input that runs before Spark starts
    (None: none), and ``run``."""

    name: str
    purpose: str
    sections: tuple[str, ...]
    example: str
    run: Callable[[Config, SparkSession], StageResult]
    precheck: Callable[[Config], None] | None = None


def as_result(summary: StageResult | Mapping[str, Any]) -> StageResult:
    """A :class:`StageResult` from summary fields built as a dict (nightly's own summary): its
    ``outputs``, ``counts``, ``metrics``, and every other field, in order, as ``extra``."""
    if isinstance(summary, StageResult):
        return summary
    fields = dict(summary)
    return StageResult(
        outputs=fields.pop("outputs", {}),
        counts=fields.pop("counts", {}),
        metrics=fields.pop("metrics", {}),
        extra=fields,
    )
