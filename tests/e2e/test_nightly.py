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
import socket
import subprocess
import sys
import zipfile
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recspark.cli import main
from recspark.core.config import load_config
from recspark.core.errors import BadInputError, ConfigError, LockHeldError
from recspark.core.location import Location
from recspark.core.storage import Layout, mark_success
from recspark.ops import nightly, retention
from recspark.ops.gate import quality_gate, ranking_gate
from recspark.ops.history import HistoryRecord, append_record, latest_record, read_history
from recspark.ops.journal import NightlyState, folder_identity
from recspark.ops.locking import RunLock
from recspark.ops.retention import prune_runs
from recspark.packaging import build_zip
from tests.conftest import REPO, tiny_overrides

DAY1, DAY2, DAY3 = "2026-03-01", "2026-03-02", "2026-03-03"


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


def test_the_shipped_nightly_config_loads_and_bad_nightly_values_are_rejected():
    config = load_config(REPO / "conf" / "nightly.yaml")
    assert config.nightly.warm_start and config.nightly.keep_runs == 14
    with pytest.raises(ConfigError, match=r"nightly\.keep_runs"):
        load_config(None, ["nightly.keep_runs=0"])
    with pytest.raises(ConfigError, match=r"nightly\.max_rmse_increase"):
        load_config(None, ["nightly.max_rmse_increase=-0.1"])


# -- the quality gate ---------------------------------------------------------------------------


def published(rmse: float | None, run_date: str = DAY1, **metrics: float) -> HistoryRecord:
    return HistoryRecord(
        run_id="r1",
        run_date=run_date,
        model_version="v1",
        metrics={"rmse": rmse, **metrics},
        status="published",
    )


def test_gate_passes_a_first_run_and_a_small_increase():
    first = quality_gate(0.9, None, max_rmse_increase=0.05)
    assert first.passed and first.baseline_rmse is None
    small = quality_gate(0.93, published(0.9), max_rmse_increase=0.05)
    assert small.passed and small.rmse_increase == pytest.approx(0.03)
    assert small.figures() == {"baseline_rmse": 0.9, "rmse_increase": small.rmse_increase}
    # The other gate's figures are None, and left out of the JSON as they always were.
    assert small.metric == "rmse" and small.baseline_ndcg_at_k is None
    assert "baseline_ndcg_at_k" not in small.model_dump(mode="json")


def test_gate_rejects_a_regression_a_ceiling_and_a_missing_rmse():
    worse = quality_gate(0.96, published(0.9), max_rmse_increase=0.05)
    assert not worse.passed and "0.0600 worse" in worse.reason and DAY1 in worse.reason
    ceiling = quality_gate(1.2, None, max_rmse_increase=0.05, max_rmse=1.0)
    assert not ceiling.passed and "nightly.max_rmse" in ceiling.reason
    assert not quality_gate(float("nan"), published(0.9), 0.05).passed
    assert not quality_gate(None, None, 0.05).passed


def test_a_ranking_model_is_gated_on_ndcg_not_rmse():
    def ranked(ndcg: float) -> HistoryRecord:
        return published(None, ndcg_at_k=ndcg)

    small = ranking_gate(0.44, ranked(0.45), max_ndcg_decrease=0.02)
    assert small.passed and small.ndcg_at_k_decrease == pytest.approx(0.01)
    assert small.figures() == {
        "baseline_ndcg_at_k": 0.45,
        "ndcg_at_k_decrease": small.ndcg_at_k_decrease,
    }
    assert small.metric == "ndcg_at_k" and small.baseline_rmse is None
    assert small.model_dump(mode="json")["max_ndcg_at_k_decrease"] == 0.02
    assert ranking_gate(0.50, ranked(0.45), 0.02).passed  # better is always fine
    worse = ranking_gate(0.40, ranked(0.45), 0.02)
    assert not worse.passed and "0.0500 worse" in worse.reason
    assert "nightly.max_ndcg_decrease" in worse.reason
    floor = ranking_gate(0.2, None, 0.02, min_ndcg=0.3)
    assert not floor.passed and "below nightly.min_ndcg=0.3" in floor.reason
    assert not ranking_gate(None, ranked(0.45), 0.02).passed


# -- the lock -----------------------------------------------------------------------------------


def test_a_second_holder_is_refused_with_the_first_holders_pid(tmp_path):
    path = tmp_path / "_nightly" / "lock"
    with RunLock(path, DAY1):
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()}.*run_date {DAY1}"):
            RunLock(path, DAY2).acquire()
    assert path.read_text() == ""  # released cleanly: the record is emptied
    with RunLock(path, DAY2) as lock:
        assert lock.previous is None


