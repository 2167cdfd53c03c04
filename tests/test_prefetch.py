"""The overlap wrapper: batches read ahead in a thread, in order, errors raised, stopped on exit."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.train.prefetch import Prefetcher


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
    from recspark.model.embedding import build_model
    from recspark.train.loop import train_epoch
    from recspark.train.optim import make_optimizer

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
        model = build_model("dot_bias", n_users=30, n_items=20, factors=4)
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
