"""Models that cannot hurt: files that run code are refused, stale models are not used.

A ``model.pt`` or checkpoint is read with ``torch.load(weights_only=True)``: one that holds a
pickled object whose ``__reduce__`` would run code is refused with a clear error before any of it
runs (the planted hooks here would create a marker file). What recspark writes holds tensors and
plain data only, so its own files load that way. And a model is used only with the id maps it was
trained on: ``score``, ``evaluate`` and ``recommend`` refuse a prepared run that ``prepare`` wrote
again since, before any Spark job. (The train job's own rules, that an untrained model is never
published and a warm start checks its model's id maps, are in tests/e2e/test_train_job.py.)
"""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO

import pytest
import torch

from recspark.cli import main
from recspark.train.checkpoints import Checkpoint, save_checkpoint
from tests.e2e.test_score_job import RUN_DATE, plant, spark_jobs, write_hand_made_manifest
from tests.e2e.test_train_job import train
from tests.unit.model.test_model_safety import REFUSED, TouchHook, small_model
from tests.unit.train.test_training import write_prepared


def test_train_resume_refuses_a_planted_checkpoint_through_the_cli(spark, tmp_path):
    root = tmp_path / "root"
    write_prepared(root / "prepared" / RUN_DATE, count=3000)
    model, _ = small_model()
    folder = root / "_checkpoints" / RUN_DATE
    save_checkpoint(folder, Checkpoint(fingerprint="f", epoch=1, model=model.state_dict()))
    marker = tmp_path / "ran"
    payload = torch.load(folder / "last.pt", weights_only=True)
    payload["schedule"] = {"last_epoch": TouchHook(marker)}
    torch.save(payload, folder / "last.pt")
    status, summary = train(root, **{"train.resume": "true", "train.epochs": 2})
    assert status == 1 and summary["status"] == "error", summary
    assert REFUSED in summary["error"] and "last.pt" in summary["error"]
    assert not marker.exists()
    assert not (root / "models" / RUN_DATE).exists()


def _run(command: str, overrides: list[str]) -> tuple[int, dict]:
    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main([command, *[part for item in overrides for part in ("--set", item)]])
    return status, json.loads(buffer.getvalue().strip().splitlines()[-1])


COMMANDS = {
    "score": [],
    "evaluate": ["evaluate.baselines=[global_mean]"],
    "recommend": ["recommend.similar_to=100", "recommend.min_item_ratings=0"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_that_uses_a_model_refuses_id_maps_prepared_again(spark, tmp_path, command):
    """prepare re-run for the model's date on other data (same sizes here): exit 1 with what to
    do, before any Spark job; the same model with its own id maps back runs."""
    root = plant(tmp_path / "root", input_fingerprint="day-one")
    settings = [f"paths.root={root}", f"run_date={RUN_DATE}", "spark.conf={}", *COMMANDS[command]]
    write_hand_made_manifest(root, 5, 6, "other-data")
    before = spark_jobs(spark)
    status, summary = _run(command, settings)
    assert status == 1 and summary["status"] == "error", summary
    assert f"the model for {RUN_DATE} was trained on other id maps" in summary["error"]
    assert "re-run `recspark train`" in summary["error"]
    assert spark_jobs(spark) == before
    write_hand_made_manifest(root, 5, 6, "day-one")
    if command == "recommend":  # the quickest of the three to run through
        status, summary = _run(command, settings)
        assert status == 0, summary
