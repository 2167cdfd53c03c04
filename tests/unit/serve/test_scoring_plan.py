"""The scoring task as the Spark job runs it, without Spark: :func:`score_partition` over the
broadcast :class:`TaskInputs`, and the kill tests' paused wrapper around it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from recspark.model.registry import build_model
from recspark.model.spec import make_spec
from recspark.serve.kernel import UserTable
from recspark.serve.scoring import ScoringPlan, TaskInputs, item_side_payload, score_partition
from tests.fixtures.score_pause import paused


class _Count:
    def __init__(self) -> None:
        self.value = 0

    def add(self, value: int, /) -> None:
        self.value += value


class _Counters:
    def __init__(self) -> None:
        self.users, self.rows = _Count(), _Count()


def _inputs() -> tuple[TaskInputs, list[pa.RecordBatch]]:
    model = build_model(make_spec("dot", n_users=3, n_items=4, factors=1)).eval()
    with torch.no_grad():
        model.item_factors.weight.copy_(torch.tensor([[1.0], [4.0], [3.0], [2.0]]))
        model.user_factors.weight.copy_(torch.tensor([[1.0], [-1.0], [2.0]]))
    plan = ScoringPlan(
        item_side_payload(model, {"kind": "dot", "n_users": 3, "n_items": 4, "factors": 1}, {}),
        top_n=2,
        users_per_block=2,
        device="cpu",
        eligible=np.array([True, True, True, False]),
    )
    inputs = TaskInputs(
        plan.payload,
        plan.top_n,
        plan.users_per_block,
        plan.device,
        (),
        None,
        UserTable.of(model),
        plan.eligible,
    )
    items = pa.list_(pa.int32())
    batches = [
        pa.RecordBatch.from_pydict(
            {"user_idx": pa.array([0, 1], pa.int32()), "items": pa.array([[1], None], items)}
        ),
        pa.RecordBatch.from_pydict(
            {"user_idx": pa.array([2], pa.int32()), "items": pa.array([[]], items)}
        ),
    ]
    return inputs, batches


def test_a_scoring_task_lists_eligible_unrated_items_and_counts_them():
    inputs, batches = _inputs()
    counters = _Counters()
    out = pa.Table.from_batches(list(score_partition(iter(batches), inputs, counters)))
    lists = out.to_pandas().groupby("user_idx")["item_idx"].apply(list).to_dict()
    # Item 3 is not eligible; user 0 rated item 1; user 1's scores are reversed.
    assert lists == {0: [2, 0], 1: [0, 2], 2: [1, 2]}
    assert (counters.users.value, counters.rows.value) == (3, 6)


def test_the_paused_task_gives_the_same_rows_and_marks_its_pause(tmp_path):
    inputs, batches = _inputs()
    marker = tmp_path / "paused"
    real = pa.Table.from_batches(list(score_partition(iter(batches), inputs, None)))
    wrapped = paused(iter(batches), inputs, None, seconds=0.0, marker=str(marker))
    assert pa.Table.from_batches(list(wrapped)).equals(real)
    assert marker.read_text().strip().isdigit()  # one pid: paused once, after the first batch
