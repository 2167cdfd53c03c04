"""The scoring kernel: top-k with deterministic ties, seen-item masking, the MLP's split layer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recspark.core.location import Location
from recspark.data.prepared import rated_by_every_user, rated_lists, seen_items
from recspark.model.registry import build_model
from recspark.model.spec import make_spec
from recspark.serve.kernel import UserTable
from recspark.serve.rated_files import rated_tasks, recommend_rated_files
from recspark.serve.scoring import (
    ScoringPlan,
    WorkerWarmup,
    item_side_payload,
    recommend_all,
)
from recspark.serve.task_files import TaskFiles


def test_recommend_all_in_spark_matches_brute_force(spark, tmp_path):
    torch.manual_seed(1)
    model = build_model(
        make_spec("dot_bias", n_users=40, n_items=25, factors=3, y_range=(1.0, 5.5))
    ).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.7)
    users = pd.DataFrame(
        {
            "user_idx": np.arange(40, dtype=np.int32),
            "bias": model.user_bias.weight.detach().numpy().reshape(-1),
            "factors": list(model.user_factors.weight.detach().numpy()),
        }
    )
    rng = np.random.default_rng(0)
    rated = pd.DataFrame(
        [
            (u, i)
            for u in range(40)
            for i in rng.choice(25, size=int(rng.integers(0, 24)), replace=False)
        ],
        columns=["user_idx", "item_idx"],
    ).astype("int32")
    spec = {"kind": "dot_bias", "n_users": 40, "n_items": 25, "factors": 3, "y_range": [1.0, 5.5]}
    frame = recommend_all(
        spark,
        spark.createDataFrame(users),
        seen_items(spark.createDataFrame(rated)),
        ScoringPlan(
            item_side_payload(model, spec, {}),
            top_n=5,
            users_per_block=7,
            device="cpu",
            partitions=3,
        ),
    )
    got = frame.toPandas().sort_values(["user_idx", "rank"])
    with torch.no_grad():
        scores = model.score_items(torch.arange(40), torch.arange(25)).numpy()
    for user in range(40):
        row = scores[user].copy()
        row[rated.loc[rated.user_idx == user, "item_idx"].to_numpy()] = -np.inf
        expected = [i for i in np.argsort(-row, kind="stable")[:5] if np.isfinite(row[i])]
        mine = got[got.user_idx == user]
        assert mine["item_idx"].tolist() == expected
        assert mine["rank"].tolist() == list(range(1, len(expected) + 1))
    # The same lists from per-user arrays (prepare's rated/ table), carrying a raw id along.
    names = spark.createDataFrame(
        pd.DataFrame(
            {"user_idx": np.arange(40, dtype=np.int32), "user_id": [f"u{i}" for i in range(40)]}
        )
    )
    grouped = (
        recommend_all(
            spark,
            spark.createDataFrame(users),
            rated_lists(spark.createDataFrame(rated)),
            ScoringPlan(
                item_side_payload(model, spec, {}),
                top_n=5,
                users_per_block=4,
                device="cpu",
                partitions=2,
            ),
            user_columns=names,
        )
        .toPandas()
        .sort_values(["user_idx", "rank"])
    )
    assert (grouped["user_id"] == "u" + grouped["user_idx"].astype(str)).all()
    pd.testing.assert_frame_equal(
        grouped.drop(columns="user_id").reset_index(drop=True), got.reset_index(drop=True)
    )
    # And from the broadcast user table over rated_by_every_user's rows (one per user of the
    # map, the empty ones included) written as prepare writes rated/, the tasks reading the
    # files themselves: the same lists, with no join.
    folder = tmp_path / "rated"
    rated_by_every_user(names, spark.createDataFrame(rated)).write.parquet(str(folder))
    broadcast = (
        recommend_rated_files(
            spark,
            Location(folder),
            UserTable.of(model),
            ScoringPlan(
                item_side_payload(model, spec, {}),
                top_n=5,
                users_per_block=4,
                device="cpu",
                partitions=2,
            ),
            carry=("user_id",),
        )
        .toPandas()
        .sort_values(["user_idx", "rank"])
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(broadcast, grouped.reset_index(drop=True))
    # The same rows written by the tasks themselves as the published files: raw item ids, the
    # model version, one file per task; a file no task reported (a failed attempt's) is removed.
    staging = Location(tmp_path / "staging")
    staging.mkdir()
    (staging / "part-00000-stray.snappy.parquet").write_bytes(b"left by a failed attempt")
    tasks = rated_tasks(
        spark,
        Location(folder),
        UserTable.of(model),
        ScoringPlan(
            item_side_payload(model, spec, {}),
            top_n=5,
            users_per_block=4,
            device="cpu",
            partitions=2,
        ),
        carry=("user_id",),
        item_ids=pa.array([f"i{i}" for i in range(25)]),
    )
    rows = TaskFiles(spark, tasks, "v1").write(staging)
    files = sorted(path.name for path in staging.glob("*.parquet"))
    assert len(files) == 2 and "stray" not in " ".join(files)
    written = pq.read_table(str(staging.local)).to_pandas()
    assert list(written.columns) == ["user_id", "item_id", "rank", "score", "model_version"]
    assert rows == len(written) == len(broadcast)
    assert (written["model_version"] == "v1").all()
    mine = written.sort_values(["user_id", "rank"]).reset_index(drop=True)
    theirs = broadcast.sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert mine["item_id"].tolist() == ["i" + str(i) for i in theirs["item_idx"]]
    assert mine["score"].tolist() == theirs["score"].tolist()


def test_warming_starts_a_worker_per_task_with_the_scoring_code_imported(spark):
    """What score and evaluate start first: every task's Python worker imported the kernel
    (so the scoring tasks after it skip torch's import), and the job took one row per task."""
    seen = WorkerWarmup(spark, tasks=2).result(timeout=120)
    assert len(seen) == 2
    assert all(ready for _, ready in seen)
    assert all(pid > 0 for pid, _ in seen)


def test_a_failed_warm_up_is_logged_not_raised(spark, caplog, monkeypatch):
    fail = lambda *args: (_ for _ in ()).throw(RuntimeError("no"))  # noqa: E731
    monkeypatch.setattr(spark.sparkContext, "parallelize", fail)
    with caplog.at_level("WARNING", logger="recspark.serve.scoring"):
        assert WorkerWarmup(spark).result(timeout=60) == []
    assert "warming the Python workers failed (scoring goes on cold): no" in caplog.text
