"""The quality gate: may a candidate model be published, judged against the last published run?

A rating model is judged by its RMSE (lower is better): it may exceed the baseline's by at most
``nightly.max_rmse_increase`` and, when set, stay under ``nightly.max_rmse``. A ranking model
(``model.objective: ranking``) is judged by its NDCG@k (higher is better), since its scores are not
ratings: it may fall short of the baseline's by at most ``nightly.max_ndcg_decrease`` and, when
set, stay above ``nightly.min_ndcg``. Either gate gives a :class:`GateResult`, which the journal,
the history record and the summary line carry as it is.

The figures are evaluate's, on the split it measured (``split``): the test split when the run holds
one out, which nothing in training read, else validation, the split that also chose the model. A
baseline measured on the other split (a run of before the test split) is not compared with: the
gate then applies its absolute bound alone and says so.

The gate reads its baseline as a :class:`Baseline`, the three figures it needs, not as the history
record that holds them: :mod:`recspark.ops.history` stores a :class:`GateResult` in each record, so
the history builds on the gate and the gate names nothing of the history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from recspark.core.config import NightlyConfig

RMSE = "rmse"
NDCG = "ndcg_at_k"
_FIGURES = {
    RMSE: ("candidate_rmse", "baseline_rmse", "rmse_increase", "max_rmse_increase", "max_rmse"),
    NDCG: (
        "candidate_ndcg_at_k",
        "baseline_ndcg_at_k",
        "ndcg_at_k_decrease",
        "max_ndcg_at_k_decrease",
        "min_ndcg",
    ),
}


class _Rule(NamedTuple):
    """One gate: the figure it reads, how it names it, which way is better, its settings."""

    key: str
    label: str
    higher_is_better: bool
    max_worse_setting: str
    bound_setting: str


_RATING = _Rule(RMSE, "RMSE", False, "nightly.max_rmse_increase", "nightly.max_rmse")
_RANKING = _Rule(NDCG, "NDCG@k", True, "nightly.max_ndcg_decrease", "nightly.min_ndcg")
VALIDATION = "validation"


class Baseline(Protocol):
    """What the gate reads of the last published run: a
    :class:`~recspark.ops.history.HistoryRecord` is one."""

    @property
    def run_date(self) -> str: ...

    @property
    def model_version(self) -> str | None: ...

    @property
    def metrics(self) -> Mapping[str, bool | int | float | None]: ...

    @property
    def gate(self) -> GateResult | None: ...


class GateResult(BaseModel):
    """The gate's decision and the figures it used.

    Every figure of both gates is a field: the ones a gate does not use are None, never absent.
    The field names are the keys of the ``gate`` object in the journal, the history records and
    the summary line, which hold the figures of the gate that ran only.
    """

    # Read back from journals and history records written by older versions too.
    model_config = ConfigDict(extra="ignore")

    passed: bool
    reason: str = ""
    # The split the candidate's figure was measured on; None in records of before the test
    # split, whose figures were all validation figures.
    split: str | None = None
    baseline_run_date: str | None = None
    baseline_model_version: str | None = None
    # The rating gate's figures.
    candidate_rmse: float | None = None
    baseline_rmse: float | None = None
    rmse_increase: float | None = None
    max_rmse_increase: float | None = None
    max_rmse: float | None = None
    # The ranking gate's figures.
    candidate_ndcg_at_k: float | None = None
    baseline_ndcg_at_k: float | None = None
    ndcg_at_k_decrease: float | None = None
    max_ndcg_at_k_decrease: float | None = None
    min_ndcg: float | None = None

    @property
    def metric(self) -> str | None:
        """The gated figure, ``rmse`` or ``ndcg_at_k`` (each gate sets its ``max_*``); None for a
        partial record."""
        if self.max_ndcg_at_k_decrease is not None:
            return NDCG
        if self.max_rmse_increase is not None:
            return RMSE
        return None

    def figures(self) -> dict[str, float | None]:
        """The baseline and the change of the gated figure, as the summary's metrics name them."""
        if self.metric == NDCG:
            return {
                "baseline_ndcg_at_k": self.baseline_ndcg_at_k,
                "ndcg_at_k_decrease": self.ndcg_at_k_decrease,
            }
        return {"baseline_rmse": self.baseline_rmse, "rmse_increase": self.rmse_increase}

    @model_serializer(mode="wrap")
    def _gated_figures_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # On disk and in the summary a gate object holds its own gate's figures, as it always has.
        data = handler(self)
        for metric, keys in _FIGURES.items():
            if metric != self.metric:
                for key in keys:
                    data.pop(key, None)
        return data


