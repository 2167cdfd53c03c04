"""The training feed read with pyarrow alone, for stacks where petastorm cannot run.

Petastorm reads through pyarrow's legacy ``ParquetDataset`` and ``pyarrow.filesystem``, which
pyarrow 15 and 16 removed, and Spark 4.1 requires pyarrow 15 or later: on a current stack
petastorm does not import. :func:`arrow_batches` reads the same prepared Parquet with pyarrow's
own API, under the same feed contract (:mod:`recspark.train.feeding`): the row groups of a shard
are those petastorm gives it (:func:`~recspark.train.feeding.shard_row_groups`), visited in the
same seeded order, and rows are shuffled in a buffer of ``shuffle_buffer`` rows by the feed's
own generator (:func:`~recspark.train.feeding.shuffle_generator`), never a global one. The
:class:`~recspark.train.prefetch.Prefetcher` reads it ahead as it does petastorm's loader.

The shuffle works in windows: once the buffer holds ``shuffle_buffer`` rows (or a batch, if that
is more), it is permuted and handed out in whole batches; the rows short of a batch stay and mix
with the next row groups. The last rows of the epoch make one shorter batch. Files are read one
row group at a time (a footer read once per file), through the :mod:`recspark.core.location`
filesystem of the path, so any store recspark reaches works.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from recspark.core.location import Location
from recspark.core.storage import parquet_files


def row_group_pieces(path: str) -> list[tuple[Location, int]]:
    """``(file, row group)`` of every row group under a Parquet folder, in petastorm's piece
    order (files sorted by path, row groups in file order)."""
    pieces = []
    for file in parquet_files(path):
        with file.open("rb") as handle:
            groups = pq.ParquetFile(handle).metadata.num_row_groups
        pieces.extend((file, index) for index in range(groups))
    return pieces


def _columns(table, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy() for name in fields}


def _batches_of(
    rows: dict[str, np.ndarray], batch_size: int, keep_tail: bool
) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """``rows`` cut into whole batches, and what is left short of a batch (none if not kept)."""
    count = len(next(iter(rows.values())))
    whole = count - count % batch_size if keep_tail else count
    batches = [
        {name: column[start : start + batch_size] for name, column in rows.items()}
        for start in range(0, whole, batch_size)
    ]
    return batches, {name: column[whole:] for name, column in rows.items()}


def arrow_batches(
    path: str,
    batch_size: int,
    order: list[int],
    generator: torch.Generator | None,
    shuffle_buffer: int,
    fields: tuple[str, ...],
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of dict batches (column -> NumPy array) from the row groups ``order`` names.

    Parameters
    ----------
    order
        Indices into :func:`row_group_pieces`, in the order to read them: one shard's, shuffled
        or not (:func:`~recspark.train.feeding.epoch_row_groups`).
    generator
        The row shuffle's generator; None reads rows in order.
    shuffle_buffer
        Rows shuffled together at least (see the module's docstring).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pieces = row_group_pieces(path)
    window = max(shuffle_buffer, batch_size) if generator is not None else batch_size
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    open_file: tuple[Location, Any, pq.ParquetFile] | None = None

    def flush(final: bool) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        rows = {name: np.concatenate([part[name] for part in pending]) for name in fields}
        if generator is not None:
            permutation = torch.randperm(len(rows[fields[0]]), generator=generator).numpy()
            rows = {name: column[permutation] for name, column in rows.items()}
        return _batches_of(rows, batch_size, keep_tail=not final)

    try:
        for index in order:
            file, group = pieces[index]
            if open_file is None or open_file[0] != file:
                if open_file is not None:
                    open_file[1].close()
                handle = file.open("rb")
                open_file = (file, handle, pq.ParquetFile(handle))
            part = _columns(open_file[2].read_row_group(group, columns=list(fields)), fields)
            pending.append(part)
            pending_rows += len(part[fields[0]])
            if pending_rows >= window:
                batches, tail = flush(final=False)
                yield from batches
                pending, pending_rows = [tail], len(tail[fields[0]])
        if pending_rows:
            batches, _ = flush(final=True)
            yield from batches
    finally:
        if open_file is not None:
            open_file[1].close()
