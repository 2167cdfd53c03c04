"""The parameters of one epoch's feed, typed once: :class:`FeedSpec`.

The feed (:func:`recspark.train.feeding.read_feed`) and both of its readers
(:mod:`recspark.train.feed_petastorm`, :mod:`recspark.train.feed_arrow`) take a
:class:`FeedSpec` instead of a long list of arguments; it lives apart from them so that each
imports it without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX

#: The prepared columns every objective reads (ranking's confidence may add ``weight``).
FEED_FIELDS = (USER_IDX, ITEM_IDX, RATING)


@dataclass(frozen=True)
class FeedSpec:
    """How one epoch of one process reads a prepared split (the feed's parameters, typed once).

    Attributes
    ----------
    batch_size
        Rows per batch.
    shuffle
        Shuffle row groups (by ``seed``) and rows within a buffer of ``shuffle_buffer`` rows (by a
        generator of the feed's own, seeded from ``seed`` and ``shard``).
    seed
        The epoch's feed seed.
    shard, shard_count
        This process's share of the row groups, for data-parallel training.
    workers
        Petastorm's reader threads (the arrow feed reads in the read-ahead thread).
    shuffle_buffer
        Rows shuffled together at least.
    fields
        The prepared columns to read.
    prefetch
        Batches read ahead by a background thread; 0 reads each batch in the caller's thread when
        it asks (the same batches, in the same order).
    feed
        ``train.feed`` (:func:`recspark.train.feeding.resolve_feed`).
    """

    batch_size: int
    shuffle: bool
    seed: int
    shard: int | None = None
    shard_count: int | None = None
    workers: int = 1
    shuffle_buffer: int = 100_000
    fields: tuple[str, ...] = FEED_FIELDS
    prefetch: int = 2
    feed: str = "auto"
