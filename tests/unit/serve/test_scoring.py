"""The scoring kernel: top-k with deterministic ties, seen-item masking, the MLP's split layer. The
tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_scoring.py.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from recspark.core.errors import BadInputError
from recspark.model.registry import build_model
from recspark.model.spec import make_spec
from recspark.serve.kernel import ScoringKernel, UserTable, recommend_batches
from recspark.serve.scoring import (
    item_side_payload,
)
from recspark.serve.topk import best_columns, top_k

INF = math.inf


def test_top_k_orders_by_score_then_lower_index():
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.5, 0.9, 0.3],  # a tie at the top: index 1 before 3
            [0.2, 0.2, 0.2, 0.2, 0.2],  # all tied: the lowest indices, in order
            [0.5, 0.4, 0.4, 0.4, 0.1],  # a tie straddling the cut: 1 and 2 kept, 3 dropped
        ]
    )
    index, value, valid = top_k(scores, 3)
    assert index.tolist() == [[1, 3, 2], [0, 1, 2], [0, 1, 2]]
    assert value[0].tolist() == pytest.approx([0.9, 0.9, 0.5])
    assert valid.all()


def test_top_k_marks_rows_with_too_few_eligible_columns():
    scores = torch.tensor([[-INF, 0.3, -INF, 0.7], [-INF, -INF, -INF, -INF], [0.1, 0.2, 0.3, 0.4]])
    index, _, valid = top_k(scores, 3)
    assert valid.tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    assert index[0, :2].tolist() == [3, 1]
    assert index[2].tolist() == [3, 2, 1]
    # More than the catalogue: every column, best first.
    index, _, valid = top_k(scores[2:], 10)
    assert index.tolist() == [[3, 2, 1, 0]] and valid.all()


def test_top_k_agrees_with_a_stable_full_sort_on_many_ties():
    generator = torch.Generator().manual_seed(3)
    # Scores from a few levels: ties everywhere, including across the cut.
    scores = torch.randint(0, 4, (200, 50), generator=generator).float()
    scores[torch.rand(200, 50, generator=generator) < 0.3] = -INF
    index, _, valid = top_k(scores, 7)
    expected_values, expected_index = torch.sort(scores, dim=1, descending=True, stable=True)
    expected_valid = torch.isfinite(expected_values[:, :7])
    assert torch.equal(valid, expected_valid)
    assert torch.equal(index[valid], expected_index[:, :7][expected_valid])


def test_top_k_decides_ties_on_finished_scores():
    # Keys 20 and 30 both saturate to 5.5 once finished: equal scores, so the lower index first,
    # exactly as ranking the finished block would.
    keys = torch.tensor([[10.0, 20.0, 30.0, 0.0, -INF]])

    def finish(values, rows):
        scaled = torch.sigmoid(values) * 4.5 + 1.0
        return torch.where(torch.isneginf(values), values, scaled)

    index, value, valid = top_k(keys, 2, finish)
    assert index.tolist() == [[1, 2]] and value.tolist() == [[5.5, 5.5]]
    index, _, valid = top_k(keys, 5, finish)
    assert index[0, :4].tolist() == [1, 2, 0, 3] and valid.tolist() == [[True] * 4 + [False]]


def test_top_k_refuses_nan_scores():
    with pytest.raises(FloatingPointError, match="NaN"):
        top_k(torch.tensor([[0.1, math.nan, 0.3]]), 2)


@pytest.mark.parametrize("kind", ["dot", "dot_bias", "mlp"])
def test_kernel_matches_the_model_pair_by_pair(kind):
    torch.manual_seed(0)
    model = build_model(
        make_spec(kind, n_users=30, n_items=90, factors=6, hidden=[16, 8], dropouts=[0.0, 0.0])
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    model.eval()
    kernel = ScoringKernel(model, torch.device("cpu"))
    users = torch.arange(30)
    vectors = model.user_factors(users).detach()
    bias = (
        model.user_bias(users).squeeze(1).detach()
        if hasattr(model, "user_bias")
        else torch.zeros(30)
    )
    got = kernel.scores(vectors, bias)
    pairs_u, pairs_i = torch.meshgrid(users, torch.arange(90), indexing="ij")
    with torch.no_grad():
        expected = model(pairs_u.reshape(-1), pairs_i.reshape(-1)).view(30, 90)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if kind == "mlp":
        assert kernel._mlp is not None  # the split first layer was used, not the fallback


@pytest.mark.parametrize("columns", [64 * 12 + 5, 64 * 40, 1682])
def test_best_columns_finds_topks_values_on_wide_blocks(columns):
    """The chunked first pass is exact: values as torch.topk's, columns holding them."""
    generator = torch.Generator().manual_seed(columns)
    scores = torch.randn(50, columns, generator=generator)
    scores[1] = 0.5  # all tied
    scores[2, : columns - 3] = -INF  # three eligible columns, all in the leftover tail
    scores[3] = torch.round(scores[3] * 2) / 2  # many ties
    scores[4, ::7] = -INF  # masked items
    values, columns_found = best_columns(scores, 11)
    expected = scores.topk(11, dim=1).values
    torch.testing.assert_close(values, expected)
    torch.testing.assert_close(scores.gather(1, columns_found), expected)
    assert (columns_found.sort(dim=1).values.diff(dim=1) > 0).all()  # no column twice
    # top_k on top of it keeps its contract: best first, ties to the lower index.
    index, _, valid = top_k(scores, 10)
    for row in range(50):
        order = sorted(range(columns), key=lambda c: (-scores[row, c].item(), c))[:10]
        finite = [c for c in order if math.isfinite(scores[row, c].item())]
        assert index[row][valid[row]].tolist() == finite