def quality_gate(
    candidate_rmse: float | None,
    baseline: Baseline | None,
    max_rmse_increase: float,
    max_rmse: float | None = None,
    split: str = VALIDATION,
) -> GateResult:
    """Decide whether a rating model may be published, by its RMSE.

    Parameters
    ----------
    candidate_rmse
        The candidate's RMSE, on ``split``.
    baseline
        The history record of the last published run before this date, or None on a first run.
    max_rmse_increase
        How much worse than the baseline's RMSE the candidate may be.
    max_rmse
        An absolute ceiling, applied with or without a baseline (None: none).
    split
        ``test`` or ``validation``: a baseline measured on another split is not compared with.

    Returns
    -------
    GateResult
        ``passed``, ``reason`` and the figures the decision used.
    """
    return _gate(
        _RATING, candidate_rmse, baseline, max_worse=max_rmse_increase, bound=max_rmse, split=split
    )


def ranking_gate(
    candidate_ndcg: float | None,
    baseline: Baseline | None,
    max_ndcg_decrease: float,
    min_ndcg: float | None = None,
    split: str = VALIDATION,
) -> GateResult:
    """Decide whether a ranking model (``model.objective: ranking``) may be published, by its
    NDCG@k on ``split``: its scores are not ratings, so RMSE says nothing about it."""
    return _gate(
        _RANKING, candidate_ndcg, baseline, max_worse=max_ndcg_decrease, bound=min_ndcg, split=split
    )


def judge(
    objective: str,
    evaluated: Mapping[str, Any],
    trained: Mapping[str, Any],
    baseline: Baseline | None,
    settings: NightlyConfig,
) -> GateResult:
    """The gate for a candidate of ``model.objective``, from its stages' summary metrics.

    Parameters
    ----------
    objective
        ``model.objective``: ``rating`` or ``ranking``.
    evaluated, trained
        The ``metrics`` of evaluate's and train's summaries (evaluate's figures are computed in
        Spark on the saved model, on the split its ``split`` names; train's validation RMSE stands
        in when evaluate, measuring on validation, has none).
    baseline
        The history record of the last published run, or None.
    settings
        ``nightly.*``: the gate's thresholds.
    """
    split = evaluated.get("split") or VALIDATION
    if objective == "ranking":
        return ranking_gate(
            evaluated.get(NDCG), baseline, settings.max_ndcg_decrease, settings.min_ndcg, split
        )
    candidate = evaluated.get(RMSE)
    if candidate is None and split == VALIDATION:
        candidate = trained.get("validation_rmse")
    return quality_gate(candidate, baseline, settings.max_rmse_increase, settings.max_rmse, split)


def baseline_split(baseline: Baseline) -> str:
    """The split the baseline's figures were measured on: its gate's, or validation for a run
    of before the test split (its gate names none)."""
    gate = baseline.gate
    return (gate.split if gate is not None else None) or VALIDATION


def _gate(
    rule: _Rule,
    candidate: float | None,
    baseline: Baseline | None,
    *,
    max_worse: float,
    bound: float | None,
    split: str = VALIDATION,
) -> GateResult:
    key, name, higher_is_better, max_worse_setting, bound_setting = rule
    label = f"{split} {name}"
    change = f"{key}_{'decrease' if higher_is_better else 'increase'}"
    # Only a figure of the same split is compared with: test and validation figures differ.
    comparable = baseline is not None and baseline_split(baseline) == split
    base = baseline.metrics.get(key) if baseline is not None and comparable else None
    figures: dict[str, Any] = {
        "split": split,
        f"candidate_{key}": candidate,
        "baseline_run_date": baseline.run_date if baseline is not None else None,
        "baseline_model_version": baseline.model_version if baseline is not None else None,
        f"baseline_{key}": base,
        change: None,
        f"max_{change}": max_worse,
        bound_setting.split(".")[-1]: bound,
    }
    if candidate is None or not math.isfinite(candidate):
        return GateResult(passed=False, reason=f"the candidate's {label} is {candidate}", **figures)
    sign = -1.0 if higher_is_better else 1.0
    worse = sign * (candidate - base) if base is not None else None
    figures[change] = worse
    if bound is not None and sign * (candidate - bound) > 0:
        side = "below" if higher_is_better else "above"
        reason = f"{label} {candidate:.4f} is {side} {bound_setting}={bound}"
        return GateResult(passed=False, reason=reason, **figures)
    if worse is not None and worse > max_worse:
        reason = (
            f"{label} {candidate:.4f} is {worse:.4f} worse than the last published run's "
            f"{base:.4f} ({figures['baseline_run_date']}, model "
            f"{figures['baseline_model_version']}), more than {max_worse_setting}={max_worse}"
        )
        return GateResult(passed=False, reason=reason, **figures)
    if baseline is not None and not comparable:
        reason = (
            f"the last published run ({figures['baseline_run_date']}) was measured on "
            f"{baseline_split(baseline)}, not {split}: no baseline to compare with"
        )
    elif base is None:
        reason = "first published run: no baseline to compare with"
    else:
        reason = f"within {max_worse_setting} of {figures['baseline_run_date']}"
    return GateResult(passed=True, reason=reason, **figures)
