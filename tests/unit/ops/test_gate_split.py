"""The nightly gate compares figures of one split: test with test, validation with validation."""

from __future__ import annotations

from recspark.core.config import NightlyConfig
from recspark.ops.gate import GateResult, judge, quality_gate, ranking_gate
from recspark.ops.history import HistoryRecord

SETTINGS = NightlyConfig.model_validate({})


def published(rmse: float, split: str | None, **metrics: float) -> HistoryRecord:
    """A published run whose gate measured ``split`` (None: a record of before test splits)."""
    gate = GateResult(passed=True, split=split, max_rmse_increase=0.05) if split else None
    return HistoryRecord(
        run_id="r1",
        run_date="2026-03-01",
        model_version="v1",
        metrics={"rmse": rmse, **metrics},
        status="published",
        gate=gate,
    )


def test_the_gate_compares_test_figures_with_the_last_runs_test_figures():
    worse = judge("rating", {"rmse": 0.99, "split": "test"}, {}, published(0.9, "test"), SETTINGS)
    assert not worse.passed and worse.split == "test"
    assert worse.baseline_rmse == 0.9 and "test RMSE 0.9900" in worse.reason
    assert worse.model_dump(mode="json")["split"] == "test"


def test_a_baseline_of_another_split_is_not_compared_with():
    # The last published run was measured on validation (an old record names no split): its
    # figure says nothing about a test figure, so only the absolute bound applies.
    old = published(0.5, None)
    gate = quality_gate(0.99, old, max_rmse_increase=0.05, split="test")
    assert gate.passed and gate.baseline_rmse is None and gate.rmse_increase is None
    assert "measured on validation, not test" in gate.reason
    bounded = quality_gate(0.99, old, max_rmse_increase=0.05, max_rmse=0.95, split="test")
    assert not bounded.passed and "test RMSE" in bounded.reason
    ranked = ranking_gate(0.1, published(0.5, "validation", ndcg_at_k=0.4), 0.02, split="test")
    assert ranked.passed and ranked.baseline_ndcg_at_k is None


def test_without_a_test_split_the_gate_reads_validation_as_before():
    gate = judge("rating", {"rmse": 0.93}, {}, published(0.9, None), SETTINGS)
    assert gate.passed and gate.split == "validation" and gate.rmse_increase is not None
    # train's validation RMSE stands in for a missing evaluate figure on validation only.
    assert judge("rating", {}, {"validation_rmse": 0.91}, None, SETTINGS).candidate_rmse == 0.91
    on_test = judge("rating", {"split": "test"}, {"validation_rmse": 0.91}, None, SETTINGS)
    assert not on_test.passed and on_test.candidate_rmse is None
