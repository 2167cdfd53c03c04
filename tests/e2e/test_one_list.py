"""One definition of a user's list: score, recommend and evaluate share ``score.min_item_ratings``.

A known user's list from ``recommend.user`` is the list ``score`` published for that user, item for
item, with items under the threshold left out of both; a folded-in user's list, an item's
neighbours and evaluate's top-k lists leave out the same items. The threshold is set on the tiny
trained run (``tests/conftest.py``) so that it rules out a good share of the catalogue, and of the
lists the model would otherwise make.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from recspark.commands import recommend
from recspark.core.config import load_config
from recspark.core.storage import Layout
from recspark.evaluate.assessment import read_split, top_k_lists
from recspark.evaluate.baselines import Scorer
from recspark.model.published import load_published_model
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
        result = recommend.run(config, spark).summary()
        listed = [row["item_id"] for row in result["recommendations"]]
        assert listed == published_lists[user_id], f"user {user_id}"
        np.testing.assert_allclose(
            [row["score"] for row in result["recommendations"]],
            published_scores[user_id],
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
    folded = recommend.run(
        load_config(None, [*overrides, f"recommend.ratings={pairs}"]), spark
    ).summary()
    neighbours = recommend.run(
        load_config(None, [*overrides, f"recommend.similar_to={item_ids[eligible][0]}"]), spark
    ).summary()
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