def test_a_dead_holders_record_is_taken_over(tmp_path):
    path = tmp_path / "lock"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    record = {
        "pid": int(dead.stdout),
        "host": socket.gethostname(),
        "started_at": "2026-03-01T02:00:00+00:00",
    }
    path.write_text(json.dumps(record))
    with RunLock(path, DAY1) as lock:
        assert lock.previous["pid"] == record["pid"]
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_another_hosts_recent_record_is_honoured_and_an_old_one_taken_over(tmp_path):
    import datetime as dt

    path = tmp_path / "lock"
    now = dt.datetime.now(dt.UTC)
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started_at": now.isoformat()}))
    with pytest.raises(LockHeldError, match="another host"):
        RunLock(path, DAY1, stale_after_hours=1).acquire()
    old = (now - dt.timedelta(hours=2)).isoformat()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started_at": old}))
    with RunLock(path, DAY1, stale_after_hours=1) as lock:
        assert lock.previous["host"] == "elsewhere"


# -- history and retention ----------------------------------------------------------------------


def test_history_is_one_whole_file_per_run_read_back_in_order(tmp_path):
    for run_id, run_date, status, finished_at in (
        ("b", DAY2, "rejected", "2"),
        ("a", DAY1, "published", "1"),
        ("c", DAY2, "published", "3"),
    ):
        record = HistoryRecord(
            run_id=run_id, run_date=run_date, status=status, finished_at=finished_at
        )
        append_record(tmp_path, record)
    assert not list((tmp_path / "history").glob(".*"))  # no temporary file left behind
    written = json.loads((tmp_path / "history" / f"{DAY1}_a.json").read_text())
    assert written["error"] is None and "recovered" not in written  # only keys that apply
    records = read_history(tmp_path)
    assert [r.run_id for r in records] == ["a", "b", "c"]
    assert latest_record(records, before=DAY2).run_id == "a"
    assert latest_record(records, upto=DAY2).run_id == "c"
    assert latest_record(records, status="rejected").run_id == "b"
    with pytest.raises(ValueError, match="status"):
        HistoryRecord(run_id="d", run_date=DAY3, status="maybe")


def test_old_history_records_read_and_a_foreign_file_is_named(tmp_path):
    folder = tmp_path / "history"
    folder.mkdir()
    # A record as an older version wrote it: no figures of the ranking gate, an unknown key.
    old = {"run_id": "a", "run_date": DAY1, "status": "published", "model_version": "v1",
           "metrics": {"rmse": 0.9, "stopped_early": True}, "future_key": 1,
           "gate": {"passed": True, "reason": "first", "baseline_rmse": None}}
    (folder / f"{DAY1}_a.json").write_text(json.dumps(old) + "\n")
    (record,) = read_history(tmp_path)
    assert record.gate.passed and record.gate.baseline_ndcg_at_k is None
    assert record.metrics == {"rmse": 0.9, "stopped_early": True}  # a flag stays a flag
    assert record.model_dump(mode="json")["future_key"] == 1
    (folder / f"{DAY2}_b.json").write_text(json.dumps({"run_id": "b"}) + "\n")
    with pytest.raises(BadInputError, match=f"{DAY2}_b.json"):
        read_history(tmp_path)


def fake_run(layout: Layout, run_date: str) -> None:
    for folder in (
        layout.prepared(run_date),
        layout.model(run_date),
        layout.evaluation(run_date),
        layout.recommendations_partition(run_date),
    ):
        folder.mkdir(parents=True)
        (folder / "part-0").write_text(run_date)
        mark_success(folder)


def test_retention_keeps_the_newest_runs_and_the_protected_one(tmp_path):
    layout = Layout(tmp_path)
    dates = ["2026-02-27", "2026-02-28", DAY1, DAY2, DAY3]
    for date in dates:
        fake_run(layout, date)
    removed = prune_runs(layout, keep_runs=2, protect={"2026-02-27"})
    assert removed == ["2026-02-28", DAY1]
    assert sorted(p.name for p in layout.recommendations.iterdir()) == [
        "run_date=2026-02-27",
        f"run_date={DAY2}",
        f"run_date={DAY3}",
    ]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["2026-02-27", DAY2, DAY3]
    assert not list((tmp_path / "prepared").glob(".retired-*"))


