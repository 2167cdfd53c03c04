"""One definition of a user's list: score, recommend and evaluate share ``score.min_item_ratings``.
The tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_one_list.py.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
import torch

from recspark.core.config import load_config
from recspark.core.errors import BadInputError, ConfigError
from recspark.model.registry import build_model
from recspark.model.spec import make_spec
from recspark.serve.kernel import ScoringKernel, recommend_batches
from recspark.serve.scoring import item_side_payload


def test_kernel_leaves_out_ineligible_items_and_shortens_lists():
    model = build_model(make_spec("dot", n_users=2, n_items=6, factors=1))
    with torch.no_grad():
        model.item_factors.weight.copy_(torch.tensor([[6.0], [5.0], [4.0], [3.0], [2.0], [1.0]]))
    kernel = ScoringKernel(model.eval(), torch.device("cpu"))
    eligible = np.array([False, True, True, False, True, True])
    vectors = np.ones((2, 1), dtype=np.float32)
    # User 1 rated items 1, 2 and 4: with items 0 and 3 ineligible only item 5 is left.
    rows, items = np.array([1, 1, 1]), np.array([1, 2, 4])
    index, value, valid = kernel.block(
        vectors, np.zeros(2, np.float32), 3, rows, items, kernel.ineligible_items(eligible)
    )
    assert index[0].tolist() == [1, 2, 4] and value[0].tolist() == [5.0, 4.0, 2.0]
    assert valid[1].tolist() == [True, False, False] and index[1, 0] == 5
    # Every item eligible: nothing to mask.
    assert kernel.ineligible_items(np.ones(6, dtype=bool)) is None
    with pytest.raises(BadInputError, match="mask has shape"):
        kernel.ineligible_items(np.ones(5, dtype=bool))


def test_recommend_batches_apply_the_mask_to_every_user():
    model = build_model(make_spec("dot", n_users=1, n_items=4, factors=1))
    with torch.no_grad():
        model.item_factors.weight.copy_(torch.tensor([[4.0], [3.0], [2.0], [1.0]]))
    payload = item_side_payload(
        model, {"kind": "dot", "n_users": 1, "n_items": 4, "factors": 1}, {}
    )
    schema = pa.schema(
        [
            ("user_idx", pa.int32()),
            ("bias", pa.float32()),
            ("factors", pa.list_(pa.float32())),
            ("items", pa.list_(pa.int32())),
        ]
    )
    batch = pa.RecordBatch.from_pydict(
        {"user_idx": [0, 1], "bias": [0.0, 0.0], "factors": [[1.0], [1.0]], "items": [None, [2]]},
        schema=schema,
    )
    eligible = np.array([False, True, True, True])
    out = pa.Table.from_batches(
        list(recommend_batches(iter([batch]), payload, 3, 2, "cpu", eligible=eligible))
    ).to_pandas()
    assert out.groupby("user_idx")["item_idx"].apply(list).to_dict() == {0: [1, 2, 3], 1: [1, 3]}


def test_recommend_min_item_ratings_is_an_alias_that_moves(caplog):
    with caplog.at_level(logging.WARNING, logger="recspark.core.config"):
        config = load_config(None, ["recommend.min_item_ratings=3"])
    assert config.score.min_item_ratings == 3 and config.recommend.min_item_ratings is None
    assert "recommend.min_item_ratings is deprecated" in caplog.text
    assert load_config(None, []).score.min_item_ratings == 5
    same = load_config(None, ["recommend.min_item_ratings=2", "score.min_item_ratings=2"])
    assert same.score.min_item_ratings == 2
    with pytest.raises(ConfigError, match="disagree"):
        load_config(None, ["recommend.min_item_ratings=2", "score.min_item_ratings=4"])
    with pytest.raises(ConfigError, match=r"score\.min_item_ratings"):
        load_config(None, ["score.min_item_ratings=-1"])


def test_nightly_runs_score_and_evaluate_with_the_setting():
    from recspark.ops.nightly import settings_digest, stage_config

    config = load_config(None, ["score.min_item_ratings=7"])
    assert stage_config(config).score.min_item_ratings == 7
    # The old spelling moves to the same place: the same settings, the same digest.
    moved = load_config(None, ["recommend.min_item_ratings=7"])
    assert settings_digest(moved) == settings_digest(config)
