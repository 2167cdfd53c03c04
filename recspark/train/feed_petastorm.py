"""The training feed through Petastorm: ``make_batch_reader`` + ``BatchedDataLoader``.

Whole row groups are read as columns (tens of millions of rows a second here), where petastorm's
row-by-row ``DataLoader`` manages about a hundredth of that. This module holds what petastorm needs
to keep the feed contract of :mod:`recspark.train.feeding`, and is imported only where the
petastorm feed is used: petastorm does not import past pyarrow 15 (:mod:`recspark.train.feed_arrow`
serves there).

- Order: petastorm's shuffling buffer would permute its rows with torch's global generator, which
  the step draws from too (dropout) in another thread, so the order would depend on thread timing;
  :func:`seeded_loader_class` draws them from the feed's own generator.
- Ends of epochs: petastorm 0.13.1's thread pool can end an epoch before reading anything
  (:func:`end_after_ventilation`), and its reader prints to stdout when it closes (:func:`closing`).
- Storage: petastorm hands its filesystem to pyarrow 14's legacy ``ParquetDataset``, which only
  takes the old ``pyarrow.filesystem`` API, and resolves non-local URLs through fsspec packages
  (s3fs, gcsfs) that recspark does not install; so :class:`LegacyFilesystem` adapts the same
  ``pyarrow.fs`` filesystem the rest of recspark uses, for local folders too. Petastorm takes the
  dataset's path from its URL with ``urlparse``, which would cut a path at ``#`` (``runs/team#1``
  read as ``runs/team``), ``?`` or ``;``: the URL it is given percent-encodes those
  (:func:`feed_url`), and the adapter, which sees every path petastorm uses, decodes them on the
  way in and encodes the names it lists on the way out.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import posixpath
import sys
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pyarrow.fs as pafs
import torch
from pyarrow import filesystem as legacy

from recspark.core.location import Location
from recspark.train.feed_spec import FeedSpec


def open_reader(location: Location, spec: FeedSpec) -> Any:
    """Petastorm's batch reader of one epoch over the prepared folder at ``location``, reading
    the row groups, columns and order ``spec`` asks for with ``spec.workers`` threads."""
    from petastorm import make_batch_reader

    if not location.is_local:
        # petastorm takes the dataset path from the URL (``bucket/key``) through fsspec, which
        # must know the scheme's name; the reading itself goes through the filesystem.
        _register_fsspec_scheme(location.scheme)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reader = make_batch_reader(
            feed_url(location),
            filesystem=LegacyFilesystem(location.filesystem),
            schema_fields=list(spec.fields),
            num_epochs=1,
            workers_count=spec.workers,
            shuffle_row_groups=spec.shuffle,
            seed=spec.seed,
            cur_shard=spec.shard,
            shard_count=spec.shard_count,
        )
    end_after_ventilation(reader)
    return reader


@contextlib.contextmanager
def closing(reader: Any) -> Iterator[Any]:
    """``with reader``, its closing chatter sent to stderr.

    Petastorm 0.13's reader prints "Cache cleanup complete." to stdout when it closes, and stdout
    carries a command's JSON summary line, which schedulers and scripts parse.
    """
    try:
        yield reader.__enter__()
    finally:
        with contextlib.redirect_stdout(sys.stderr):
            reader.__exit__(None, None, None)


def end_after_ventilation(reader: Any) -> None:
    """Make the reader's thread pool end an epoch only once every row group was handed out.

    Petastorm 0.13.1's ``ThreadPool.get_results`` ends the epoch when every worker has processed
    what it was given *and then* the ventilator (the thread handing out row groups) has finished.
    Read in that order, a ventilator that hands out everything between the two reads looks
    finished with nothing processed, and the epoch yields no rows at all (seen in 5-15% of the
    feeds here). The pool of :func:`ventilated_first_pool_class` reads the ventilator first.
    The pool has not been asked for a result yet when the reader is returned, so its class is
    swapped here; another pool (a later petastorm's) is left alone.
    """
    from petastorm.workers_pool.thread_pool import ThreadPool

    pool = getattr(reader, "_workers_pool", None)
    if type(pool) is ThreadPool and hasattr(pool, "all_workers_done"):
        pool.__class__ = ventilated_first_pool_class()


@functools.cache
def ventilated_first_pool_class() -> type:
    """Petastorm's ``ThreadPool`` whose workers count as done only after ventilation ended."""
    from petastorm.workers_pool.thread_pool import ThreadPool

    class VentilatedFirstPool(ThreadPool):
        def all_workers_done(self):
            # The ventilator's state first: once it has finished, every row group it handed out
            # is counted, so the workers' counts read next are final.
            ventilator = self._ventilator
            if ventilator is not None and not ventilator.completed():
                return False
            return super().all_workers_done()

    return VentilatedFirstPool


@functools.cache
def seeded_loader_class() -> type:
    """Petastorm's ``BatchedDataLoader``, its row shuffle drawn from a ``generator`` of its own.

    Petastorm 0.13.1's ``BatchedRandomShufflingBuffer`` (as 0.12.1's) draws a ``torch.randperm``
    of its rows from torch's global generator at its first retrieval after rows were added. This
    loader draws that permutation from its own generator just before, at the same point, so the
    buffer finds it and draws nothing. Built on first use: this module is imported where
    petastorm is not installed (:mod:`recspark.train.loop` on a bare GPU machine).
    """
    from petastorm.pytorch import BatchedDataLoader
    from petastorm.reader_impl.pytorch_shuffling_buffer import BatchedRandomShufflingBuffer

    class SeededBatchedDataLoader(BatchedDataLoader):
        def __init__(self, reader, batch_size, shuffling_queue_capacity, generator):
            super().__init__(
                reader, batch_size=batch_size, shuffling_queue_capacity=shuffling_queue_capacity
            )
            self.generator = generator

        def _yield_batches(self, keys):
            buffer = self._shuffling_buffer
            if (
                isinstance(buffer, BatchedRandomShufflingBuffer)
                and buffer._random_indices is None
                and buffer.can_retrieve()
            ):
                buffer.next_sample_head = 0
                buffer._random_indices = torch.randperm(buffer.size, generator=self.generator)
            yield from super()._yield_batches(keys)

    return SeededBatchedDataLoader


#: What ``urlparse`` would cut a URL's path at (or drop from it), percent-encoded with ``%``
#: itself, so that :func:`urllib.parse.unquote` gives the path back exactly.
_URL_UNSAFE = str.maketrans(
    {"%": "%25", "#": "%23", "?": "%3F", ";": "%3B", "\t": "%09", "\n": "%0A", "\r": "%0D"}
)


def url_path(path: str) -> str:
    """``path`` as a URL's path that ``urlparse`` keeps whole; :func:`unquote` reverses it."""
    return path.translate(_URL_UNSAFE)


def feed_url(location: Location) -> str:
    """The URL petastorm is given for ``location``: its path encoded by :func:`url_path`.

    Petastorm reads the dataset path out of it and hands that to :class:`LegacyFilesystem`,
    which decodes it.
    """
    if location.is_local:
        return "file://" + url_path(location.path)
    path = "" if location.path == "/" else location.path
    return f"{location.scheme}://{location.authority}{url_path(path)}"


class LegacyFilesystem(legacy.FileSystem):
    """A ``pyarrow.fs`` filesystem behind the old ``pyarrow.filesystem`` API petastorm needs.

    Only what pyarrow's legacy ``ParquetDataset`` and petastorm's readers call: listing, type
    checks and opening files for reading. Its paths are URL paths (:func:`url_path`), as
    petastorm takes them from the URL of :func:`feed_url`: decoded before ``filesystem`` sees
    them, and what it lists encoded, so that paths built from a listing decode right too.
    """

    def __init__(self, filesystem: pafs.FileSystem):
        self.fs = filesystem

    def _type(self, path: str) -> pafs.FileType:
        return self.fs.get_file_info(unquote(str(path))).type

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
        return self.fs.open_input_file(unquote(str(path)))

    def ls(self, path):
        selector = pafs.FileSelector(unquote(str(path)))
        return [url_path(info.path) for info in self.fs.get_file_info(selector)]

    def walk(self, path):
        infos = self.fs.get_file_info(pafs.FileSelector(unquote(str(path))))
        folders = sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)
        files = sorted(info.base_name for info in infos if info.type == pafs.FileType.File)
        folders, files = [url_path(name) for name in folders], [url_path(name) for name in files]
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
# petastorm 0.13 reads through pyarrow 14's legacy dataset API, which warns on every row group it
# reads (in reader threads, where a catch_warnings block does not reach).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
# The loader wraps read-only Arrow buffers as tensors without a copy; nothing writes to them.
warnings.filterwarnings(
    "ignore", message="The given NumPy array is not writable", module=r"petastorm\."
)
