"""The training loop's typed hand-offs: records, plans, early stopping, the feed spec, the
distributed job and result, and checkpoint resume, each read back from what the code returns."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.model.registry import build_model
from recspark.model.spec import make_spec
from recspark.train import loop
from recspark.train.batching import plan_feed
from recspark.train.checkpoints import Checkpoint, capture, resume_state, save_checkpoint
from recspark.train.distributed import WorkerJob, WorkerResult
from recspark.train.feeding import FeedSpec, open_feed, read_feed
from recspark.train.objectives import for_name
from recspark.train.objectives.base import ValidationFigures
from recspark.train.optim import Schedule, make_optimizer
from recspark.train.records import EpochRecord, FitResult, validation_fields
from recspark.train.stopping import track_best


def record(epoch: int = 1, **changes) -> EpochRecord:
    figures = ValidationFigures(rows=10, loss=0.81, mse=0.81, mae=0.7)
    made = EpochRecord.of_epoch(
        epoch=epoch, train_loss=0.9, figures=figures, rows=100, seconds=2.0, lr=0.01
    )
    return dataclasses.replace(made, **changes)


def test_an_epoch_record_takes_its_figures_by_name_and_publishes_every_field():
    made = record()
    assert (made.validation_loss, made.validation_rmse, made.validation_mae) == (0.81, 0.9, 0.7)
    assert made.validation_auc is None and made.rows_per_second == 50.0
    published = made.published()
    assert list(published) == [f.name for f in dataclasses.fields(EpochRecord)]
    assert EpochRecord.from_saved(published, "rating") == made
    ranking = ValidationFigures(rows=4, loss=2.0, auc=0.75)
    assert validation_fields(ranking) == {
        "validation_loss": 2.0,
        "validation_rmse": None,
        "validation_mae": None,
        "validation_auc": 0.75,
    }


def test_an_epoch_of_no_time_has_no_rate():
    figures = ValidationFigures(rows=1, loss=1.0)
    made = EpochRecord.of_epoch(epoch=1, train_loss=1, figures=figures, rows=5, seconds=0, lr=1)
    assert math.isnan(made.rows_per_second)


def test_a_plan_gives_every_process_the_same_steps():
    plans = [plan_feed([3000, 1000, 500], 400, rank, 2) for rank in range(2)]
    assert {plan.steps_per_epoch for plan in plans} == {plans[0].max_steps}
    assert sum(plan.batch_weight for plan in plans) == pytest.approx(1.0)
    single = plan_feed([3000, 1000], 500, 0, 1)
    assert (single.shard, single.max_steps, single.steps_per_epoch) == (None, None, 8)


def test_early_stopping_keeps_the_best_weights_and_counts_patience():
    model = build_model(make_spec("dot", 4, 4, factors=2))
    state = Checkpoint()
    track_best(state, 1.0, 1, model, patience=2, epochs=5)
    assert (state.best_epoch, state.waited, state.stopped_early) == (1, 0, False)
    assert state.best_state is not None
    best = {name: value.clone() for name, value in state.best_state.items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    track_best(state, 1.0, 2, model, patience=2, epochs=5)  # no better: wait
    assert (state.best_epoch, state.waited, state.stopped_early) == (1, 1, False)
    track_best(state, 0.5 + 0.5, 3, model, patience=2, epochs=5)
    assert (state.waited, state.stopped_early) == (2, True)
    assert all(torch.equal(state.best_state[name], value) for name, value in best.items())
    last = Checkpoint(waited=1, best_loss=0.1)
    track_best(last, 0.2, 5, model, patience=2, epochs=5)
    assert not last.stopped_early  # the last epoch ends the run anyway


def test_resume_restores_a_saved_checkpoint_and_starts_fresh_without_one(tmp_path):
    model = build_model(make_spec("dot_bias", 5, 5, factors=2))
    optimizer = make_optimizer(model, "adam", 0.1)
    schedule = Schedule(optimizer, "one_cycle", 0.1, 3, 4)
    fresh = resume_state(
        str(tmp_path), "abc", resume=True, model=model, optimizer=optimizer, schedule=schedule
    )
    assert fresh == Checkpoint(fingerprint="abc")
    for _ in range(3):
        optimizer.step()
        schedule.step()
    state = Checkpoint(fingerprint="abc", epoch=2, best_epoch=2, best_loss=0.5)
    history = [record(1).published(), record(2).published()]
    capture(state, model=model, optimizer=optimizer, schedule=schedule, history=history)
    save_checkpoint(str(tmp_path), state)
    other = build_model(make_spec("dot_bias", 5, 5, factors=2))
    other_optimizer = make_optimizer(other, "adam", 0.1)
    other_schedule = Schedule(other_optimizer, "one_cycle", 0.1, 3, 4)
    resumed = resume_state(
        str(tmp_path),
        "abc",
        resume=True,
        model=other,
        optimizer=other_optimizer,
        schedule=other_schedule,
    )
    assert (resumed.epoch, resumed.best_epoch, resumed.history) == (2, 2, history)
    assert other_schedule.last_epoch == 3
    for name, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[name], value)
    untouched = resume_state(
        str(tmp_path), "abc", resume=False, model=other, optimizer=optimizer, schedule=schedule
    )
    assert untouched.epoch == 0


@pytest.fixture
def split(tmp_path):
    rows = 1000
    table = pa.table(
        {
            USER_IDX: np.arange(rows, dtype=np.int64),
            ITEM_IDX: np.arange(rows, dtype=np.int64) % 7,
            RATING: np.linspace(1, 5, rows).astype(np.float32),
        }
    )
    folder = tmp_path / "train"
    folder.mkdir()
    pq.write_table(table.slice(0, 600), folder / "part-0.parquet", row_group_size=200)
    pq.write_table(table.slice(600), folder / "part-1.parquet", row_group_size=200)
    return str(folder)


def test_a_feed_spec_reads_what_the_keyword_feed_reads(split):
    spec = FeedSpec(batch_size=64, shuffle=True, seed=5, shuffle_buffer=300, feed="arrow")
    with read_feed(split, spec) as batches:
        by_spec = [batch[USER_IDX].tolist() for batch in batches]
    with open_feed(split, 64, shuffle=True, seed=5, shuffle_buffer=300, feed="arrow") as batches:
        by_keywords = [batch[USER_IDX].tolist() for batch in batches]
    assert by_spec == by_keywords
    users = [user for batch in by_spec for user in batch]
    assert sorted(users) == list(range(1000))
    assert users != list(range(1000))  # shuffled
    with pytest.raises(TypeError):
        open_feed(split, 64, True, 5)  # shuffle and seed are keywords now


def test_the_worker_job_pickles_and_its_result_travels_as_plain_data():
    job = WorkerJob(
        spec={"kind": "dot", "n_users": 3, "n_items": 3, "factors": 2},
        initial_state=b"weights",
        train_path="/data/train",
        validation_path="/data/validation",
        settings=loop.TrainSettings(epochs=2),
        device_setting="auto",
        cpu_threads=None,
        objective=for_name("ranking"),
        checkpoint_dir=None,
        resume=False,
        fingerprint="f",
        storage={"fs.s3a.endpoint": "http://localhost"},
    )
    copied = pickle.loads(pickle.dumps(job))
    assert copied.settings == job.settings and copied.objective.name == "ranking"
    result = FitResult(history=[record(1)], best_epoch=1, devices=["cpu", "cpu"])
    state = {"weight": torch.ones(2)}
    plain = WorkerResult(state, result).plain()
    assert plain["history"] == [record(1).published()] and plain["devices"] == ["cpu", "cpu"]
    back = WorkerResult.from_plain(plain)
    assert back.result == result and torch.equal(back.state_dict["weight"], state["weight"])
    with pytest.raises(RuntimeError, match="not a training result"):
        WorkerResult.from_plain({"history": []})
