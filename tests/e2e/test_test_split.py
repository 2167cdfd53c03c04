"""Issue 33: a test split apart from validation, read only by evaluate (and the nightly gate).

One tiny synthetic run with ``split.test_fraction`` is generated, prepared and trained once for the
module; the tests check that prepare's splits are disjoint and add up, that training never reads
the test split (it is poisoned and training repeated bit for bit), that evaluate measures and names
the test split, and that a prepared run of before the test split still trains, scores and
evaluates, its figures named validation figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.core.storage import Layout, read_json
from tests.conftest import run_quietly, tiny_overrides

RUN_DATE = "2026-01-15"
SPLITS = ("train", "validation", "cold_start", "test", "test_cold_start")
# Fewer epochs than the session's tiny run: these tests check where rows go, not accuracy.
QUICK = {"split.test_fraction": 0.1, "train.epochs": 3, "evaluate.baselines": "[global_mean]"}


def run_ok(command: str, overrides: list[str]) -> dict:
    status, summary = run_quietly(command, overrides)
    assert status == 0 and summary["status"] == "ok", summary.get("error", summary)
    return summary


def table(root: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(Layout(str(root)).prepared(RUN_DATE) / name)


def published(root: Path) -> tuple[bytes, list]:
    """The published model file's bytes and its training history (the figures it was chosen
    by), everything of a training run that does not hold wall-clock times."""
    folder = Path(Layout(str(root)).model(RUN_DATE))
    metrics = json.loads((folder / "metrics.json").read_text())
    timings = ("seconds", "rows_per_second")
    history = [{k: v for k, v in epoch.items() if k not in timings} for epoch in metrics["history"]]
    return (folder / "model.pt").read_bytes(), history


@pytest.fixture(scope="module")
def split_run(spark, tmp_path_factory) -> tuple[Path, list[str], dict[str, dict]]:
    """generate -> prepare (10% test) -> train -> evaluate of a tiny synthetic run."""
    root = tmp_path_factory.mktemp("test-split")
    overrides = tiny_overrides(root, **QUICK)
    commands = ("generate", "prepare", "train", "evaluate")
    summaries = {name: run_ok(name, overrides) for name in commands}
    return root, overrides, summaries


def test_prepare_writes_three_disjoint_splits_that_add_up(split_run):
    root, _, summaries = split_run
    counts = summaries["prepare"]["counts"]
    tables = {name: table(root, name) for name in SPLITS}
    assert {name: len(frame) for name, frame in tables.items()} == {
        name: counts[name] for name in SPLITS
    }
    # Every good row is in exactly one table: no (user, item) pair in two of them.
    every = pd.concat(tables.values())
    assert not every.duplicated([USER_IDX, ITEM_IDX]).any()
    assert len(every) == counts["input_rows"] - counts["quarantined"] == 30000
    held_out = counts["test"] + counts["test_cold_start"]
    assert 0.08 < held_out / 30000 < 0.12  # split.test_fraction 0.1
    assert 0.17 < (counts["validation"] + counts["cold_start"]) / 30000 < 0.23
    manifest = read_json(Layout(str(root)).prepared(RUN_DATE) / "manifest.json")
    assert manifest["tables"]["test"]["rows"] == counts["test"]
    assert manifest["split"]["test_fraction"] == 0.1
    assert summaries["prepare"]["outputs"]["test"].endswith("/test")


def test_training_never_reads_the_test_split(split_run, tmp_path):
    root, overrides, _ = split_run
    before = published(root)
    prepared = Path(Layout(str(root)).prepared(RUN_DATE))
    kept = tmp_path / "kept"
    for name in ("test", "test_cold_start"):
        shutil.copytree(prepared / name, kept / name)
    try:
        # Garbage in place of the test rows: ratings far off the scale, every pair moved.
        for name in ("test", "test_cold_start"):
            frame = table(root, name)
            shutil.rmtree(prepared / name)
            (prepared / name).mkdir()
            frame[RATING] = 1e6
            frame[ITEM_IDX] = (frame[ITEM_IDX] + 1) % 200
            frame.to_parquet(prepared / name / "part-00000.parquet")
            (prepared / name / "_SUCCESS").touch()
        run_ok("train", overrides)
        model, history = published(root)
        assert history == before[1] and len(history) == 3
        assert model == before[0]
        # And with the test split gone altogether.
        for name in ("test", "test_cold_start"):
            shutil.rmtree(prepared / name)
        run_ok("train", overrides)
        assert published(root) == before
    finally:
        for name in ("test", "test_cold_start"):
            shutil.rmtree(prepared / name, ignore_errors=True)
            shutil.copytree(kept / name, prepared / name)


def test_evaluate_measures_the_test_split_and_names_it(split_run):
    root, _, summaries = split_run
    summary, prepared = summaries["evaluate"], summaries["prepare"]
    assert summary["metrics"]["split"] == "test"
    assert summary["counts"]["test"] == prepared["counts"]["test"]
    assert summary["counts"]["cold_start"] == prepared["counts"]["test_cold_start"]
    report = read_json(summary["outputs"]["report"])
    assert report["split"] == "test" and report["definitions"]["cold_start"].startswith("test")
    # Known answer: the global mean baseline's RMSE is the train mean against the test ratings.
    train, test = table(root, "train"), table(root, "test")
    expected = float(np.sqrt(((test[RATING] - train[RATING].mean()) ** 2).mean()))
    assert summary["baselines"]["global_mean"]["rmse"] == pytest.approx(expected, rel=1e-5)


def test_a_given_test_table_is_the_test_split_and_validation_is_drawn_from_the_input(tmp_path):
    # u1.base/u1.test in miniature: 30 users rate 20 of 30 items each; the test table holds two
    # more of each user (items that others rated), and one rating of a user the input lacks.
    base = pd.DataFrame(
        [(u, (u + j) % 30, 1 + (u + j) % 5, 1000 + j) for u in range(30) for j in range(20)],
        columns=["user_id", "item_id", "rating", "timestamp"],
    )
    test = pd.DataFrame(
        [(u, (u + j) % 30, 3, 2000) for u in range(30) for j in (20, 21)] + [(99, 0, 4, 2000)],
        columns=base.columns,
    )
    base.to_csv(tmp_path / "base.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    overrides = tiny_overrides(
        tmp_path / "root",
        **{
            "input.format": "csv",
            "input.path": tmp_path / "base.csv",
            "input.test_path": tmp_path / "test.csv",
            "split.method": "given",
            "split.validation_fraction": 0.25,
        },
    )
    counts = run_ok("prepare", overrides)["counts"]
    assert counts["train"] + counts["validation"] + counts["cold_start"] == len(base)
    assert counts["validation"] == 30 * 5 and counts["cold_start"] == 0  # 25% of each user's 20
    assert (counts["test"], counts["test_cold_start"]) == (60, 1)


def test_a_run_prepared_before_the_test_split_still_trains_scores_and_evaluates(
    tiny_trained, tmp_path
):
    source, _ = tiny_trained
    root = tmp_path / "old"
    shutil.copytree(source / "prepared", root / "prepared")
    # The manifest as versions before the test split wrote it.
    path = Layout(str(root)).prepared(RUN_DATE) / "manifest.json"
    manifest = read_json(path)
    manifest["split"].pop("test_fraction", None)
    manifest["input"].pop("test_path", None)
    assert set(manifest["tables"]) == {"train", "validation", "cold_start"}
    Path(path).write_text(json.dumps(manifest))
    overrides = tiny_overrides(root, **{"train.epochs": 2, "evaluate.baselines": "[]"})
    trained = run_ok("train", overrides)
    assert trained["metrics"]["validation_rmse"] is not None
    assert run_ok("score", overrides)["counts"]["users"] == 600
    evaluated = run_ok("evaluate", overrides)
    # No test split: the figures are validation figures, and the summary says so.
    assert evaluated["metrics"]["split"] == "validation"
    assert evaluated["counts"]["validation"] == manifest["tables"]["validation"]["rows"]
    assert read_json(evaluated["outputs"]["report"])["split"] == "validation"


@pytest.mark.slow  # two nightly runs
def test_the_nightly_gate_compares_test_figures(tmp_path, capsys):
    from tests.e2e.test_nightly import nightly_overrides, planted_ratings, run_nightly, write_input

    root = tmp_path / "root"
    source = write_input(planted_ratings(users=80, items=40, per_user=12), tmp_path / "in")
    settings = {"split.test_fraction": 0.2, "nightly.max_rmse_increase": 1.0}
    gates, rmse = [], []
    for run_date in ("2026-03-01", "2026-03-02"):
        status, summary = run_nightly(nightly_overrides(root, run_date, source, **settings), capsys)
        assert status == 0 and summary["nightly"]["decision"] == "published", summary
        gates.append(summary["nightly"]["gate"])
        report = read_json(Path(summary["outputs"]["report"]))
        assert report["split"] == "test"
        rmse.append(report["metrics"]["rmse"])
    assert [gate["split"] for gate in gates] == ["test", "test"]
    assert gates[0]["baseline_rmse"] is None  # a first run
    # The second night compares its test RMSE with the first night's test RMSE.
    assert gates[1]["baseline_rmse"] == pytest.approx(rmse[0])
    assert gates[1]["candidate_rmse"] == pytest.approx(rmse[1])
    assert gates[1]["passed"] and gates[1]["rmse_increase"] == pytest.approx(rmse[1] - rmse[0])
