"""The publication gate: whether a trained model may be published (:func:`publication_refusal`).

A run that did not learn is not published: its best validation loss must beat that of its own
starting weights (:func:`starting_figures`), and a rating model's validation RMSE that of
predicting the train mean (:func:`global_mean_rmse`), unless ``train.allow_worse``. The figures
travel as :class:`ValidationScores`, named as ``metrics.json`` names them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace

import pyarrow.dataset as pads
import torch
from torch import nn

from recspark.core.constants import RATING
from recspark.core.location import Location
from recspark.train.objectives.base import Objective, RunContext
from recspark.train.records import FitResult, validation_fields
from recspark.train.validation import HeldSplit, evaluate_split

# How much lower a validation loss must be to count as an improvement (as in the loop).
IMPROVEMENT = 1e-7


@dataclass(frozen=True)
class ValidationScores:
    """A model's validation figures: the objective's loss, and the RMSE and MAE of a rating model
    or the sampled AUC of a ranking one (None where the objective computes none)."""

    validation_loss: float | None = None
    validation_rmse: float | None = None
    validation_mae: float | None = None
    validation_auc: float | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, float | None]) -> ValidationScores:
        """From the ``validation_*`` fields of an epoch record or a validation pass."""
        return cls(**{name: fields.get(name) for name in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)

    def measured(self) -> Iterator[tuple[str, float]]:
        """``(name, value)`` of every figure that was computed."""
        return ((name, value) for name, value in self.as_dict().items() if value is not None)

    def with_figures_of(self, other: ValidationScores) -> ValidationScores:
        """These scores with every figure ``other`` measured, its loss excepted (a blend keeps
        its main model's loss, which publication checks, and takes its other figures)."""
        taken = {name: value for name, value in other.measured() if name != "validation_loss"}
        return replace(self, **taken)


def starting_figures(
    model: nn.Module,
    prepared: Location,
    device: torch.device,
    objective: Objective,
    seed: int,
    *,
    precision: str = "auto",
    feed: str = "auto",
    held: HeldSplit | None = None,
) -> ValidationScores:
    """The validation figures of ``model``'s weights before the first epoch (fresh or warm
    started), at ``precision`` (``train.precision``): what the run must improve on to be
    published. The model is left on the CPU; the batches read are kept in ``held`` if given
    (:class:`~recspark.train.validation.HeldSplit`), for the run's own passes."""
    context = RunContext(
        n_users=getattr(model, "n_users", None), n_items=getattr(model, "n_items", None), seed=seed
    )
    figures = evaluate_split(
        model,
        str(prepared / "validation"),
        device,
        objective,
        context,
        precision=precision,
        feed=feed,
        held=held,
    )
    model.cpu()
    return ValidationScores.from_fields(validation_fields(figures))


def best_figures(result: FitResult, start: ValidationScores) -> ValidationScores:
    """The validation figures of the best epoch; ``start`` (the starting weights') when no epoch
    improved on infinity, which only a resumed run that had none left could do."""
    if result.best_epoch:
        best = result.history[result.best_epoch - 1]
        return ValidationScores.from_fields(vars(best))
    return start


def global_mean_rmse(prepared: Location | str, mean: float | None = None) -> float:
    """The validation RMSE of predicting one rating for every row: ``mean``, else the mean rating
    of the train split (the ``global_mean`` baseline of ``evaluate``). Read with pyarrow, one
    batch at a time."""

    def ratings(split: str) -> Iterator:
        folder = Location(prepared) / split
        source = pads.dataset(folder.fs_path, filesystem=folder.filesystem, format="parquet")
        for batch in source.to_batches(columns=[RATING]):
            yield batch.column(0).to_numpy(zero_copy_only=False).astype("float64")

    if mean is None:
        total = rows = 0.0
        for values in ratings("train"):
            total, rows = total + float(values.sum()), rows + len(values)
        mean = total / rows if rows else 0.0
    squared = rows = 0.0
    for values in ratings("validation"):
        squared, rows = squared + float(((values - mean) ** 2).sum()), rows + len(values)
    return math.sqrt(squared / rows) if rows else math.nan


def publication_refusal(
    objective: str,
    best: ValidationScores,
    start: ValidationScores,
    baseline_rmse: float | None,
) -> str | None:
    """Why a trained model must not be published, or None when it may.

    Parameters
    ----------
    objective
        ``model.objective``.
    best, start
        The validation figures of the best epoch and of the starting weights.
    baseline_rmse
        The validation RMSE of predicting the train mean (:func:`global_mean_rmse`); rating
        models only.

    Every run must lower the objective's own validation loss below that of its starting weights
    (MSE for rating, the sampled softmax loss for ranking). A rating model must also predict
    better than the global mean; a ranking model's scores are not ratings, so that rule does not
    apply to it.
    """
    best_loss, start_loss = best.validation_loss, start.validation_loss
    if not (
        best_loss is not None
        and math.isfinite(best_loss)
        and start_loss is not None
        and best_loss < start_loss - IMPROVEMENT
    ):
        shown = best_loss if best_loss is None else format(best_loss, ".6g")
        return (
            f"no epoch improved on the validation loss of its starting weights ({start_loss:.6g}; "
            f"the best epoch's: {shown})"
        )
    rmse = best.validation_rmse
    if objective == "rating" and baseline_rmse is not None and rmse is not None:
        if rmse > baseline_rmse:
            return (
                f"its validation RMSE {rmse:.4f} is worse than predicting the train mean rating "
                f"for every row ({baseline_rmse:.4f})"
            )
    return None
