"""The overlap wrapper: batches read ahead in a thread, in order, errors raised, stopped on exit.

And the training feed that uses it: petastorm's loader read ahead, its order a function of its
seed alone, however the consumer's thread draws from the global generators meanwhile.
"""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
import torch

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.train.feeding import open_feed
from recspark.train.prefetch import Prefetcher
from tests.unit.train.test_training import write_prepared, write_split

FEED_ROWS, FEED_GROUPS = 6000, 4


def numpy_batches(count: int, size: int = 8):
    for start in range(count):
        yield {
            USER_IDX: np.arange(start, start + size, dtype=np.int32),
            ITEM_IDX: np.arange(size, dtype=np.int32)[::-1].copy(),
            RATING: np.full(size, start, dtype=np.float64),
            "note": f"batch {start}",
        }


def test_batches_come_in_order_cast_to_training_dtypes():
    with Prefetcher(numpy_batches(5), torch.device("cpu")) as batches:
        seen = list(batches)
    assert [b["note"] for b in seen] == [f"batch {i}" for i in range(5)]
    first = seen[3]
    assert first[USER_IDX].dtype == torch.long and first[ITEM_IDX].dtype == torch.long
    assert first[RATING].dtype == torch.float32
    assert first[USER_IDX].tolist() == list(range(3, 11))
    assert first[RATING].tolist() == [3.0] * 8


def test_an_error_in_the_reader_is_raised_in_the_consumer_after_the_good_batches():
    def failing():
        yield from numpy_batches(3)
        raise OSError("row group 4 is unreadable")

    received = []
    with pytest.raises(OSError, match="row group 4"), Prefetcher(failing(), "cpu") as batches:
        for batch in batches:
            received.append(batch["note"])
    assert received == ["batch 0", "batch 1", "batch 2"]


def test_the_next_batch_is_read_while_the_current_one_is_in_use():
    """Batch 1 is read before the consumer is done with batch 0: reading and stepping overlap.

    Without a reader thread the source would not be asked for batch 1 until the consumer asked
    for it, so the event below could never be set while batch 0 is held.
    """
    reading_second = threading.Event()

    def source():
        for index, batch in enumerate(numpy_batches(3)):
            if index == 1:
                reading_second.set()
            yield batch

    with Prefetcher(source(), "cpu") as batches:
        iterator = iter(batches)
        first = next(iterator)
        overlapped = reading_second.wait(timeout=30)
        rest = list(iterator)
    assert first["note"] == "batch 0"
    assert overlapped, "the reader did not fetch batch 1 while batch 0 was in use"
    assert [b["note"] for b in rest] == ["batch 1", "batch 2"]


def test_leaving_early_stops_the_reader_without_reading_everything():
    pulled = itertools.count()

    def endless():
        for batch in numpy_batches(10**9):
            next(pulled)
            yield batch

    prefetcher = Prefetcher(endless(), "cpu", depth=2)
    with prefetcher as batches:
        for index, _ in enumerate(batches):
            if index == 1:
                break
    assert prefetcher._thread is not None and not prefetcher._thread.is_alive()
    # Two consumed, one in the consumer's look-ahead, at most depth queued, one in the reader's
    # hands; nothing is pulled once the feed is closed.
    assert next(pulled) <= 2 + 1 + 2 + 1


