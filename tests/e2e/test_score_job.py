"""The score job end to end: known lists, raw ids, idempotent re-runs, and a kill while writing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recspark.cli import main
from recspark.core.location import Location
from recspark.core.storage import Layout, mark_success, write_json
from recspark.data.prepared import PreparedRun, write_manifest
from recspark.model.published import index_fingerprint, save_model
from recspark.model.registry import build_model
from recspark.model.saving import write_factor_tables
from recspark.model.spec import spec_from_dict
from tests.conftest import ML100K_U1_DATE, REPO, copy_prepared
from tests.fixtures.paused_score import command as paused_score_command

RUN_DATE = "2026-01-15"
#: The planted runs' items have at most two training ratings: list them all.
EVERY_ITEM = "score.min_item_ratings=0"


def publish_hand_made_run(
    root: Path,
    model,
    spec: dict,
    user_ids,
    item_ids,
    rated: dict,
    listed: bool = False,
    input_fingerprint: str | None = None,
) -> None:
    """Write prepared/ and models/ the way prepare and train publish them, for a planted model.

    ``rated`` maps a split name to ``(user_idx, item_idx[, rating])`` tuples (rating 4 if absent).
    ``listed`` writes prepare's ``rated/`` table too (one row per user, as prepare writes it now);
    without it the run looks like one prepared before that table existed. With
    ``input_fingerprint`` the run gets a ``manifest.json`` and the model records its id maps'
    fingerprint, as train does now; without it the model is one saved before that field existed.
    """
    layout = Layout(root)
    prepared = layout.prepared(RUN_DATE)
    users = pd.DataFrame(
        {"user_id": user_ids, "user_idx": np.arange(len(user_ids), dtype=np.int32)}
    )
    items = pd.DataFrame(
        {"item_id": item_ids, "item_idx": np.arange(len(item_ids), dtype=np.int32)}
    )
    for name, frame in (("user_index", users), ("item_index", items)):
        (prepared / name).mkdir(parents=True)
        frame.to_parquet(prepared / name / "part-0.parquet", index=False)
    for split in ("train", "validation", "cold_start"):
        rows = [(r[0], r[1], r[2] if len(r) > 2 else 4.0, 0) for r in rated.get(split, [])]
        frame = pd.DataFrame(rows, columns=["user_idx", "item_idx", "rating", "timestamp"]).astype(
            {"user_idx": "int32", "item_idx": "int32", "rating": "float32", "timestamp": "int64"}
        )
        (prepared / split).mkdir(parents=True)
        frame.to_parquet(prepared / split / "part-0.parquet", index=False)
    if listed:
        every = [(r[0], r[1]) for rows in rated.values() for r in rows]
        table = pd.DataFrame(
            {
                "user_idx": np.arange(len(user_ids), dtype=np.int32),
                "user_id": user_ids,
                "items": [
                    sorted(i for u, i in every if u == user) for user in range(len(user_ids))
                ],
            }
        )
        (prepared / "rated").mkdir(parents=True)
        table.to_parquet(prepared / "rated" / "part-0.parquet", index=False)
        mark_success(prepared / "rated")
    meta = {"index_date": RUN_DATE, "run_date": RUN_DATE}
    if input_fingerprint is not None:
        manifest = write_hand_made_manifest(root, len(user_ids), len(item_ids), input_fingerprint)
        meta["index_fingerprint"] = index_fingerprint(manifest)
    mark_success(prepared)
    folder = layout.model(RUN_DATE)
    folder.mkdir(parents=True)
    save_model(folder / "model.pt", model, spec, meta)
    write_factor_tables(model, folder)
    write_json(folder / "metrics.json", {"model_version": f"{RUN_DATE}-planted", "history": []})
    mark_success(folder)


def write_hand_made_manifest(root: Path, users: int, items: int, input_fingerprint: str):
    """The prepared run's ``manifest.json``; returns it as :class:`PreparedRun`."""
    manifest = PreparedRun.model_validate(
        {
            "run_date": RUN_DATE,
            "users": users,
            "items": items,
            "rating_range": [1.0, 5.0],
            "input": {"path": "ratings.csv", "format": "csv", "fingerprint": input_fingerprint},
        }
    )
    write_manifest(Layout(root).prepared(RUN_DATE), manifest)
    return manifest


