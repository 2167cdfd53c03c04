"""One definition of a user's list: score, recommend and evaluate share ``score.min_item_ratings``.

A known user's list from ``recommend.user`` is the list ``score`` published for that user, item for
item, with items under the threshold left out of both; a folded-in user's list, an item's
neighbours and evaluate's top-k lists leave out the same items. The threshold is set on the tiny
trained run (``tests/conftest.py``) so that it rules out a good share of the catalogue, and of the
lists the model would otherwise make.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from recspark.commands import recommend
from recspark.core.config import load_config
from recspark.core.errors import BadInputError, ConfigError
from recspark.core.storage import Layout
from recspark.evaluate.assessment import read_split, top_k_lists
from recspark.evaluate.baselines import Scorer
from recspark.model.published import load_published_model
from recspark.model.registry import build_model
from recspark.serve.kernel import ScoringKernel, recommend_batches
from recspark.serve.scoring import item_side_payload
from tests.conftest import run_quietly, tiny_overrides

RUN_DATE = "2026-01-15"
TOP_N = 10
USERS = 20


def _unfiltered_lists(root) -> dict[int, np.ndarray]:
    """Every user's top-N of the items it did not rate, with no item left out for rarity."""
    model, _ = load_published_model(Layout(root), RUN_DATE)
    prepared = root / "prepared" / RUN_DATE
    rated = pd.concat(
        pd.read_parquet(prepared / name, columns=["user_idx", "item_idx"])
        for name in ("train", "validation", "cold_start")
    )
    with torch.no_grad():
        scores = model.score_items(torch.arange(model.n_users), torch.arange(model.n_items))
    scores = scores.numpy().copy()
    scores[rated["user_idx"].to_numpy(), rated["item_idx"].to_numpy()] = -np.inf
    return {user: np.argsort(-scores[user], kind="stable")[:TOP_N] for user in range(len(scores))}


@pytest.fixture(scope="module")
def published(tiny_trained, tmp_path_factory):
    """The tiny trained run (copied: its recommendations are this module's), a threshold that
    rules out the rarest ~40% of items, and the lists ``score`` published with it."""
    source, _ = tiny_trained
    root = tmp_path_factory.mktemp("one-list")
    for name in ("models", "prepared"):
        shutil.copytree(source / name, root / name)
    train = pd.read_parquet(root / "prepared" / RUN_DATE / "train", columns=["item_idx"])
    item_index = pd.read_parquet(root / "prepared" / RUN_DATE / "item_index")
    counts = np.bincount(train["item_idx"], minlength=len(item_index))
    threshold = int(np.quantile(counts, 0.4)) + 1
    eligible = counts >= threshold
    overrides = tiny_overrides(root, **{"score.min_item_ratings": threshold})
    status, summary = run_quietly("score", overrides)
    assert status == 0, summary
    table = pd.read_parquet(root / "recommendations" / f"run_date={RUN_DATE}")
    item_ids = item_index.sort_values("item_idx")["item_id"].to_numpy()
    return root, overrides, eligible, item_ids, summary, table.sort_values(["user_id", "rank"])


def test_score_lists_only_items_with_enough_train_ratings(published):
    _, _, eligible, item_ids, summary, table = published
    assert 0.2 < 1 - eligible.mean() < 0.6  # the threshold rules out a good share of items
    assert summary["metrics"]["eligible_items"] == int(eligible.sum())
    assert not set(table["item_id"]) & set(item_ids[~eligible])
    assert (table.groupby("user_id").size() == TOP_N).all()


