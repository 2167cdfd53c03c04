"""recommend end to end on a small synthetic run whose planted factors are the known answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recspark.core.location import Location
from recspark.data.synthetic import BIAS_SD, GLOBAL_MEAN, SyntheticSpec
from recspark.model.lists import lists_model
from recspark.model.saving import load_model
from recspark.serve.foldin import RankingFoldIn, fold_in, score_user
from recspark.serve.recommend import fold_in_regularization
from recspark.serve.similar import most_similar, read_item_factors
from tests.conftest import tiny_overrides
from tests.unit.serve.test_recommend import _run

RUN_DATE = "2026-01-15"
NEW_USERS = 40
RATED_PER_USER = 20
TOP_N = 10


@pytest.fixture(scope="module")
def trained(tiny_trained):
    """generate -> prepare -> train: a dot_bias model of the tiny planted data set (the session's
    ``tiny_trained`` of ``tests/conftest.py``, queried here with a plain path)."""
    root, _ = tiny_trained
    return root, tiny_overrides(root)


def _model_and_ids(root: Path):
    model, _, _ = load_model(root / "models" / RUN_DATE)
    index = pd.read_parquet(root / "prepared" / RUN_DATE / "item_index").sort_values("item_idx")
    return model, index["item_id"].to_numpy()


def _lists_model(root: Path):
    """The model the published lists rank by: the ranking head's (the default), at the
    ``lists.rating_weight`` the model was published with."""
    model, spec, meta = load_model(root / "models" / RUN_DATE)
    assert spec.get("lists_head"), "the default trains a ranking head beside the rating head"
    return lists_model(model, meta["lists_rating_weight"])[0]


def _planted_users(root: Path, count: int, seed: int):
    """New users drawn as the generator draws users, rating random items with its noise."""
    truth = json.loads((root / "data" / "truth" / "truth.json").read_text())["spec"]
    spec = SyntheticSpec(**truth)
    items = pd.read_parquet(root / "data" / "truth" / "items").sort_values("item_id")
    item_factors = np.stack(items["factors"].to_numpy()).astype(np.float64)
    item_bias = items["bias"].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(seed)
    users = []
    for _ in range(count):
        vector = rng.normal(0.0, spec.factor_sd, size=spec.factors)
        bias = rng.normal(0.0, BIAS_SD)
        preference = item_bias + item_factors @ vector  # the planted ranking of this user
        rated = rng.choice(spec.items, size=RATED_PER_USER, replace=False)
        noisy = (
            GLOBAL_MEAN + bias + preference[rated] + rng.normal(0.0, spec.noise, size=len(rated))
        )
        ratings = np.clip(np.round(noisy), 1, 5)
        users.append(
            (items["item_id"].to_numpy()[rated], ratings, items["item_id"].to_numpy(), preference)
        )
    return users


def _overlap(predicted, truth) -> float:
    return len(set(predicted) & set(truth)) / len(truth)


def test_fold_in_recovers_planted_preferences(trained):
    """The acceptance figure: top-10 of folded-in new users against their planted top-10."""
    root, _ = trained
    model, item_ids = _model_and_ids(root)
    position = {raw: i for i, raw in enumerate(item_ids)}
    metrics = json.loads((root / "models" / RUN_DATE / "metrics.json").read_text())
    regularization = fold_in_regularization(None, metrics)
    assert regularization == pytest.approx(0.02)  # the trainer's weight_decay (tiny_overrides)
    overlaps, baseline, correlations = [], [], []
    with torch.no_grad():
        popular = score_user(model, np.zeros(model.item_factors.embedding_dim), 0.0)
    for raw_rated, ratings, raw_all, preference in _planted_users(root, NEW_USERS, seed=123):
        rated = np.array([position[raw] for raw in raw_rated])
        user = fold_in(model, rated, ratings, regularization)
        scores = score_user(model, user.vector, user.bias)
        truth_by_idx = np.empty(model.n_items)
        truth_by_idx[[position[raw] for raw in raw_all]] = preference
        unrated = np.setdiff1d(np.arange(model.n_items), rated)
        best_true = unrated[np.argsort(-truth_by_idx[unrated], kind="stable")[:TOP_N]]
        best_folded = unrated[np.argsort(-scores[unrated], kind="stable")[:TOP_N]]
        best_popular = unrated[np.argsort(-popular[unrated], kind="stable")[:TOP_N]]
        overlaps.append(_overlap(best_folded, best_true))
        baseline.append(_overlap(best_popular, best_true))
        correlations.append(np.corrcoef(scores[unrated], truth_by_idx[unrated])[0, 1])
    mean_overlap, mean_baseline = float(np.mean(overlaps)), float(np.mean(baseline))
    print(
        f"\nfold-in from {RATED_PER_USER} ratings, {NEW_USERS} planted users: top-{TOP_N} overlap "
        f"{mean_overlap:.3f} (median {np.median(overlaps):.2f}), same-list-for-all baseline "
        f"{mean_baseline:.3f}, score/truth correlation {np.mean(correlations):.3f}"
    )
    assert mean_overlap >= 0.55
    assert mean_overlap >= mean_baseline + 0.25
    assert np.mean(correlations) >= 0.8


def test_new_user_through_the_command(trained, capsys):
    root, overrides = trained
    _, item_ids = _model_and_ids(root)
    model = _lists_model(root)
    raw_rated, ratings, *_ = _planted_users(root, 1, seed=7)[0]
    pairs = ",".join(f"{raw}={rating:g}" for raw, rating in zip(raw_rated, ratings, strict=True))
    status, summary = _run(
        "recommend", [*overrides, f"recommend.ratings={pairs}", "recommend.min_item_ratings=0"]
    )
    assert status == 0, summary
    listed = summary["recommendations"]
    assert len(listed) == TOP_N
    assert [set(row) for row in listed] == [{"item_id", "score", "title"}] * TOP_N
    assert all(row["title"] is None for row in listed)
    assert not {row["item_id"] for row in listed} & set(raw_rated.tolist())
    assert [row["score"] for row in listed] == sorted(
        (row["score"] for row in listed), reverse=True
    )
    # The same list as the library computes: the user folded into the lists model by the head's
    # softmax, every rated item a positive.
    position = {raw: i for i, raw in enumerate(item_ids)}
    rated = np.array([position[raw] for raw in raw_rated])
    user = fold_in(model, rated, ratings, summary["metrics"]["regularization"], RankingFoldIn())
    scores = score_user(model, user.vector, user.bias)
    scores[rated] = -np.inf
    assert [row["item_id"] for row in listed] == item_ids[
        np.argsort(-scores, kind="stable")[:TOP_N]
    ].tolist()
    assert summary["metrics"]["mode"] == "new_user" and summary["metrics"]["objective"] == "ranking"
    err = capsys.readouterr().err
    assert "new user folded in from 20 ratings" in err and str(listed[0]["item_id"]) in err


def test_existing_user_gets_the_scored_list(trained):
    root, overrides = trained
    _, item_ids = _model_and_ids(root)
    model = _lists_model(root)
    users = pd.read_parquet(root / "prepared" / RUN_DATE / "user_index")
    user_id = int(users.loc[users.user_idx == 17, "user_id"].item())
    status, summary = _run(
        "recommend", [*overrides, f"recommend.user={user_id}", "recommend.min_item_ratings=0"]
    )
    assert status == 0, summary
    rated = pd.concat(
        pd.read_parquet(root / "prepared" / RUN_DATE / name)
        for name in ("train", "validation", "cold_start")
    )
    with torch.no_grad():
        scores = (
            model.score_items(torch.tensor([17]), torch.arange(model.n_items))[0].numpy().copy()
        )
    scores[rated.loc[rated.user_idx == 17, "item_idx"].to_numpy()] = -np.inf
    expected = item_ids[np.argsort(-scores, kind="stable")[:TOP_N]].tolist()
    assert [row["item_id"] for row in summary["recommendations"]] == expected
    np.testing.assert_allclose(
        [row["score"] for row in summary["recommendations"]],
        np.sort(scores)[::-1][:TOP_N],
        atol=1e-5,
    )


def test_similar_to_with_titles_and_the_batch_outputs(trained, tmp_path):
    root, overrides = trained
    _, item_ids = _model_and_ids(root)
    titles = tmp_path / "movies.csv"
    titles.write_text(
        "movieId,title,genres\n" + "".join(f'{raw},"Film {raw}, The",Drama\n' for raw in item_ids)
    )
    status, summary = _run(
        "recommend",
        [
            *overrides,
            f"recommend.similar_to={item_ids[3]}",
            f"recommend.titles_path={titles}",
            "recommend.similar_table=true",
            "recommend.pca_plot=true",
            "recommend.top_n=5",
        ],
    )
    assert status == 0, summary
    side = read_item_factors(str(root / "models" / RUN_DATE / "item_factors"))
    train = pd.read_parquet(root / "prepared" / RUN_DATE / "train")
    eligible = np.bincount(train["item_idx"], minlength=len(item_ids)) >= 5
    index, cosine = most_similar(side.factors, 3, 5, eligible)
    listed = summary["recommendations"]
    assert [row["item_id"] for row in listed] == item_ids[index].tolist()
    np.testing.assert_allclose([row["score"] for row in listed], cosine, atol=1e-5)
    assert listed[0]["title"] == f"Film {item_ids[index[0]]}, The"
    # The "more like this" table: published whole, raw ids, top 5 of every item.
    partition = Location(summary["outputs"]["similar_items"])
    assert partition.name == f"run_date={RUN_DATE}" and (partition / "_SUCCESS").exists()
    table = pd.read_parquet(partition)
    assert len(table) == summary["counts"]["similar_rows"] == 5 * len(item_ids)
    assert set(table.columns) == {
        "item_id",
        "similar_item_id",
        "rank",
        "similarity",
        "model_version",
    }
    same = table[table.item_id == item_ids[3]].sort_values("rank")
    assert same["similar_item_id"].tolist() == item_ids[index].tolist()
    assert (table.item_id != table.similar_item_id).all()
    # The exploration outputs.
    assert Location(summary["outputs"]["pca_plot"]).size() > 10_000
    pca = json.loads(Location(summary["outputs"]["pca_summary"]).read_text())
    assert pca["variance_share"][0] == pytest.approx(
        summary["metrics"]["pca_variance_share"][0], abs=1e-6
    )
    assert pca["components"][0]["high"][0]["title"].startswith("Film ")


@pytest.mark.parametrize(
    "setting, status_code, message",
    [
        ("recommend.ratings=1=5,99999=4", 1, "99999"),
        ("recommend.ratings=1=5,2", 1, "not ITEM=RATING"),
        ("recommend.ratings=1=9", 1, "outside the rating range"),
        ("recommend.ratings=x=4", 1, "not an integer"),
        ("recommend.user=99999999", 1, "not in the model's user index"),
        ("recommend.similar_to=99999", 1, "99999"),
        ("recommend.top_n=3", 2, "needs a query"),
    ],
)
def test_bad_queries_get_clear_errors(trained, setting, status_code, message):
    _, overrides = trained
    status, summary = _run("recommend", [*overrides, setting])
    assert status == status_code and summary["status"] == "error"
    assert message in summary["error"]


class PlantedHook:
    """Pickles as a call of ``Path.touch(marker)``: what a tampered ``model.pt`` would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_recommend_refuses_a_model_file_that_holds_code(trained, tmp_path):
    """A ``model.pt`` whose meta holds a pickled object with a ``__reduce__`` hook: exit 1, the
    reason on the summary line, and the hook never ran."""
    root, overrides = trained
    copy = tmp_path / "root"
    for name in ("models", "prepared"):
        shutil.copytree(root / name, copy / name)
    marker = tmp_path / "hook-ran"
    model_file = copy / "models" / RUN_DATE / "model.pt"
    payload = torch.load(model_file, weights_only=True)
    payload["meta"]["note"] = PlantedHook(marker)
    torch.save(payload, model_file)
    status, summary = _run(
        "recommend", [*overrides, f"paths.root={copy}", "recommend.similar_to=1"]
    )
    assert status == 1 and summary["status"] == "error", summary
    assert "is not a recspark model" in summary["error"]
    assert "holds code/objects that are not plain data: refusing to load it" in summary["error"]
    assert not marker.exists()
