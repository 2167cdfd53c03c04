"""nightly: the gate, the lock, history, retention and crash recovery, then the unit end to end.
The tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_nightly.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zipfile

import pytest

from recspark.core.config import load_config
from recspark.core.errors import BadInputError, ConfigError, LockHeldError
from recspark.core.storage import Layout, mark_success
from recspark.ops import nightly, retention
from recspark.ops.gate import quality_gate, ranking_gate
from recspark.ops.history import HistoryRecord, append_record, latest_record, read_history
from recspark.ops.journal import NightlyState, folder_identity
from recspark.ops.locking import RunLock
from recspark.ops.retention import prune_runs
from recspark.packaging import build_zip
from tests.conftest import REPO

DAY1, DAY2, DAY3 = "2026-03-01", "2026-03-02", "2026-03-03"


def test_the_shipped_nightly_config_loads_and_bad_nightly_values_are_rejected():
    config = load_config(REPO / "conf" / "nightly.yaml")
    assert config.nightly.warm_start and config.nightly.keep_runs == 14
    with pytest.raises(ConfigError, match=r"nightly\.keep_runs"):
        load_config(None, ["nightly.keep_runs=0"])
    with pytest.raises(ConfigError, match=r"nightly\.max_rmse_increase"):
        load_config(None, ["nightly.max_rmse_increase=-0.1"])


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
        assert lock.previous is not None and lock.previous.pid == record["pid"]
        assert lock.previous.as_read == record  # the summary reports it as it was written
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
        assert lock.previous is not None and lock.previous.host == "elsewhere"


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
    old = {
        "run_id": "a",
        "run_date": DAY1,
        "status": "published",
        "model_version": "v1",
        "metrics": {"rmse": 0.9, "stopped_early": True},
        "future_key": 1,
        "gate": {"passed": True, "reason": "first", "baseline_rmse": None},
    }
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