def test_recommend_gives_each_user_the_list_score_published(spark, published):
    root, overrides, eligible, item_ids, _, table = published
    unfiltered = _unfiltered_lists(root)
    users = pd.read_parquet(root / "prepared" / RUN_DATE / "user_index").sort_values("user_idx")
    # Users whose list the threshold changes (the model would list a rare item) and users whose
    # list it leaves as it is, half and half: score ignoring the threshold fails the first half.
    filtered = [u for u in users["user_idx"] if not eligible[unfiltered[u]].all()]
    untouched = [u for u in users["user_idx"] if eligible[unfiltered[u]].all()]
    assert len(filtered) >= USERS // 2, "the threshold changes too few lists to test anything"
    chosen = filtered[: USERS - min(len(untouched), USERS // 2)] + untouched[: USERS // 2]
    assert len(chosen) == USERS
    published_lists = table.groupby("user_id")["item_id"].apply(list).to_dict()
    published_scores = table.groupby("user_id")["score"].apply(list).to_dict()
    raw_user = dict(zip(users["user_idx"], users["user_id"], strict=True))
    for user_idx in chosen:
        user_id = raw_user[user_idx]
        config = load_config(None, [*overrides, f"recommend.user={user_id}"])
        result = recommend.run(config, spark)
        listed = [row["item_id"] for row in result["recommendations"]]
        assert listed == published_lists[user_id], f"user {user_id}"
        np.testing.assert_allclose(
            [row["score"] for row in result["recommendations"]], published_scores[user_id],
            atol=1e-5,
        )
        assert result["metrics"]["eligible_items"] == int(eligible.sum())
    # The published lists of the first half differ from what the model would list unfiltered.
    assert all(
        published_lists[raw_user[u]] != item_ids[unfiltered[u]].tolist() for u in filtered[:5]
    )


def test_a_new_user_and_similar_items_leave_out_the_same_items(spark, published):
    _, overrides, eligible, item_ids, _, _ = published
    rare = item_ids[~eligible]
    pairs = ",".join(f"{item}=5" for item in item_ids[eligible][:5])
    folded = recommend.run(load_config(None, [*overrides, f"recommend.ratings={pairs}"]), spark)
    neighbours = recommend.run(
        load_config(None, [*overrides, f"recommend.similar_to={item_ids[eligible][0]}"]), spark
    )
    for result in (folded, neighbours):
        listed = [row["item_id"] for row in result["recommendations"]]
        assert len(listed) == TOP_N and not set(listed) & set(rare)
        assert result["metrics"]["eligible_items"] == int(eligible.sum())


def test_evaluate_ranks_the_same_candidates(spark, published):
    root, overrides, eligible, _, _, _ = published
    model, model_info = load_published_model(Layout(root), RUN_DATE)
    scorer = Scorer(
        spark.read.parquet(str(model_info.folder / "user_factors")),
        item_side_payload(model, model_info.spec.as_dict(), model_info.meta.as_dict()),
    )
    prepared = root / "prepared" / RUN_DATE
    threshold = load_config(None, overrides).score.min_item_ratings
    split = read_split(spark, prepared, model.n_items, TOP_N, 0.0, threshold)
    np.testing.assert_array_equal(split.eligible, eligible)
    listed = top_k_lists(spark, scorer, split, device="cpu").select("item_idx").distinct()
    assert eligible[[row.item_idx for row in listed.collect()]].all()
    # Without the threshold the same lists hold rare items: the filter is what keeps them out.
    every = read_split(spark, prepared, model.n_items, TOP_N, 0.0)
    assert every.eligible is None
    listed = top_k_lists(spark, scorer, every, device="cpu").select("item_idx").distinct()
    assert not eligible[[row.item_idx for row in listed.collect()]].all()


def test_kernel_leaves_out_ineligible_items_and_shortens_lists():
    model = build_model("dot", n_users=2, n_items=6, factors=1)
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
    model = build_model("dot", n_users=1, n_items=4, factors=1)
    with torch.no_grad():
        model.item_factors.weight.copy_(torch.tensor([[4.0], [3.0], [2.0], [1.0]]))
    payload = item_side_payload(model, {"kind": "dot", "n_users": 1, "n_items": 4, "factors": 1}, {})
    schema = pa.schema([("user_idx", pa.int32()), ("bias", pa.float32()),
                        ("factors", pa.list_(pa.float32())), ("items", pa.list_(pa.int32()))])
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