def test_training_through_the_prefetcher_matches_training_without_it():
    """The wrapper changes when batches are read, never what the loop computes."""
    from recspark.model.registry import build_model
    from recspark.model.spec import make_spec
    from recspark.train.optim import make_optimizer
    from recspark.train.steps import train_epoch

    generator = torch.Generator().manual_seed(0)
    users = torch.randint(0, 30, (512,), generator=generator)
    items = torch.randint(0, 20, (512,), generator=generator)
    ratings = torch.randint(1, 6, (512,), generator=generator).double()

    def batches():
        for start in range(0, 512, 64):
            yield {
                USER_IDX: users[start : start + 64].int(),
                ITEM_IDX: items[start : start + 64].int(),
                RATING: ratings[start : start + 64],
            }

    results = []
    for wrapped in (False, True):
        torch.manual_seed(1)
        model = build_model(make_spec("dot_bias", n_users=30, n_items=20, factors=4))
        optimizer = make_optimizer(model, "adam", lr=0.05)
        device = torch.device("cpu")
        if wrapped:
            with Prefetcher(batches(), device) as fed:
                loss, rows = train_epoch(model, fed, optimizer, None, device)
        else:
            loss, rows = train_epoch(model, batches(), optimizer, None, device)
        results.append((loss, rows, {k: v.clone() for k, v in model.state_dict().items()}))
    (plain_loss, plain_rows, plain), (fed_loss, fed_rows, fed) = results
    assert (fed_loss, fed_rows) == (plain_loss, plain_rows) and plain_rows == 512
    assert all(torch.equal(plain[k], fed[k]) for k in plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_on_cuda_batches_arrive_on_the_device():
    with Prefetcher(numpy_batches(4), torch.device("cuda")) as batches:
        seen = list(batches)
    assert all(b[USER_IDX].is_cuda and b[RATING].dtype == torch.float32 for b in seen)
    assert [int(b[USER_IDX][0]) for b in seen] == [0, 1, 2, 3]


# -- the training feed: petastorm's loader, read ahead ---------------------------------------------


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> str:
    """A train folder of FEED_GROUPS row groups whose ``user_idx`` is the row's number."""
    folder = tmp_path_factory.mktemp("numbered") / "train"
    rows = np.arange(FEED_ROWS, dtype=np.int32)
    write_split(folder, rows, rows % 50, (rows % 5 + 1).astype(np.float32), [1500] * FEED_GROUPS)
    return str(folder)


def feed_order(path: str, seed: int, prefetch: int, global_seed: int, draw: bool) -> list[list]:
    """The rows of each batch of one shuffled epoch; with ``draw``, the consumer's thread draws
    from torch's and NumPy's global generators between batches, as dropout does, at uneven times.
    """
    torch.manual_seed(global_seed)
    np.random.seed(global_seed)
    order = []
    with open_feed(
        path, 256, shuffle=True, seed=seed, shuffle_buffer=1500, prefetch=prefetch
    ) as batches:
        for index, batch in enumerate(batches):
            assert batch[USER_IDX].dtype == torch.long and batch[RATING].dtype == torch.float32
            order.append(batch[USER_IDX].tolist())
            if draw:
                torch.rand(1 + index % 7)
                torch.randperm(100 + index)
                np.random.random(index % 3)
                time.sleep(0.002 * (index % 3))
    return order


def test_the_feed_order_is_a_function_of_its_seed_not_of_the_threads_timing(numbered):
    """Two runs of an epoch give the same batches, read ahead or not, whatever the consumer draws.

    Petastorm's shuffling buffer would draw its permutations from torch's global generator, in the
    read-ahead thread, interleaved with the step's own draws at the mercy of thread timing.
    """
    quiet = feed_order(numbered, seed=5, prefetch=2, global_seed=0, draw=False)
    busy = feed_order(numbered, seed=5, prefetch=2, global_seed=1, draw=True)
    in_caller = feed_order(numbered, seed=5, prefetch=0, global_seed=2, draw=True)
    assert busy == quiet and in_caller == quiet
    rows = [row for batch in quiet for row in batch]
    assert sorted(rows) == list(range(FEED_ROWS)) and rows != sorted(rows)
    # The buffer mixes rows of different row groups into one batch.
    assert len({row // 1500 for row in quiet[0]}) > 1
    assert feed_order(numbered, seed=6, prefetch=2, global_seed=0, draw=False) != quiet


def test_the_feed_draws_from_no_global_generator(numbered):
    torch.manual_seed(3)
    np.random.seed(3)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    for prefetch in (0, 2):
        with open_feed(
            numbered, 256, shuffle=True, seed=1, shuffle_buffer=1500, prefetch=prefetch
        ) as batches:
            assert sum(len(batch[RATING]) for batch in batches) == FEED_ROWS
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


def test_leaving_the_feed_early_stops_the_thread_before_the_reader(numbered, monkeypatch):
    """``max_steps`` leaves the ``with`` block mid-epoch: the thread must not outlive its reader."""
    from petastorm.reader import Reader

    from recspark.model.registry import build_model
    from recspark.model.spec import make_spec
    from recspark.train.optim import make_optimizer
    from recspark.train.steps import train_epoch

    prefetchers, alive_at_stop = [], []
    stop = Reader.stop

    def recording_stop(reader):
        alive_at_stop.append([p._thread.is_alive() for p in prefetchers])
        stop(reader)

    monkeypatch.setattr(Reader, "stop", recording_stop)
    model = build_model(make_spec("dot_bias", n_users=FEED_ROWS, n_items=50, factors=4))
    optimizer = make_optimizer(model, "adam", lr=0.01)
    with open_feed(numbered, 256, shuffle=True, seed=1, shuffle_buffer=1500) as batches:
        prefetchers.append(batches)
        _, rows = train_epoch(model, batches, optimizer, None, torch.device("cpu"), max_steps=3)
        assert batches._thread.is_alive()  # 24 batches in the epoch: it is still reading ahead
    assert rows == 3 * 256
    assert alive_at_stop == [[False]]


def test_a_model_with_dropout_repeats_exactly_through_the_read_ahead_feed(tmp_path):
    """Dropout draws from torch's global generator in the step while the feed shuffles ahead."""
    from recspark.train.loop import TrainSettings, fit, init_model

    prepared = write_prepared(tmp_path / "2026-01-15")
    spec = {
        "kind": "mlp",
        "n_users": 300,
        "n_items": 120,
        "user_factors": 8,
        "item_factors": 8,
        "hidden": [16],
        "dropouts": [0.3],
        "embedding_dropout": 0.1,
        "y_range": [0.5, 5.5],
    }
    settings = TrainSettings(epochs=2, batch_size=256, lr=0.01, seed=7, shuffle_buffer=2048)
    runs = []
    for _ in range(2):
        model = init_model(spec, settings.seed)
        result = fit(
            model,
            str(prepared / "train"),
            str(prepared / "validation"),
            settings,
            torch.device("cpu"),
        )
        runs.append(
            (model.state_dict(), [(r.train_loss, r.validation_loss) for r in result.history])
        )
    (first, first_losses), (second, second_losses) = runs
    assert first_losses == second_losses
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_no_epoch_ends_before_its_row_groups_are_read(numbered):
    """Petastorm 0.13.1's thread pool could end an epoch before reading anything: it saw every
    worker idle, then the ventilator finished handing out row groups, and stopped with none read
    (5-15% of feeds here). Many short feeds in a row, each of which must yield every row."""
    for attempt in range(30):
        shuffle = attempt % 2 == 0
        with open_feed(numbered, 4096, shuffle=shuffle, seed=attempt, prefetch=0) as batches:
            assert sum(len(batch[RATING]) for batch in batches) == FEED_ROWS, attempt


def test_the_pool_counts_its_workers_done_only_once_ventilation_ended():
    """The race above, set up by hand: no row group handed out yet, the ventilator still running.
    Petastorm's own pool calls that "all done"; the feed's pool does not until ventilation ends."""
    import queue

    from petastorm.workers_pool.thread_pool import ThreadPool

    from recspark.train.feed_petastorm import ventilated_first_pool_class

    class Ventilator:
        finished = False

        def completed(self):
            return self.finished

    def pool_of(cls):
        pool = cls(1)
        pool._results_queues = [queue.Queue()]
        pool._ventilator = Ventilator()
        return pool

    assert pool_of(ThreadPool).all_workers_done()  # petastorm 0.13.1 would end the epoch here
    pool = pool_of(ventilated_first_pool_class())
    assert not pool.all_workers_done()
    pool._ventilator.finished = True
    assert pool.all_workers_done()
    pool._ventilated_items_by_worker = [1]  # a row group handed out, its result not yet taken
    assert not pool.all_workers_done()
