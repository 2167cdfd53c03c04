"""Feeding prepared Parquet to PyTorch through Petastorm's batched path.

``make_batch_reader`` + ``BatchedDataLoader`` reads whole row groups as columns (tens of millions of
rows a second here), where petastorm's row-by-row ``DataLoader`` manages about a hundredth of that.
Each process of a distributed run reads its own shard of row groups (``cur_shard``/``shard_count``).
With one reader thread and a seed the order of batches is repeatable; more threads read faster but
let row groups arrive in any order.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import pyarrow.parquet as pq
import torch

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.core.storage import local_path, uri

FEED_FIELDS = (USER_IDX, ITEM_IDX, RATING)


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
) -> Iterator[torch.utils.data.IterableDataset]:
    """A one-epoch loader of dict batches ``{user_idx, item_idx, rating}`` as tensors.

    Parameters
    ----------
    path
        A prepared Parquet folder (``prepared/D/train``).
    shuffle
        Shuffle row groups (by ``seed``) and rows within a buffer of ``shuffle_buffer`` rows.
    shard, shard_count
        This process's share of the row groups, for data-parallel training.
    """
    from petastorm import make_batch_reader
    from petastorm.pytorch import BatchedDataLoader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reader = make_batch_reader(
            uri(path),
            schema_fields=list(fields),
            num_epochs=1,
            workers_count=workers,
            shuffle_row_groups=shuffle,
            seed=seed,
            cur_shard=shard,
            shard_count=shard_count,
        )
    with reader:
        loader = BatchedDataLoader(
            reader, batch_size=batch_size, shuffling_queue_capacity=shuffle_buffer if shuffle else 0
        )
        yield loader


def row_groups(path: str) -> list[int]:
    """Row counts of every row group under a Parquet folder, in petastorm's piece order."""
    counts = []
    for file in sorted(local_path(path).glob("*.parquet")):
        metadata = pq.ParquetFile(file).metadata
        counts.extend(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    return counts


logging.getLogger("petastorm").setLevel(logging.WARNING)
# petastorm 0.12 reads through pyarrow 12's legacy dataset API, which warns on every row group it
# reads (in reader threads, where a catch_warnings block does not reach).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
# The loader wraps read-only Arrow buffers as tensors without a copy; nothing writes to them.
warnings.filterwarnings(
    "ignore", message="The given NumPy array is not writable", module=r"petastorm\."
)
