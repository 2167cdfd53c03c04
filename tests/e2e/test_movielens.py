"""MovieLens: the side-information readers (known answers on tiny tables) and issue 4's accuracy.

The accuracy test trains the shipped configs through the train command on u1.base -> u1.test as
the shipped config prepares it (``split.method: given``; once for the session, ``ml100k_u1`` in
``tests/conftest.py``). It skips when MovieLens 100K is absent (the ``ml100k`` fixture):
its licence forbids shipping a copy. Mean and spread over seeds: benchmarks/movielens_accuracy.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recspark.core.config import load_config
from recspark.core.location import Location
from tests.conftest import REPO, copy_prepared


def _overrides(root: Path, ml100k: Path) -> list[str]:
    return [
        f"paths.root={root}",
        f"input.path={ml100k / 'u1.base'}",
        f"input.validation_path={ml100k / 'u1.test'}",
        "input.test_path=null",  # u1.test as validation: the protocol the marks below were set on
    ]


@pytest.mark.slow
def test_ml100k_u1_accuracy_of_the_shipped_configs(spark, ml100k, ml100k_u1, tmp_path):
    """The shipped model (a side-information dot_bias with a ranking head, blended 70/30 with an
    item autoencoder) <= 0.892, the issue's mark, ahead of the dot_bias model alone, and published
    as one user table. It trains as shipped but for the paths, on a copy of the session's
    prepared u1 (0.8867 at seed 42; over seeds 42-44 benchmarks/movielens_accuracy.py measured
    0.8862 +- 0.0005, the dot_bias model alone 0.8933).
    """
    from recspark.commands import train

    shipped = REPO / "conf" / "movielens-100k.yaml"
    side = [f"model.side_info.path={ml100k}"]
    prepared_root, prepared = ml100k_u1
    root = copy_prepared(prepared_root, tmp_path / "ml100k")
    assert prepared["counts"]["train"] == 80000
    assert prepared["counts"]["validation"] + prepared["counts"]["cold_start"] == 20000

    best = train.run(load_config(shipped, [*_overrides(root, ml100k), *side]), spark).summary()
    assert best["metrics"]["validation_rmse"] <= 0.892
    assert best["metrics"]["validation_auc"] > 0.8  # the head learnt which films users pick
    blend = json.loads(Location(best["outputs"]["metrics"]).read_bytes())["blend"]
    assert blend["main_validation_rmse"] <= 0.897  # the dot_bias model alone
    assert blend["partner_validation_rmse"] <= 0.93  # the autoencoder alone
    assert best["metrics"]["validation_rmse"] < blend["main_validation_rmse"] - 0.003
    factors = pd.read_parquet(best["outputs"]["user_factors"])
    assert len(factors) == 943  # the published user table holds every user's effective row