def test_nightly_retention_also_ages_out_refused_quarantines(tmp_path):
    """prepared/_rejected/D (a date refused for its bad rows) keeps the newest keep_runs dates."""
    from recspark.ops.nightly import prune

    layout = Layout(tmp_path)
    for date in (DAY1, DAY2, DAY3):
        fake_run(layout, date)
        (tmp_path / "prepared" / "_rejected" / date / "quarantine").mkdir(parents=True)
    removed, error = prune(layout, NightlyState(layout), keep_runs=2, run_date=DAY3)
    assert (removed, error) == ([DAY1], None)
    assert sorted(p.name for p in (tmp_path / "prepared" / "_rejected").iterdir()) == [DAY2, DAY3]


# -- recovery of a run that died, without Spark --------------------------------------------------


def crashed_run(layout: Layout, stage: str, gate_passed: bool = False) -> dict:
    """A root where DAY1 was published and a re-run of DAY1 died at ``stage``, as on disk."""
    fake_run(layout, DAY1)
    state = NightlyState(layout)
    partition = layout.recommendations_partition(DAY1)
    journal = {
        "run_id": "dead-run",
        "run_date": DAY1,
        "stage": stage,
        "started_at": "2026-03-02T02:00:00+00:00",
        "stashed": {"prepared": True, "model": True, "evaluation": True},
        "partition_before": folder_identity(partition),
        "summaries": {"train": {"metrics": {"model_version": "new", "validation_rmse": 0.8}}},
        "gate": {"passed": gate_passed},
    }
    stash = state.stash("dead-run")
    stash.mkdir(parents=True)
    for kind in nightly.RESTORABLE:  # what the dead run set aside, and what it wrote since
        os.rename(retention.run_folders(layout, DAY1)[kind], stash / kind)
    for folder in (layout.prepared(DAY1), layout.model(DAY1)):
        folder.mkdir()
        (folder / "part-0").write_text("candidate")
        mark_success(folder)
    (layout.root / "_staging" / f"evaluation-{DAY1}-abc").mkdir(parents=True)
    state.journal.write_text(json.dumps(journal))
    return journal


def test_a_run_that_died_before_its_commit_is_rolled_back(tmp_path):
    layout = Layout(tmp_path)
    crashed_run(layout, "evaluate")
    state = NightlyState(layout)
    record = nightly.recover_crashed(layout, state, "next-run")
    assert record.status == "failed" and "interrupted during evaluate" in record.error
    assert record.recovered_by == "next-run"
    for folder in retention.run_folders(layout, DAY1).values():
        assert (folder / "part-0").read_text() == DAY1, folder  # the published outputs, restored
    rejected = state.rejected / f"{DAY1}_dead-run"
    assert (rejected / "model" / "part-0").read_text() == "candidate"
    assert record.rejected_outputs == str(rejected)
    assert json.loads((rejected / "record.json").read_text())["run_id"] == "dead-run"
    assert not state.journal.exists() and not state.stash_root.exists()
    assert not list((tmp_path / "_staging").iterdir())
    assert read_history(tmp_path)[-1] == record
    assert nightly.recover_crashed(layout, state, "later-run") is None  # nothing left to do


def test_a_run_that_died_after_its_commit_is_rolled_forward(tmp_path):
    layout = Layout(tmp_path)
    crashed_run(layout, "score", gate_passed=True)
    partition = layout.recommendations_partition(DAY1)
    new = partition.parent / "new-partition"
    new.mkdir()
    (new / "part-0").write_text("candidate")
    mark_success(new)
    os.rename(partition, partition.parent / ".retired-old")  # score's publish, killed after it
    os.rename(new, partition)
    state = NightlyState(layout)
    record = nightly.recover_crashed(layout, state, "next-run")
    assert record.status == "published" and record.recovered is True
    assert record.model_version == "new" and record.metrics["validation_rmse"] == 0.8
    assert (layout.model(DAY1) / "part-0").read_text() == "candidate"
    assert (partition / "part-0").read_text() == "candidate"
    assert not state.journal.exists() and not state.stash_root.exists()


def test_the_package_zip_holds_every_module_and_imports(tmp_path):
    archive = build_zip(tmp_path / "recspark.zip")
    names = zipfile.ZipFile(archive).namelist()
    assert "recspark/__init__.py" in names and "recspark/commands/nightly.py" in names
    assert not any("__pycache__" in name for name in names)
    assert build_zip(tmp_path / "again.zip").read_bytes() == archive.read_bytes()
    probe = "import recspark.packaging as p; print(p.__file__)"
    result = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(archive)!r}); {probe}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert result.stdout.strip().startswith(str(archive))


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
    assert status == 1 and day3["status"] == "error"
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
