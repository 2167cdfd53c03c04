"""nightly: the gate, the lock, history, retention and crash recovery, then the unit end to end.

The end-to-end story runs on a planted low-rank world that grows: day 1 sees part of its users and
items, day 2 all of them. A first attempt at day 2 is killed with SIGKILL in a child process right
after its model was published; the next run recovers it, warm-starts from day 1, and publishes.
A re-run of day 2 is skipped, and day 3's corrupted input (ratings shuffled across rows) is
stopped by the quality gate while day 2 stays published.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recspark.cli import main
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.ops.history import latest_record, read_history
from recspark.ops.locking import RunLock
from tests.conftest import REPO, tiny_overrides
from tests.unit.ops.test_nightly import DAY1, DAY2, DAY3


def planted_ratings(users: int, items: int, per_user: int, seed: int = 3) -> pd.DataFrame:
    """Ratings of a rank-4 world with biases and noise 0.3, on the 1..5 scale."""
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(0, 0.7, (users, 4))
    item_factors = rng.normal(0, 0.7, (items, 4))
    user_bias, item_bias = rng.normal(0, 0.4, users), rng.normal(0, 0.4, items)
    user_ids = np.repeat(np.arange(users), per_user)
    item_ids = np.concatenate([rng.choice(items, per_user, replace=False) for _ in range(users)])
    mean = 3.4 + user_bias[user_ids] + item_bias[item_ids]
    mean += (user_factors[user_ids] * item_factors[item_ids]).sum(axis=1)
    rating = np.clip(np.round(mean + rng.normal(0, 0.3, len(mean))), 1, 5)
    return pd.DataFrame(
        {
            "user_id": user_ids.astype("int64"),
            "item_id": item_ids.astype("int64"),
            "rating": rating.astype("float32"),
            "timestamp": np.arange(len(mean), dtype="int64") + 1_700_000_000,
        }
    )


def write_input(frame: pd.DataFrame, folder: Path) -> str:
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "part-0.parquet", index=False)
    return str(folder)


def nightly_overrides(root: Path, run_date: str, input_path: str, **extra: object) -> list[str]:
    values = {
        "run_date": run_date,
        "input.format": "parquet",
        "input.path": input_path,
        "train.epochs": 5,
        "train.patience": 1,
        "train.reader_workers": 1,
        "evaluate.baselines": "[]",
        "nightly.keep_runs": 3,
        **extra,
    }
    return tiny_overrides(root, **values)


def as_arguments(overrides: list[str]) -> list[str]:
    return [part for item in overrides for part in ("--set", item)]


def run_nightly(overrides: list[str], capsys) -> tuple[int, dict]:
    status = main(["nightly", *as_arguments(overrides)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return status, summary


# -- config -------------------------------------------------------------------------------------


# -- the quality gate ---------------------------------------------------------------------------


# -- the lock -----------------------------------------------------------------------------------


# -- history and retention ----------------------------------------------------------------------


# -- recovery of a run that died, without Spark --------------------------------------------------


# -- the unit end to end ------------------------------------------------------------------------

# A forced re-run of a published date, killed by SIGKILL as its first stage starts: by then it has
# set the date's published model, tables and report aside. No Spark is needed to get there, so the
# child starts no JVM.
KILLED_AT_PREPARE = """
import os, signal, sys
from recspark.commands import nightly, prepare
from recspark.core.config import load_config
prepare.run = lambda config, spark: os.kill(os.getpid(), signal.SIGKILL)
nightly.run(load_config(None, sys.argv[1:]), None)
"""


@pytest.fixture(scope="module")
def story(spark, tmp_path_factory):
    """Day 1; a re-run of day 1 killed; day 2 recovers it and publishes; day 2 again; day 3."""
    base = tmp_path_factory.mktemp("nightly")
    root = base / "root"
    world = planted_ratings(users=240, items=90, per_user=25)
    day1 = world[(world.user_id < 200) & (world.item_id < 75)]
    corrupted = world.assign(rating=np.random.default_rng(0).permutation(world.rating.to_numpy()))
    inputs = {
        DAY1: write_input(day1, base / "day1"),
        DAY2: write_input(world, base / "day2"),
        DAY3: write_input(corrupted, base / "day3"),
    }
    results = {"root": root, "inputs": inputs}

    def run(run_date: str) -> tuple[int, dict]:
        # capsys is function-scoped, so the module fixture captures the summary line itself.
        buffer = StringIO()
        with redirect_stdout(buffer):
            status = main(
                ["nightly", *as_arguments(nightly_overrides(root, run_date, inputs[run_date]))]
            )
        return status, json.loads(buffer.getvalue().strip().splitlines()[-1])

    results["day1"] = run(DAY1)
    results["day1_partition"] = pd.read_parquet(Layout(root).recommendations_partition(DAY1))

    overrides = nightly_overrides(root, DAY1, inputs[DAY1], **{"nightly.force": "true"})
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_PREPARE, *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    layout = Layout(root)
    journal = root / "_nightly" / "inflight.json"
    results["killed"] = {
        "returncode": killed.returncode,
        "stderr": killed.stderr[-3000:],
        "journal": json.loads(journal.read_text()) if journal.exists() else None,
        "day1_model": layout.model(DAY1).exists(),
        "day1_partition": pd.read_parquet(layout.recommendations_partition(DAY1)),
    }
    results["day2"] = run(DAY2)
    results["day2_again"] = run(DAY2)
    results["day2_partition"] = pd.read_parquet(layout.recommendations_partition(DAY2))
    results["day3"] = run(DAY3)
    results["after"] = pd.read_parquet(layout.recommendations)
    return results


def test_a_killed_run_leaves_the_published_output_and_the_next_run_recovers(story):
    killed = story["killed"]
    assert killed["returncode"] == -signal.SIGKILL, killed["stderr"]
    assert killed["journal"]["stage"] == "prepare" and killed["journal"]["run_date"] == DAY1
    assert not killed["day1_model"]  # set aside by the killed run, not lost:
    pd.testing.assert_frame_equal(killed["day1_partition"], story["day1_partition"])
    status, summary = story["day2"]
    assert status == 0, summary
    recovered = summary["nightly"]["recovered"]
    assert (recovered["run_date"], recovered["status"], recovered["stage"]) == (
        DAY1,
        "failed",
        "prepare",
    )
    assert summary["nightly"]["stale_lock"]["pid"] == killed["journal"]["pid"]
    layout = Layout(story["root"])
    assert (layout.model(DAY1) / "model.pt").exists() and (
        layout.prepared(DAY1) / "_SUCCESS"
    ).exists()
    assert not (story["root"] / "_nightly" / "stash").exists()


def test_day_two_warm_starts_from_day_one_and_both_partitions_are_readable(story):
    status, day1 = story["day1"]
    assert status == 0 and day1["nightly"]["decision"] == "published", day1
    assert day1["counts"]["carried_users"] == 0 and day1["counts"]["users"] == 200
    status, day2 = story["day2"]
    assert day2["nightly"]["decision"] == "published"
    # Every user and item of day 1 keeps its embedding; the 40 users and 15 items new today do not.
    assert (day2["counts"]["carried_users"], day2["counts"]["carried_items"]) == (200, 75)
    assert (day2["counts"]["users"], day2["counts"]["items"]) == (240, 90)
    assert day2["nightly"]["warm_start_from"] == DAY1
    assert day2["nightly"]["gate"]["baseline_run_date"] == DAY1
    partitions = story["after"].groupby(story["after"].run_date.astype(str)).user_id.nunique()
    assert partitions.to_dict() == {DAY1: 200, DAY2: 240}
    assert (story["day2_partition"].model_version == day2["metrics"]["model_version"]).all()


def test_rerunning_a_published_date_changes_nothing(story):
    status, again = story["day2_again"]
    assert status == 0 and again["nightly"]["decision"] == "skipped"
    assert again["metrics"]["model_version"] == story["day2"][1]["metrics"]["model_version"]
    records = read_history(story["root"])
    assert [r.status for r in records if r.run_date == DAY1] == ["published", "failed"]
    assert [r.status for r in records if r.run_date == DAY2] == ["published"]


def test_a_corrupted_input_is_stopped_by_the_gate_and_the_last_output_stays(story):
    status, day3 = story["day3"]
    assert status == 3 and day3["status"] == "error"
    assert day3["error"].startswith("quality gate: validation RMSE") and DAY2 in day3["error"]
    layout = Layout(story["root"])
    assert not layout.recommendations_partition(DAY3).exists()
    assert not layout.model(DAY3).exists() and not layout.prepared(DAY3).exists()
    assert set(story["after"].run_date.astype(str)) == {DAY1, DAY2}
    day2_now = pd.read_parquet(layout.recommendations_partition(DAY2))
    pd.testing.assert_frame_equal(day2_now, story["day2_partition"])
    rejected = latest_record(read_history(story["root"]), status=None)
    assert rejected.run_date == DAY3 and rejected.status == "rejected"
    assert rejected.gate.baseline_rmse == pytest.approx(story["day2"][1]["metrics"]["rmse"])
    assert (Location(rejected.rejected_outputs) / "model" / "model.pt").exists()
    assert not (story["root"] / "_nightly" / "inflight.json").exists()


def test_a_second_run_on_a_locked_root_exits_with_a_clear_message(spark, tmp_path, capsys):
    root = tmp_path / "root"
    with RunLock(root / "_nightly" / "lock", DAY3):
        status, summary = run_nightly(nightly_overrides(root, DAY3, str(tmp_path / "in")), capsys)
    assert status == 1 and summary["status"] == "error"
    assert f"pid {os.getpid()}" in summary["error"] and "did nothing" in summary["error"]


def test_a_ranking_model_publishes_and_its_summary_names_its_ndcg_gate(spark, tmp_path, capsys):
    """A ranking model is gated on NDCG@k, and those figures reach the summary line."""
    root = tmp_path / "root"
    source = write_input(planted_ratings(users=80, items=40, per_user=12), tmp_path / "in")
    ranking = {
        "model.objective": "ranking",
        "ranking.negatives": 40,
        "ranking.validation_items": 40,
        "train.epochs": 2,
        "evaluate.relevance_threshold": 0,
        "nightly.max_ndcg_decrease": 1.0,  # this test is about the figures, not the verdict
    }
    summaries = {}
    for run_date in (DAY1, DAY2):
        status, summary = run_nightly(nightly_overrides(root, run_date, source, **ranking), capsys)
        assert status == 0 and summary["nightly"]["decision"] == "published", summary
        summaries[run_date] = summary
    first, second = summaries[DAY1], summaries[DAY2]
    assert first["metrics"]["baseline_ndcg_at_k"] is None  # a first run has no baseline
    gate = second["nightly"]["gate"]
    assert gate["passed"] and gate["baseline_run_date"] == DAY1
    assert gate["baseline_ndcg_at_k"] == pytest.approx(first["metrics"]["ndcg_at_k"])
    assert gate["candidate_ndcg_at_k"] == pytest.approx(second["metrics"]["ndcg_at_k"])
    assert "baseline_rmse" not in gate and "candidate_rmse" not in gate
    assert second["metrics"]["baseline_ndcg_at_k"] == gate["baseline_ndcg_at_k"]
    assert second["metrics"]["ndcg_at_k_decrease"] == pytest.approx(
        first["metrics"]["ndcg_at_k"] - second["metrics"]["ndcg_at_k"]
    )
    assert "baseline_rmse" not in second["metrics"]
    assert read_history(root)[-1].gate.metric == "ndcg_at_k"
