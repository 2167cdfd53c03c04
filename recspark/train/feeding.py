"""The training feed: prepared Parquet to PyTorch batches, under one contract, two ways.

``train.feed`` picks how the prepared splits are read: ``petastorm`` (``make_batch_reader`` +
``BatchedDataLoader``, :mod:`recspark.train.feed_petastorm`), ``arrow`` (pyarrow alone,
:mod:`recspark.train.feed_arrow`, for stacks petastorm cannot import on: pyarrow 15 and later),
or ``auto``: petastorm wherever it imports. Both keep one contract, tested against both:

- each epoch yields every row of the split exactly once across the processes of a run;
- shards are disjoint: row group ``i`` (files sorted by path, row groups in file order) belongs
  to shard ``i % shard_count``, as petastorm gives them (:func:`shard_row_groups`);
- the order is a function of the seed and the shard alone: the row groups of a shuffled epoch are
  visited in petastorm's seeded order, and rows are shuffled in a buffer by a generator of the
  feed's own (:func:`shuffle_generator`), never torch's or NumPy's global one, which the step
  draws from too (dropout) in another thread.

The feed overlaps with the step: a :class:`~recspark.train.prefetch.Prefetcher` thread pulls,
shuffles and casts batch ``i + 1`` (and, on a GPU, pins and copies it) while batch ``i`` trains,
so an epoch costs about the slower of reading and training rather than their sum. With one
reader thread a feed's batches are thus a function of its seed and shard alone, read ahead or
not; more petastorm reader threads read faster but let row groups arrive in any order.

The feed reads the prepared tables where they are: a local folder, or any store
:mod:`recspark.core.location` reaches (S3, GCS, HDFS).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import random
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.core.errors import ConfigError
from recspark.core.location import Location
from recspark.core.storage import parquet_files
from recspark.train.prefetch import Prefetcher, host_batch

FEED_FIELDS = (USER_IDX, ITEM_IDX, RATING)
FEEDS = ("auto", "petastorm", "arrow")


@functools.cache
def petastorm_available() -> bool:
    """Whether petastorm's batch reader imports here (it does not past pyarrow 15)."""
    try:
        import petastorm.pytorch  # noqa: F401
        from petastorm import make_batch_reader  # noqa: F401
    except Exception:  # ImportError, or pyarrow's missing legacy modules inside petastorm
        return False
    return True


def resolve_feed(feed: str) -> str:
    """``train.feed`` made concrete: ``auto`` is petastorm wherever it imports, else arrow.

    Raises
    ------
    ConfigError
        For an unknown feed, or ``petastorm`` where petastorm does not import.
    """
    if feed not in FEEDS:
        raise ConfigError(f"train.feed must be one of {list(FEEDS)}, got {feed!r}")
    if feed == "auto":
        return "petastorm" if petastorm_available() else "arrow"
    if feed == "petastorm" and not petastorm_available():
        raise ConfigError(
            "train.feed is petastorm but petastorm does not import with this pyarrow (it needs "
            "pyarrow < 15): set train.feed to auto or arrow"
        )
    return feed


def shard_row_groups(
    count: int, seed: int | None, shard: int | None, shard_count: int | None
) -> list[int]:
    """The row groups (indices in piece order) of one shard, as petastorm 0.13.1 picks them.

    Petastorm shuffles the indices with ``random.Random(seed)`` and keeps those whose index is
    ``shard`` modulo ``shard_count``: membership depends on the index alone, the order on the seed.
    """
    indices = list(range(count))
    if shard is None and shard_count is None:
        return indices
    if shard is None or not shard_count or not 0 <= shard < shard_count:
        raise ValueError(f"shard {shard} of {shard_count}: both are needed, 0 <= shard < count")
    if count < shard_count:
        raise ValueError(f"{count} row groups cannot make {shard_count} non-empty shards")
    if seed is not None:
        random.Random(seed).shuffle(indices)
    return [index for index in indices if index % shard_count == shard]