def test_kernel_masks_seen_items_and_keeps_short_lists():
    model = build_model(make_spec("dot", n_users=2, n_items=5, factors=1))
    with torch.no_grad():
        model.item_factors.weight.copy_(torch.tensor([[5.0], [4.0], [3.0], [2.0], [1.0]]))
    kernel = ScoringKernel(model.eval(), torch.device("cpu"))
    vectors = np.array([[1.0], [1.0]], dtype=np.float32)
    rows, items = np.array([0, 0, 1, 1, 1, 1]), np.array([0, 2, 0, 1, 2, 3])
    index, value, valid = kernel.block(vectors, np.zeros(2, np.float32), 3, rows, items)
    assert index[0].tolist() == [1, 3, 4] and value[0].tolist() == [4.0, 2.0, 1.0]
    assert valid[1].tolist() == [True, False, False] and index[1, 0] == 4


def test_recommend_batches_reads_arrow_lists_and_masks_rated_items():
    model = build_model(make_spec("dot_bias", n_users=1, n_items=4, factors=2, y_range=None))
    with torch.no_grad():
        model.item_factors.weight.copy_(
            torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
        )
        model.item_bias.weight.zero_()
    payload = item_side_payload(
        model, {"kind": "dot_bias", "n_users": 1, "n_items": 4, "factors": 2, "y_range": None}, {}
    )
    # Batches as Spark hands them over: one row per user, its rated items as one list (null:
    # none), and a carried raw id. Users 7 and 8 share a block; 6 comes in a later batch.
    schema = pa.schema(
        [
            ("user_idx", pa.int32()),
            ("bias", pa.float32()),
            ("factors", pa.list_(pa.float32())),
            ("items", pa.list_(pa.int32())),
            ("user_id", pa.string()),
        ]
    )
    first = pa.RecordBatch.from_pydict(
        {
            "user_idx": [7, 8],
            "bias": [0.0, 1.0],
            "factors": [[2.0, 1.0], [0.0, 3.0]],
            "items": [[2], None],
            "user_id": ["seven", "eight"],
        },
        schema=schema,
    )
    second = pa.RecordBatch.from_pydict(
        {
            "user_idx": [6],
            "bias": [0.0],
            "factors": [[1.0, 1.0]],
            "items": [[0, 1, 2]],
            "user_id": ["six"],
        },
        schema=schema,
    )
    out = pa.Table.from_batches(
        list(recommend_batches(iter([first, second]), payload, 2, 2, "cpu", carry=("user_id",)))
    ).to_pandas()
    # user 7: item scores [2, 1, -, 0] -> 0, 1; user 8: [1, 4, 4, 1] -> 1, 2 (tie: lower index);
    # user 6 rated all but item 3: a short list of one.
    assert out.columns.tolist() == ["user_idx", "user_id", "item_idx", "rank", "score"]
    assert out[["user_id", "item_idx", "rank"]].values.tolist() == [
        ["seven", 0, 1],
        ["seven", 1, 2],
        ["eight", 1, 1],
        ["eight", 2, 2],
        ["six", 3, 1],
    ]
    assert out["score"].tolist() == pytest.approx([2.0, 1.0, 4.0, 4.0, 0.0])


def test_a_broadcast_user_table_refuses_users_it_does_not_have():
    model = build_model(make_spec("dot", n_users=3, n_items=4, factors=2)).eval()
    payload = item_side_payload(
        model, {"kind": "dot", "n_users": 3, "n_items": 4, "factors": 2}, {}
    )
    batch = pa.RecordBatch.from_pydict(
        {
            "user_idx": pa.array([1, 3], pa.int32()),
            "items": pa.array([[0], []], pa.list_(pa.int32())),
        }
    )
    with pytest.raises(BadInputError, match="user index 3 is outside the model's 3 users"):
        list(recommend_batches(iter([batch]), payload, 2, 2, "cpu", users=UserTable.of(model)))
