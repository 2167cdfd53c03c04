"""The training loop on planted data: optimizers, schedules, early stopping, seeds, checkpoints.

The prepared tables are written here with pyarrow (no Spark), in the layout prepare writes:
several Parquet files of user_idx, item_idx, rating. Ratings come from planted rank-3 factors
plus a little noise, so a model that learned anything sits far below the spread of the ratings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import recspark.train.batching
import recspark.train.validation
from recspark.model.registry import build_model
from recspark.model.saving import carry_weights
from recspark.model.spec import make_spec
from recspark.train.batching import auto_batch_size, auto_epochs, plan_feed
from recspark.train.checkpoints import load_checkpoint, save_checkpoint
from recspark.train.feeding import open_feed, row_groups
from recspark.train.loop import TrainSettings, fit, init_model
from recspark.train.objectives import for_name
from recspark.train.objectives.base import ValidationFigures
from recspark.train.objectives.ranking import RankingObjective, RankingSettings
from recspark.train.objectives.rating import RatingObjective
from recspark.train.optim import Schedule, make_optimizer
from recspark.train.records import EpochRecord
from recspark.train.validation import HeldSplit, evaluate_split

CPU = torch.device("cpu")
SPEC = {"kind": "dot_bias", "n_users": 300, "n_items": 120, "factors": 6, "y_range": [0.5, 5.5]}


def planted_ratings(users: int, items: int, count: int, seed: int = 0, noise: float = 0.1):
    """(user_idx, item_idx, rating) of distinct pairs from planted rank-3 factors, in [1, 5]."""
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(0, 0.8, (users, 3))
    item_factors = rng.normal(0, 0.8, (items, 3))
    pairs = rng.choice(users * items, size=count, replace=False)
    user_idx, item_idx = pairs // items, pairs % items
    raw = (
        3.0 + (user_factors[user_idx] * item_factors[item_idx]).sum(1) + rng.normal(0, noise, count)
    )
    return (
        user_idx.astype(np.int32),
        item_idx.astype(np.int32),
        np.clip(raw, 1, 5).astype(np.float32),
    )


def write_split(folder: Path, users, items, ratings, file_rows: list[int]) -> None:
    """Write rows as one Parquet file (one row group) per entry of ``file_rows``."""
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for number, rows in enumerate(file_rows):
        part = slice(start, start + rows)
        table = pa.table(
            {"user_idx": users[part], "item_idx": items[part], "rating": ratings[part]}
        )
        pq.write_table(table, folder / f"part-{number:05d}.parquet")
        start += rows
    (folder / "_SUCCESS").touch()


def write_prepared(
    folder: Path,
    users: int = 300,
    items: int = 120,
    count: int = 12_000,
    seed: int = 0,
    train_files: list[int] | None = None,
) -> Path:
    """A prepared run folder (train, validation, manifest.json) of planted ratings."""
    user_idx, item_idx, rating = planted_ratings(users, items, count, seed)
    cut = int(count * 0.8)
    files = train_files or [cut // 4] * 3 + [cut - 3 * (cut // 4)]
    assert sum(files) == cut
    write_split(folder / "train", user_idx[:cut], item_idx[:cut], rating[:cut], files)
    rest = count - cut
    write_split(
        folder / "validation",
        user_idx[cut:],
        item_idx[cut:],
        rating[cut:],
        [rest // 2, rest - rest // 2],
    )
    manifest = {
        "run_date": folder.name,
        "users": users,
        "items": items,
        "rating_range": [1.0, 5.0],
        "input": {"fingerprint": f"planted-{seed}-{count}"},
        "counts": {"train": cut, "validation": rest, "cold_start": 0, "quarantined": 0},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    # The id maps as prepare writes them: raw ids (strings for users, longs for items) by index.
    maps = {
        "user_index": pd.DataFrame(
            {
                "user_id": [f"u{u}" for u in range(users)],
                "user_idx": np.arange(users, dtype=np.int32),
            }
        ),
        "item_index": pd.DataFrame(
            {
                "item_id": np.arange(items, dtype=np.int64) * 10,
                "item_idx": np.arange(items, dtype=np.int32),
            }
        ),
    }
    for name, frame in maps.items():
        (folder / name).mkdir(exist_ok=True)
        frame.to_parquet(folder / name / "part-0.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("planted") / "2026-01-15")


def quick(**changes) -> TrainSettings:
    values = {
        "epochs": 5,
        "batch_size": 512,
        "lr": 0.03,
        "weight_decay": 0.0005,
        "patience": 5,
        "seed": 11,
        "shuffle_buffer": 4096,
    }
    values.update(changes)
    return TrainSettings(**values)


def run(prepared: Path, settings: TrainSettings, spec: dict | None = None, **options):
    model = init_model(spec or SPEC, settings.seed)
    result = fit(
        model, str(prepared / "train"), str(prepared / "validation"), settings, CPU, **options
    )
    return model, result


def spread(prepared: Path) -> float:
    ratings = pq.read_table(prepared / "validation").column("rating").to_numpy()
    return float(ratings.std())


@pytest.mark.parametrize(
    "optimizer,lr,schedule",
    [
        ("sgd", 5.0, "one_cycle"),
        ("adam", 0.03, "one_cycle"),
        ("adamw", 0.03, "cosine"),
        ("sparse_adam", 0.03, "constant"),
        ("sparse_sgd", 5.0, "one_cycle"),
    ],
)
def test_every_optimizer_learns_the_planted_ratings(prepared, optimizer, lr, schedule):
    spec = {**SPEC, "sparse": optimizer.startswith("sparse")}
    model, result = run(prepared, quick(optimizer=optimizer, lr=lr, schedule=schedule), spec)
    rmse = result.history[result.best_epoch - 1].validation_rmse
    # Predicting the mean scores the spread of the ratings (~1.0); learning the factors ~0.3-0.5.
    assert rmse < 0.6 * spread(prepared), (optimizer, rmse, spread(prepared))
    figures = evaluate_split(model, str(prepared / "validation"), CPU)
    assert figures.rows == 2400 and figures.auc is None
    assert math.sqrt(figures.loss) == pytest.approx(rmse, rel=1e-5) == figures.rmse


def test_the_mlp_with_sparse_adam_trains_dense_layers_too(prepared):
    spec = {
        "kind": "mlp",
        "n_users": 300,
        "n_items": 120,
        "user_factors": 8,
        "item_factors": 8,
        "hidden": [16],
        "dropouts": [0.0],
        "y_range": [0.5, 5.5],
        "sparse": True,
    }
    model = init_model(spec, 3)
    before = model.layers[0].weight.detach().clone()
    fit(
        model,
        str(prepared / "train"),
        str(prepared / "validation"),
        quick(optimizer="sparse_adam", epochs=2),
        CPU,
    )
    assert not torch.equal(before, model.layers[0].weight)


def test_the_same_seed_repeats_a_run_exactly_and_another_seed_does_not(prepared):
    settings = quick(epochs=3)
    first, first_result = run(prepared, settings)
    second, second_result = run(prepared, settings)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    losses = [(r.train_loss, r.validation_loss) for r in first_result.history]
    assert losses == [(r.train_loss, r.validation_loss) for r in second_result.history]
    other, _ = run(prepared, dataclasses.replace(settings, seed=12))
    assert not torch.equal(first.user_factors.weight, other.user_factors.weight)


def test_a_killed_run_resumes_to_the_same_result(prepared, tmp_path):
    settings = quick(epochs=5, patience=2)
    whole, whole_result = run(prepared, settings)

    class Killed(Exception):
        pass

    def kill_after_epoch_2(record, model):
        if record.epoch == 2:
            raise Killed

    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        run(
            prepared,
            settings,
            checkpoint_dir=str(checkpoints),
            fingerprint="f1",
            on_epoch=kill_after_epoch_2,
        )
    assert (checkpoints / "last.pt").exists()
    resumed, resumed_result = run(
        prepared, settings, checkpoint_dir=str(checkpoints), resume=True, fingerprint="f1"
    )
    assert resumed_result.resumed_from_epoch == 2
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert [r.validation_loss for r in resumed_result.history] == [
        r.validation_loss for r in whole_result.history
    ]
    assert resumed_result.best_epoch == whole_result.best_epoch


def test_resuming_with_other_settings_is_refused(prepared, tmp_path):
    from recspark.core.errors import RecsparkError

    checkpoints = str(tmp_path / "checkpoints")
    run(prepared, quick(epochs=1), checkpoint_dir=checkpoints, fingerprint="one")
    with pytest.raises(RecsparkError, match=r"train.resume=false"):
        run(prepared, quick(epochs=1), checkpoint_dir=checkpoints, resume=True, fingerprint="two")


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    # Validation ratings are drawn independently of train: after the first epochs the model can
    # only fit noise that validation does not share, so its validation loss turns up.
    folder = write_prepared(tmp_path / "2026-01-15", count=6000)
    rng = np.random.default_rng(5)
    users, items, _ = planted_ratings(300, 120, 1200, seed=9)
    write_split(
        folder / "validation", users, items, rng.uniform(1, 5, 1200).astype(np.float32), [600, 600]
    )
    spec = {**SPEC, "factors": 32}
    settings = quick(epochs=30, patience=2, lr=0.05, weight_decay=0.0, schedule="constant")
    model, result = run(folder, settings, spec)
    assert result.stopped_early and len(result.history) < 30
    best = result.history[result.best_epoch - 1]
    later = result.history[result.best_epoch :]
    assert len(later) == 2 and all(r.validation_loss >= best.validation_loss for r in later)
    figures = evaluate_split(model, str(folder / "validation"), CPU)
    assert figures.loss == pytest.approx(best.validation_loss, rel=1e-6)


def test_a_diverging_loss_fails_loudly(prepared):
    spec = {"kind": "dot", "n_users": 300, "n_items": 120, "factors": 6}
    with pytest.raises(FloatingPointError, match=r"lower train.lr"):
        run(prepared, quick(optimizer="sgd", lr=1e4, schedule="constant", epochs=1), spec)


def test_an_id_outside_the_tables_fails_loudly(prepared):
    small = {**SPEC, "n_users": 100}
    with pytest.raises(IndexError):
        run(prepared, quick(epochs=1), small)


@pytest.mark.parametrize(
    "rows,expected",
    [(640_000, 4096), (8_000_000, 65536), (80_000, 1024), (10**9, 65536), (0, 1024)],
)
def test_an_auto_batch_size_follows_the_train_rows(rows, expected):
    assert auto_batch_size("auto", rows) == expected
    assert auto_batch_size(300, rows) == 300
    assert plan_feed([max(rows, 1)], "auto", 0, 1).batch_size == auto_batch_size(
        "auto", max(rows, 1)
    )


@pytest.mark.parametrize(
    "rows,expected",
    [(640_000, 8), (5_000_000, 8), (7_996_329, 5), (8_000_000, 5), (11_500_000, 3), (10**9, 3)],
)
def test_auto_epochs_follow_the_train_rows(rows, expected):
    assert auto_epochs("auto", rows) == expected
    assert auto_epochs(12, rows) == 12


def test_fit_with_auto_epochs_runs_as_many_as_the_train_rows_ask(prepared, monkeypatch):
    rows = pq.read_table(prepared / "train").num_rows
    _, result = run(prepared, quick(epochs="auto", patience=20))
    assert len(result.history) == 8  # a small table: every one of the most
    # A budget of 2.6 passes over this table: 3 epochs, the nearest whole number.
    monkeypatch.setattr(recspark.train.batching, "AUTO_EPOCH_ROWS", int(rows * 2.6))
    _, result = run(prepared, quick(epochs="auto", patience=20))
    assert len(result.history) == 3


def test_schedules_follow_their_shapes():
    def lrs(name: str, epochs: int = 4, steps: int = 10, **options) -> list[float]:
        model = build_model(make_spec("dot", 5, 5, factors=2))
        optimizer = make_optimizer(model, "adam", 0.1)
        schedule = Schedule(optimizer, name, 0.1, epochs, steps, **options)
        seen = []
        for _ in range(epochs * steps + 3):  # a few extra steps must be harmless
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return seen

    constant = lrs("constant")
    assert set(constant) == {0.1}
    cycle = lrs("one_cycle")
    peak = int(np.argmax(cycle))
    assert cycle[peak] == pytest.approx(0.1) and 0 < peak < 40
    assert cycle[0] < 0.01 and cycle[39] < 1e-4
    cosine = lrs("cosine", restart_epochs=1)
    assert [cosine[i] for i in (0, 10, 20, 30)] == pytest.approx([0.1] * 4)
    assert cosine[9] < 0.01
    doubling = lrs("cosine", restart_epochs=1, restart_mult=2)
    assert (
        doubling[10] == pytest.approx(0.1)
        and doubling[20] < 0.1
        and doubling[30] == pytest.approx(0.1)
    )


def test_feed_plan_keeps_processes_in_step_over_unequal_shards(tmp_path):
    users, items, ratings = planted_ratings(300, 120, 5000, seed=1)
    write_split(tmp_path / "train", users, items, ratings, [2000, 1000, 1500, 500])
    counts = row_groups(str(tmp_path / "train"))
    assert counts == [2000, 1000, 1500, 500]
    plans = [plan_feed(counts, 256, rank, 2) for rank in range(2)]
    # Petastorm gives row group i to shard i % 2: 3500 and 1500 rows.
    assert [p.steps_per_epoch for p in plans] == [plans[0].steps_per_epoch] * 2
    assert sum(p.batch_weight for p in plans) == pytest.approx(1.0)
    assert plans[0].batch_size / plans[1].batch_size == pytest.approx(3500 / 1500, rel=0.02)
    for rank, plan in enumerate(plans):
        with open_feed(
            str(tmp_path / "train"),
            plan.batch_size,
            shuffle=True,
            seed=3,
            shard=rank,
            shard_count=2,
        ) as batches:
            sizes = [len(batch["rating"]) for batch in batches]
        assert sum(sizes) == [3500, 1500][rank]
        assert len(sizes) >= plan.steps_per_epoch
    with pytest.raises(ValueError, match=r"fewer than train.num_processes"):
        plan_feed(counts, 256, 0, 5)


def test_for_name_builds_the_objective_model_objective_names():
    assert isinstance(for_name("rating"), RatingObjective)
    ranking = for_name("ranking", ranking=RankingSettings(loss="bpr", confidence="weight"))
    assert isinstance(ranking, RankingObjective) and ranking.settings.loss == "bpr"
    assert ranking.feed_fields == ("user_idx", "item_idx", "rating", "weight")
    with pytest.raises(ValueError, match=r"model.objective"):
        for_name("clicks")


def test_one_fit_trains_both_objectives_and_names_their_figures(prepared):
    """The rating and the ranking objective run through the same loop; each reports its own."""
    settings = quick(epochs=2)
    _, rating = run(prepared, settings, objective=for_name("rating"))
    ranking_spec = {**SPEC, "y_range": None}
    objective = for_name("ranking", ranking=RankingSettings(negatives=20, validation_items=50))
    _, ranking = run(prepared, settings, ranking_spec, objective=objective)
    for record in rating.history:
        assert record.validation_auc is None
        assert record.validation_rmse == pytest.approx(math.sqrt(record.validation_loss))
        assert record.validation_mae is not None
    for record in ranking.history:
        assert record.validation_rmse is None and record.validation_mae is None
        assert 0.0 <= record.validation_auc <= 1.0
        assert record.rows == 9600  # every train row read, each epoch
    # Early stopping keeps the epoch of the objective's own lowest validation loss.
    losses = [r.validation_loss for r in ranking.history]
    assert losses[ranking.best_epoch - 1] == min(losses)


def test_no_objective_runs_a_loop_of_its_own():
    """Objectives compute losses; only recspark.train.loop steps an optimizer or runs backward."""
    import ast

    import recspark.train.objectives as objectives

    folder = Path(objectives.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert {m.name for m in modules} >= {"base.py", "rating.py", "ranking.py"}
    for module in modules:
        tree = ast.parse(module.read_text())
        calls = {
            node.func.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        }
        assert not calls & {"backward", "step", "zero_grad"}, module.name
        names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert not names & {"train_epoch", "fit", "validation_loss"}, module.name


def test_validation_figures_pool_over_processes_as_means_over_rows():
    shards = [
        ValidationFigures(rows=3, loss=1.0, mse=1.0, mae=0.5),
        ValidationFigures(rows=1, loss=5.0, mse=5.0, mae=1.5),
    ]
    sums = [sum(parts) for parts in zip(*(f.sums() for f in shards), strict=True)]
    pooled = shards[0].pooled(sums)
    assert (pooled.rows, pooled.loss, pooled.mae, pooled.auc) == (4, 2.0, 0.75, None)
    assert pooled.rmse == pytest.approx(math.sqrt(2.0))
    assert pooled.describe() == "rmse 1.4142, mae 0.7500"
    ranking = ValidationFigures(rows=2, loss=3.0, auc=0.75)
    assert ranking.rmse is None and ranking.describe() == "auc 0.7500"


def legacy_layout(entry: dict) -> dict:
    """A history entry as metrics.json and checkpoints held it before figures had own names."""
    entry = dict(entry)
    auc = entry.pop("validation_auc")
    if auc is not None:
        entry["validation_rmse"] = math.sqrt(entry["validation_loss"])
        entry["validation_mae"] = 1.0 - auc
    return entry


def test_records_are_published_by_their_own_names_and_old_layouts_still_read():
    common = {
        "epoch": 1,
        "train_loss": 1.0,
        "rows": 10,
        "seconds": 1.0,
        "rows_per_second": 10.0,
        "lr": 0.1,
    }
    rating = EpochRecord(
        **common, validation_loss=0.25, validation_rmse=0.5, validation_mae=0.4, validation_auc=None
    )
    ranking = EpochRecord(
        **common,
        validation_loss=4.0,
        validation_rmse=None,
        validation_mae=None,
        validation_auc=0.75,
    )
    published = {
        "epoch",
        "train_loss",
        "validation_loss",
        "validation_rmse",
        "validation_mae",
        "validation_auc",
        "rows",
        "seconds",
        "rows_per_second",
        "lr",
    }
    assert set(rating.published()) == set(ranking.published()) == published
    assert rating.published()["validation_rmse"] == 0.5
    assert rating.published()["validation_auc"] is None
    # A ranking model's figures are never passed off as an RMSE or an MAE.
    assert ranking.published()["validation_rmse"] is None
    assert ranking.published()["validation_mae"] is None
    assert ranking.published()["validation_auc"] == 0.75
    # Checkpoints hold either layout; the old one is read back by the objective.
    assert EpochRecord.from_saved(ranking.published(), "ranking") == ranking
    assert EpochRecord.from_saved(legacy_layout(ranking.published()), "ranking") == ranking
    assert EpochRecord.from_saved(legacy_layout(rating.published()), "rating") == rating


def test_a_checkpoint_of_the_earlier_layout_still_resumes(prepared, tmp_path):
    settings = quick(epochs=3)
    whole, whole_result = run(prepared, settings)
    checkpoints = str(tmp_path / "checkpoints")

    def stop_after_epoch_1(record, model):
        if record.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(
            prepared,
            settings,
            checkpoint_dir=checkpoints,
            fingerprint="f",
            on_epoch=stop_after_epoch_1,
        )
    saved = load_checkpoint(checkpoints, "f")
    saved.history = [legacy_layout(EpochRecord(**entry).published()) for entry in saved.history]
    assert "validation_auc" not in saved.history[0]
    save_checkpoint(checkpoints, saved)
    resumed, resumed_result = run(
        prepared, settings, checkpoint_dir=checkpoints, resume=True, fingerprint="f"
    )
    assert resumed_result.resumed_from_epoch == 1
    first = resumed_result.history[0]
    assert first.validation_auc is None
    assert first.validation_rmse == whole_result.history[0].validation_rmse
    assert [r.validation_loss for r in resumed_result.history] == [
        r.validation_loss for r in whole_result.history
    ]
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_warm_start_carries_known_rows_and_leaves_new_ones_fresh():
    old_spec = {
        "kind": "mlp",
        "n_users": 4,
        "n_items": 3,
        "user_factors": 5,
        "item_factors": 4,
        "hidden": [6],
        "dropouts": [0.0],
    }
    old = init_model(old_spec, 1)
    new = init_model({**old_spec, "n_users": 7, "n_items": 5}, 2)
    fresh = new.user_factors.weight.detach().clone()
    carried = carry_weights(new, old.state_dict(), old_spec)
    assert carried == {"users": 4, "items": 3}
    assert torch.equal(new.user_factors.weight[:4], old.user_factors.weight)
    assert torch.equal(new.user_factors.weight[4:], fresh[4:])
    assert torch.equal(new.item_factors.weight[:3], old.item_factors.weight)
    assert torch.equal(new.layers[0].weight, old.layers[0].weight)
    with pytest.raises(ValueError, match="warm_start=false"):
        carry_weights(old, new.state_dict(), {**old_spec, "n_users": 7, "n_items": 5})


def test_a_held_split_is_read_once_and_gives_the_same_figures(prepared, monkeypatch):
    model = init_model(SPEC, 0)
    path = str(prepared / "validation")
    read = evaluate_split(model, path, CPU)
    held = HeldSplit()
    first = evaluate_split(model, path, CPU, held=held)
    assert held.batches is not None and sum(len(b["user_idx"]) for b in held.batches) == 2400

    def no_second_read(*args, **kwargs):
        raise AssertionError("a held split was read again")

    monkeypatch.setattr(recspark.train.validation, "read_feed", no_second_read)
    again = evaluate_split(model, path, CPU, held=held)
    assert read == first == again and first.rows == 2400
