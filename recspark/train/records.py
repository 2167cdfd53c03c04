"""What the training loop hands back: one typed record per epoch and the result of a run.

:class:`EpochRecord` is one epoch's figures as the loop logs them, as checkpoints keep them and as
``metrics.json``'s history publishes them (:meth:`EpochRecord.published`, every field by its own
name); :class:`FitResult` is a run's history, its best epoch and how it ended. Records cross
process and file boundaries only as plain dicts (:meth:`EpochRecord.published`,
:meth:`EpochRecord.from_saved`), so checkpoints and metrics written before keep reading the same.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from recspark.train.objectives.base import ValidationFigures

# The validation figures of an EpochRecord, and of the train command's metrics and summary.
VALIDATION_FIELDS = ("validation_loss", "validation_rmse", "validation_mae", "validation_auc")


@dataclass
class EpochRecord:
    """One epoch's figures, as logged to stderr and kept in checkpoints.

    ``validation_loss`` is the objective's own loss (MSE for rating, the sampled softmax
    cross-entropy for ranking); ``validation_rmse`` and ``validation_mae`` are None for a ranking
    model, ``validation_auc`` is None for a rating model. :meth:`published` gives the layout of
    ``metrics.json``'s history.
    """

    epoch: int
    train_loss: float
    validation_loss: float
    validation_rmse: float | None
    validation_mae: float | None
    validation_auc: float | None
    rows: int
    seconds: float
    rows_per_second: float
    lr: float

    @classmethod
    def of_epoch(
        cls,
        *,
        epoch: int,
        train_loss: float,
        figures: ValidationFigures,
        rows: int,
        seconds: float,
        lr: float,
    ) -> EpochRecord:
        """The record of an epoch that read ``rows`` rows in ``seconds`` and validated to
        ``figures``."""
        return cls(
            epoch=epoch,
            train_loss=train_loss,
            validation_loss=figures.loss,
            validation_rmse=figures.rmse,
            validation_mae=figures.mae,
            validation_auc=figures.auc,
            rows=rows,
            seconds=seconds,
            rows_per_second=rows / seconds if seconds > 0 else math.nan,
            lr=lr,
        )

    def published(self) -> dict[str, Any]:
        """This record as ``metrics.json``'s history holds it: every field by its own name.

        A ranking record has ``validation_auc`` and null ``validation_rmse``/``validation_mae``;
        a rating record the reverse. Files written before the figures had their own names held
        a ranking model's root loss and one minus its AUC under the rating names; their readers
        (:meth:`from_saved`, :func:`recspark.evaluate.report.training_curves`) still read them.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, entry: dict[str, Any], objective: str) -> EpochRecord:
        """A record from a checkpoint's history, in this layout or the :meth:`published` one.

        Checkpoints written before the figures had their own names hold the published layout;
        ``objective`` (``model.objective``, the same for a run and its resume) says how to read it.
        """
        if "validation_auc" in entry:
            return cls(**entry)
        if objective == "ranking":
            return cls(
                **{
                    **entry,
                    "validation_rmse": None,
                    "validation_mae": None,
                    "validation_auc": 1.0 - entry["validation_mae"],
                }
            )
        return cls(**entry, validation_auc=None)


def validation_fields(figures: ValidationFigures) -> dict[str, float | None]:
    """The :data:`VALIDATION_FIELDS` of an :class:`EpochRecord` from a validation pass."""
    values = (figures.loss, figures.rmse, figures.mae, figures.auc)
    return dict(zip(VALIDATION_FIELDS, values, strict=True))


@dataclass
class FitResult:
    """History of a run, its best epoch, and whether patience ran out before ``epochs``."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    devices: list[str] = field(default_factory=list)  # one per process, rank order
    # Seconds per phase of recspark.train.phases (the leading process's); empty when not timed.
    seconds_by_phase: dict[str, float] = field(default_factory=dict)