def epoch_row_groups(
    count: int, shuffle: bool, seed: int, shard: int | None, shard_count: int | None
) -> list[int]:
    """The row groups one epoch of one shard reads, in the order petastorm's ventilator hands
    them out: the shard's own order, permuted by ``numpy.random.default_rng(seed)`` when shuffled.
    """
    mine = shard_row_groups(count, seed, shard, shard_count)
    if not shuffle:
        return mine
    return [int(index) for index in np.random.default_rng(seed).permutation(mine)]


@contextlib.contextmanager
def open_feed(
    path: str,
    batch_size: int,
    shuffle: bool,
    seed: int,
    shard: int | None = None,
    shard_count: int | None = None,
    workers: int = 1,
    shuffle_buffer: int = 100_000,
    fields: tuple[str, ...] = FEED_FIELDS,
    device: torch.device | str = "cpu",
    prefetch: int = 2,
    feed: str = "auto",
) -> Iterator[Iterable[dict[str, Any]]]:
    """A one-epoch feed of dict batches ``{user_idx, item_idx, rating}``, read ahead in a thread.

    Batches hold tensors of the training dtypes (indices ``int64``, ratings ``float32``), on
    ``device`` when it is a GPU. Leaving the ``with`` block early (``max_steps``, an error) stops
    the read-ahead thread first, then the reader it pulls from.

    Parameters
    ----------
    path
        A prepared Parquet folder (``prepared/D/train``).
    shuffle
        Shuffle row groups (by ``seed``) and rows within a buffer of ``shuffle_buffer`` rows (by a
        generator of the feed's own, seeded from ``seed`` and ``shard``).
    shard, shard_count
        This process's share of the row groups, for data-parallel training.
    workers
        Petastorm's reader threads (the arrow feed reads in the read-ahead thread).
    device
        Where the batches are used: on a GPU they are pinned and copied one batch ahead.
    prefetch
        Batches read ahead by a background thread; 0 reads each batch in the caller's thread when
        it asks (the same batches, in the same order).
    feed
        ``train.feed`` (:func:`resolve_feed`).
    """
    if prefetch < 0:
        raise ValueError(f"prefetch must be 0 or more batches, got {prefetch}")
    location = Location(path)
    generator = shuffle_generator(seed, shard)
    with contextlib.ExitStack() as stack:
        if resolve_feed(feed) == "petastorm":
            from recspark.train import feed_petastorm

            reader = stack.enter_context(
                feed_petastorm.closing(
                    feed_petastorm.open_reader(
                        location, fields, shuffle, seed, shard, shard_count, workers
                    )
                )
            )
            loader = feed_petastorm.seeded_loader_class()(
                reader,
                batch_size=batch_size,
                shuffling_queue_capacity=shuffle_buffer if shuffle else 0,
                generator=generator,
            )
        else:
            from recspark.train.feed_arrow import arrow_batches

            order = epoch_row_groups(len(row_groups(path)), shuffle, seed, shard, shard_count)
            loader = arrow_batches(
                path, batch_size, order, generator if shuffle else None, shuffle_buffer, fields
            )
            stack.callback(getattr(loader, "close", lambda: None))
        if prefetch == 0:
            yield (host_batch(batch, pin=False) for batch in loader)
            return
        # Inside the reader's block: the thread is stopped before the reader it pulls from.
        with Prefetcher(loader, device, depth=prefetch) as batches:
            yield batches


def shuffle_generator(seed: int, shard: int | None) -> torch.Generator:
    """The generator of one feed's row shuffle: a function of its seed and shard alone."""
    digest = hashlib.sha256(f"row-shuffle:{seed}:{shard or 0}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def row_groups(path: str) -> list[int]:
    """Row counts of every row group under a Parquet folder, in petastorm's piece order."""
    counts = []
    for file in parquet_files(path):
        with file.open("rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
        counts.extend(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    return counts