def spark_jobs(spark) -> set[int]:
    """Ids of the Spark jobs run so far in this session."""
    return set(spark.sparkContext.statusTracker().getJobIdsForGroup())


def set_args(items) -> list[str]:
    """``--set`` arguments for a list of ``key=value`` strings."""
    return [part for item in items for part in ("--set", item)]


def score(root: Path, capsys, *extra: str) -> dict:
    sets = [f"paths.root={root}", f"run_date={RUN_DATE}", "spark.conf={}", EVERY_ITEM, *extra]
    status = main(["score", *set_args(sets)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0, summary
    return summary


def plant(root: Path, listed: bool = False, input_fingerprint: str | None = None) -> Path:
    """Five users (string ids) x six items (long ids); item i scores 10 - i for every user, items
    2 and 3 tie. User "c" has rated all but two items; user "e" is known but rated nothing."""
    spec = {"kind": "dot", "n_users": 5, "n_items": 6, "factors": 2}
    model = build_model(spec_from_dict(spec))
    with torch.no_grad():
        model.user_factors.weight.copy_(torch.tensor([[1.0, 1.0]] * 5))
        model.item_factors.weight.copy_(
            torch.tensor([[5.0, 5.0], [4.5, 4.5], [4.0, 4.0], [4.0, 4.0], [3.0, 3.0], [1.0, 1.0]])
        )
    rated = {
        "train": [(0, 0), (1, 1), (2, 0), (2, 1), (2, 2)],
        "validation": [(0, 2), (2, 3)],
        "cold_start": [(3, 5)],
    }
    publish_hand_made_run(
        root,
        model,
        spec,
        ["a", "b", "c", "d", "e"],
        [100, 101, 102, 103, 104, 105],
        rated,
        listed,
        input_fingerprint,
    )
    return root


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    """A planted run prepared before ``rated/`` existed: score joins the user table."""
    return plant(tmp_path_factory.mktemp("planted"))


KNOWN_LISTS = {
    "a": [101, 103, 104],  # 100 (train) and 102 (validation) are seen
    "b": [100, 102, 103],  # 102 before 103: equal scores, lower index first
    "c": [104, 105],  # only two unrated items: a short list
    "d": [100, 101, 102],  # the cold-start rating excludes 105, which was not near the top
    "e": [100, 101, 102],  # known to the model, absent from the input: still scored
}


def read_partition(root: Path) -> pd.DataFrame:
    table = pd.read_parquet(Layout(root).recommendations)
    return table.sort_values(["user_id", "rank"]).reset_index(drop=True)


def test_score_publishes_the_known_lists_with_raw_ids(planted, capsys):
    summary = score(planted, capsys, "score.top_n=3")
    assert summary["counts"] == {"users": 5, "rows": 14, "model_users": 5}
    table = read_partition(planted)
    assert table["user_id"].dtype == object and table["item_id"].dtype == np.int64
    assert table.groupby("user_id")["item_id"].apply(list).to_dict() == KNOWN_LISTS
    assert summary["metrics"]["user_factors"] == "joined"
    assert (
        table.groupby("user_id")["rank"]
        .apply(lambda r: list(r) == list(range(1, len(r) + 1)))
        .all()
    )
    assert table.loc[table.user_id == "a", "score"].tolist() == pytest.approx([9.0, 8.0, 6.0])
    assert set(table["model_version"]) == {f"{RUN_DATE}-planted"}
    assert set(table["run_date"].astype(str)) == {RUN_DATE}
    assert (Location(summary["outputs"]["partition"]) / "_SUCCESS").exists()


def test_a_broadcast_user_table_publishes_the_same_lists_as_a_joined_one(spark, tmp_path, capsys):
    root = plant(tmp_path / "listed", listed=True)
    summary = score(root, capsys, "score.top_n=3")
    assert summary["metrics"]["user_factors"] == "broadcast"
    assert summary["counts"] == {"users": 5, "rows": 14, "model_users": 5}
    broadcast = read_partition(root)
    assert broadcast.groupby("user_id")["item_id"].apply(list).to_dict() == KNOWN_LISTS
    # Over the size limit, the same run joins the user table instead: the same rows.
    summary = score(root, capsys, "score.top_n=3", "score.broadcast_users_mb=0")
    assert summary["metrics"]["user_factors"] == "joined"
    pd.testing.assert_frame_equal(read_partition(root), broadcast)
    # Without exclusion, every user (e included) gets the best items from the broadcast path too.
    score(root, capsys, "score.top_n=2", "score.exclude_seen=false")
    table = read_partition(root)
    assert table.groupby("user_id")["item_id"].apply(list).to_dict() == {
        user: [100, 101] for user in "abcde"
    }


def score_status(root: Path, capsys) -> tuple[int, dict]:
    sets = [f"paths.root={root}", f"run_date={RUN_DATE}", "spark.conf={}", EVERY_ITEM]
    status = main(["score", *set_args(sets)])
    return status, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_score_refuses_a_model_whose_prepared_run_was_prepared_again(spark, tmp_path, capsys):
    """prepare re-run for the date on other data, then score: a clear error, before any task.

    (Before, the scoring tasks died with "unexpected failure (PythonException: )" and an
    ``ArrowIndexError`` inside: an item index past the model's table.)"""
    root = plant(tmp_path / "root", input_fingerprint="day-one")
    status, summary = score_status(root, capsys)
    assert status == 0, summary
    # The same sizes, other input: the id maps may map other ids to the same rows.
    write_hand_made_manifest(root, 5, 6, "day-one-again-with-other-data")
    before = spark_jobs(spark)
    status, summary = score_status(root, capsys)
    assert status == 1 and summary["status"] == "error", summary
    assert f"the model for {RUN_DATE} was trained on other id maps" in summary["error"]
    assert f"re-run `recspark train` for {RUN_DATE}" in summary["error"]
    assert "unexpected failure" not in summary["error"]
    assert spark_jobs(spark) == before  # failed before any Spark job


def test_score_refuses_an_older_model_whose_id_maps_grew(spark, tmp_path, capsys):
    """A model saved before it recorded its id maps: checked by the sizes of its tables."""
    root = plant(tmp_path / "root")
    item_index = Layout(root).prepared(RUN_DATE) / "item_index" / "part-0.parquet"
    grown = pd.DataFrame(
        {"item_id": [100, 101, 102, 103, 104, 105, 106], "item_idx": np.arange(7, dtype=np.int32)}
    )
    grown.to_parquet(item_index, index=False)
    before = spark_jobs(spark)
    status, summary = score_status(root, capsys)
    assert status == 1, summary
    assert "trained on other id maps" in summary["error"] and "6 items" in summary["error"]
    assert "7" in summary["error"]
    assert spark_jobs(spark) == before


def test_exclude_seen_off_and_a_rerun_replaces_the_partition_whole(planted, capsys):
    score(planted, capsys, "score.top_n=2", "score.exclude_seen=false")
    first = read_partition(planted)
    assert len(first) == 10 and set(first.loc[first["rank"] == 1, "item_id"]) == {100}
    score(planted, capsys, "score.top_n=2", "score.exclude_seen=false")
    again = read_partition(planted)
    pd.testing.assert_frame_equal(first, again)
    score(planted, capsys, "score.top_n=1", "score.exclude_seen=false")
    assert len(read_partition(planted)) == 5  # no file of the earlier run survives
    partition = Layout(planted).recommendations_partition(RUN_DATE)
    assert not list(partition.parent.glob(".retired-*"))


def test_a_job_killed_while_writing_leaves_the_previous_partition(planted, capsys, tmp_path):
    score(planted, capsys, "score.top_n=3")
    partition = Layout(planted).recommendations_partition(RUN_DATE)
    before = read_partition(planted)
    files_before = sorted(p.name for p in partition.iterdir())
    # The next run is killed while its tasks are writing: each one sleeps after its first block
    # (tests/fixtures/paused_score.py patches the scoring task; the marker proves it ran).
    sets = [
        f"paths.root={planted}",
        f"run_date={RUN_DATE}",
        "score.top_n=2",
        EVERY_ITEM,
        "spark.master=local[2]",
        'spark.conf={"spark.ui.enabled": "false"}',
    ]
    marker = tmp_path / "paused"
    argv, env = paused_score_command(300, marker, set_args(sets))
    log = (tmp_path / "killed.log").open("w")
    job = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    staging = Layout(planted).root / "_staging"
    deadline = time.monotonic() + 240
    try:
        # Spark's committer creates _temporary in the output folder when the write job starts.
        while not (
            marker.exists() and list(staging.glob(f"recommendations-{RUN_DATE}-*/_temporary"))
        ):
            assert job.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the job never started writing"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL
    # The previous partition is untouched and readable; the half-written output is only in staging.
    assert sorted(p.name for p in partition.iterdir()) == files_before
    pd.testing.assert_frame_equal(read_partition(planted), before)
    leftovers = list(staging.glob(f"recommendations-{RUN_DATE}-*"))
    assert leftovers
    # The next run publishes normally and clears what the killed one left.
    summary = score(planted, capsys, "score.top_n=2")
    assert summary["counts"]["rows"] == 10
    assert len(read_partition(planted)) == 10
    assert not any(path.exists() for path in leftovers)


def test_a_partition_retired_by_a_killed_publish_is_restored(planted, capsys):
    from recspark.core.storage import clean_leftovers

    layout = Layout(planted)
    score(planted, capsys, "score.top_n=3")
    partition = layout.recommendations_partition(RUN_DATE)
    before = read_partition(planted)
    # A kill between publish's two renames leaves the old partition renamed aside and no new one.
    retired = partition.parent / f".retired-{partition.name}-deadbeef"
    os.rename(partition, retired)
    clean_leftovers(layout, partition, f"recommendations-{RUN_DATE}")
    assert not retired.exists()
    pd.testing.assert_frame_equal(read_partition(planted), before)


def test_ml100k_every_user_gets_ten_unrated_items_identically_twice(
    spark, ml100k, ml100k_u1, tmp_path, capsys
):
    # u1 as prepare writes it, prepared once for the session (conftest.py), copied here.
    root = copy_prepared(ml100k_u1[0], tmp_path / "ml100k")
    sets = [
        f"paths.root={root}",
        f"run_date={ML100K_U1_DATE}",
        "spark.conf={}",
        f"input.path={ml100k / 'u1.base'}",
        "input.format=movielens-100k",
        "split.method=given",
        f"input.validation_path={ml100k / 'u1.test'}",
        "model.kind=dot_bias",
        "model.factors=16",
        "train.epochs=2",
        "train.batch_size=4096",
    ]
    assert main(["train", *set_args(sets)]) == 0, capsys.readouterr().out[-2000:]
    capsys.readouterr()
    first_summary = score(root, capsys, *sets[1:])
    assert first_summary["counts"]["users"] == 943 and first_summary["counts"]["rows"] == 9430
    first = read_partition(root)
    second_summary = score(root, capsys, *sets[1:])
    second = read_partition(root)
    pd.testing.assert_frame_equal(first, second)
    assert second_summary["counts"] == first_summary["counts"]
    # prepare's rated/ lists every user: the user table is broadcast. Joining it instead (over
    # score.broadcast_users_mb) scores the same users the same way.
    assert first_summary["metrics"]["user_factors"] == "broadcast"
    joined_summary = score(root, capsys, *sets[1:], "score.broadcast_users_mb=0")
    assert joined_summary["metrics"]["user_factors"] == "joined"
    assert joined_summary["counts"] == first_summary["counts"]
    pd.testing.assert_frame_equal(read_partition(root), first)
    assert first.groupby("user_id")["rank"].apply(lambda r: list(r) == list(range(1, 11))).all()
    assert (first.groupby("user_id")["score"].diff().dropna() <= 0).all()
    base = pd.read_csv(ml100k / "u1.base", sep="\t", names=["user_id", "item_id", "rating", "ts"])
    assert first.merge(base, on=["user_id", "item_id"]).empty
    assert first["user_id"].dtype == np.int64 and first["item_id"].dtype == np.int64
