"""The oracle row of ``evaluate`` on a planted data set: the generator's own truth is the upper
reference every contender is measured against (issue 33)."""

from __future__ import annotations

import json

import pytest

from recspark.core.location import Location
from tests.conftest import run_quietly, tiny_overrides

RANKING = ("ndcg_at_k", "precision_at_k", "recall_at_k")


@pytest.fixture(scope="module")
def evaluated(spark, tmp_path_factory) -> dict[str, dict]:
    """generate -> prepare -> train -> evaluate of a small planted run, every baseline on."""
    # Every baseline, ALS with one setting instead of its grid of four (a minute of this module).
    overrides = tiny_overrides(
        tmp_path_factory.mktemp("oracle-run"),
        **{"evaluate.als_ranks": "[10]", "evaluate.als_reg_params": "[0.1]"},
    )
    summaries = {}
    for command in ("generate", "prepare", "train", "evaluate"):
        status, summary = run_quietly(command, overrides)
        assert status == 0, summary
        summaries[command] = summary
    return summaries


def test_the_oracle_beats_every_model_on_planted_data(evaluated):
    summary = evaluated["evaluate"]
    oracle = summary["oracle"]
    contenders = {"model": summary["metrics"], **summary["baselines"]}
    assert {"most_popular", "als", "als_implicit", "biases"} <= set(contenders)
    for name, figures in contenders.items():
        for metric in RANKING:
            if figures[metric] is not None:
                assert oracle[metric] > figures[metric], (name, metric)
        if figures["rmse"] is not None:
            assert oracle["rmse"] < figures["rmse"], name
    # Its predictions are E[rating | planted mean]: RMSE at the generator's noise floor.
    floor = evaluated["generate"]["metrics"]["noise_floor_rmse"]
    assert oracle["rmse"] == pytest.approx(floor, abs=0.02)


def test_the_oracle_is_reported_but_never_best(evaluated):
    summary = evaluated["evaluate"]
    assert all("oracle" not in names for names in summary["best"].values())
    report = json.loads(Location(summary["outputs"]["report"]).read_text())
    assert report["oracle"]["metrics"]["ndcg_at_k"] == summary["oracle"]["ndcg_at_k"]
    table = Location(summary["outputs"]["table"]).read_text()
    assert "oracle" in table.splitlines()[0]
