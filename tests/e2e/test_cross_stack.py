"""A model trained on one stack scores on the other (README, "Two stacks").

The pinned stack (``.venv``: pyspark 4.0, pyarrow 14, numpy 1, the petastorm feed) and the
current one (``.venv-current``: pyspark 4.2, pyarrow >= 18, numpy 2, the arrow feed) share
``paths.root``'s layout. This test runs in whichever venv pytest runs in and drives the other
stack's ``recspark`` as a subprocess: the other stack prepares and trains, this one scores and
evaluates; then this one trains and the other scores. It skips when the other venv is absent
(``make setup STACK=...`` builds it; CI builds both and runs this on the current stack).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pyspark
import pytest

from recspark.cli import main
from tests.conftest import REPO

THIS_LINE = ".".join(pyspark.__version__.split(".")[:2])
OTHER = REPO / (".venv-current" if THIS_LINE == "4.0" else ".venv")
pytestmark = pytest.mark.skipif(
    not (OTHER / "bin" / "recspark").exists(),
    reason=f"the other stack's venv {OTHER.name} is not set up (make setup STACK=...)",
)
SMALL = {
    "synthetic.users": 300,
    "synthetic.items": 120,
    "synthetic.ratings": 12000,
    "train.epochs": 2,
    "run_date": "2026-04-01",
    "spark.master": "local[1]",
}


def settings(root: Path, **more) -> list[str]:
    values = {"paths.root": root, **SMALL, **more}
    return [part for key, value in values.items() for part in ("--set", f"{key}={value}")]


def other_stack(command: str, root: Path) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYSPARK", "SPARK_HOME", "PYTEST", "VIRTUAL_ENV"))
    }
    done = subprocess.run(
        [str(OTHER / "bin" / "recspark"), command, *settings(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root.parent,
        timeout=600,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, (summary, done.stderr[-3000:])
    return summary


def this_stack(command: str, root: Path, capsys, **more) -> dict:
    status = main([command, *settings(root, **more)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0, summary
    return summary


def test_a_model_trained_on_either_stack_scores_on_the_other(spark, tmp_path, capsys):
    there = tmp_path / "trained-there"
    for command in ("generate", "prepare", "train"):
        other_stack(command, there)
    scored = this_stack("score", there, capsys)
    # One baseline: what is checked is the model read across stacks, not the baselines (the
    # default grid of ALS fits took 100 of this test's 290 s).
    evaluated = this_stack("evaluate", there, capsys, **{"evaluate.baselines": "[global_mean]"})
    assert scored["counts"]["users"] > 250 and evaluated["metrics"]["rmse"] < 1.2
    table = pd.read_parquet(scored["outputs"]["partition"])
    assert len(table) == scored["counts"]["rows"] and table["rank"].max() == 10

    here = tmp_path / "trained-here"
    for command in ("generate", "prepare", "train"):
        this_stack(command, here, capsys)
    summary = other_stack("score", here)
    assert summary["counts"]["users"] > 250
