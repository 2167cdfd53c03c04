"""Feeding prepared Parquet to PyTorch through Petastorm's batched path.

``make_batch_reader`` + ``BatchedDataLoader`` reads whole row groups as columns (tens of millions of
rows a second here), where petastorm's row-by-row ``DataLoader`` manages about a hundredth of that.
Each process of a distributed run reads its own shard of row groups (``cur_shard``/``shard_count``).
With one reader thread and a seed the order of batches is repeatable; more threads read faster but
let row groups arrive in any order.

The feed reads the prepared tables where they are: a local folder, or any store
:mod:`recspark.core.location` reaches (S3, GCS, HDFS). Petastorm 0.12 hands its filesystem to
pyarrow 12's legacy ``ParquetDataset``, which only takes the old ``pyarrow.filesystem`` API, and
resolves non-local URLs through fsspec packages (s3fs, gcsfs) that recspark does not install; so
:class:`LegacyFilesystem` adapts the same ``pyarrow.fs`` filesystem the rest of recspark uses.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import warnings
from collections.abc import Iterator

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from pyarrow import filesystem as legacy

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.core.location import Location
from recspark.core.storage import parquet_files

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

    location = Location(path)
    url, filesystem = location.uri, None
    if not location.is_local:
        # petastorm takes the dataset path from the URL (``bucket/key``) through fsspec, which
        # must know the scheme's name; the reading itself goes through ``filesystem``.
        _register_fsspec_scheme(location.scheme)
        filesystem = LegacyFilesystem(location.filesystem)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reader = make_batch_reader(
            url,
            filesystem=filesystem,
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
    for file in parquet_files(path):
        with file.open("rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
        counts.extend(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    return counts


class LegacyFilesystem(legacy.FileSystem):
    """A ``pyarrow.fs`` filesystem behind the old ``pyarrow.filesystem`` API petastorm needs.

    Only what pyarrow's legacy ``ParquetDataset`` and petastorm's readers call: listing, type
    checks and opening files for reading.
    """

    def __init__(self, filesystem: pafs.FileSystem):
        self.fs = filesystem

    def _type(self, path: str) -> pafs.FileType:
        return self.fs.get_file_info(str(path)).type

    def isdir(self, path):
        return self._type(path) == pafs.FileType.Directory

    def isfile(self, path):
        return self._type(path) == pafs.FileType.File

    def exists(self, path):
        return self._type(path) != pafs.FileType.NotFound

    def _isfilestore(self):
        return False

    @property
    def pathsep(self):
        return "/"

    def open(self, path, mode="rb"):
        if mode != "rb":
            raise ValueError("the training feed only reads")
        return self.fs.open_input_file(str(path))

    def ls(self, path):
        return [info.path for info in self.fs.get_file_info(pafs.FileSelector(str(path)))]

    def walk(self, path):
        infos = self.fs.get_file_info(pafs.FileSelector(str(path)))
        folders = sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)
        files = sorted(info.base_name for info in infos if info.type == pafs.FileType.File)
        yield str(path), folders, files
        for folder in folders:
            yield from self.walk(posixpath.join(str(path), folder))


def _register_fsspec_scheme(scheme: str) -> None:
    """Let fsspec parse ``scheme://bucket/key`` URLs (petastorm asks it for the path part)."""
    import fsspec
    from fsspec.implementations.arrow import ArrowFSWrapper

    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError):  # unknown, or known but its package (s3fs...) is absent
        names = type(f"{scheme.title()}Url", (ArrowFSWrapper,), {"protocol": (scheme,)})
        fsspec.register_implementation(scheme, names, clobber=True)


logging.getLogger("petastorm").setLevel(logging.WARNING)
# petastorm 0.12 reads through pyarrow 12's legacy dataset API, which warns on every row group it
# reads (in reader threads, where a catch_warnings block does not reach).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
# The loader wraps read-only Arrow buffers as tensors without a copy; nothing writes to them.
warnings.filterwarnings(
    "ignore", message="The given NumPy array is not writable", module=r"petastorm\."
)
