"""Feed and step in parallel: the next batch is read, cast, pinned and copied while one trains.

A batch iterator (petastorm's ``BatchedDataLoader``, or any iterator of dict batches) is drained
by a background thread into a small bounded queue. The thread does what would otherwise run in
series with the step: pulling the next batch from the reader, casting the columns to the dtypes
the model takes (indices ``int64``, ratings and weights ``float32``) and, for a CUDA device,
pinning them. The consumer starts the host-to-device copy of batch ``i + 1`` on a side CUDA stream
before it hands out batch ``i``, and the compute stream waits only on that batch's own copy
event, so the copy overlaps the step too. An epoch then costs about the slower of reading and
training, not their sum.

The training feed (:func:`recspark.train.feeding.open_feed`) hands petastorm's loader to it, so
the loader's shuffling runs in this thread: whatever that iterator draws at random must come from
a generator of its own, or thread timing would decide the order (the feed sees to that).
Nothing here knows petastorm or Spark: any iterator of dicts works, which is what lets
``benchmarks/bench_gpu.py`` measure the overlap on a machine with torch alone. Order is kept, an
exception in the reader is raised in the consumer, and leaving the ``with`` block early stops the
thread without reading the rest.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX, WEIGHT

#: The dtype each known column is cast to on the reader's side; other columns pass unchanged.
COLUMN_DTYPES = {
    USER_IDX: torch.long,
    ITEM_IDX: torch.long,
    RATING: torch.float32,
    WEIGHT: torch.float32,
}

_END = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def host_batch(batch: Mapping[str, Any], pin: bool) -> dict[str, Any]:
    """``batch`` with the known columns as CPU tensors of their training dtype, pinned if asked."""
    out: dict[str, Any] = {}
    for name, value in batch.items():
        dtype = COLUMN_DTYPES.get(name)
        if dtype is None or not isinstance(value, torch.Tensor | np.ndarray | list):
            out[name] = value
            continue
        if isinstance(value, np.ndarray) and not value.flags.writeable:
            value = value.copy()  # Arrow's buffers are read-only; torch wants memory it may own
        tensor = torch.as_tensor(value).to(dtype)
        out[name] = tensor.pin_memory() if pin else tensor
    return out


class Prefetcher:
    """Iterate ``batches`` with up to ``depth`` batches read ahead by a background thread.

    Parameters
    ----------
    batches
        Any iterable of dict batches (column name -> tensor or array).
    device
        Where the batches are used. For CUDA, tensors are pinned on the reader's side and copied
        with ``non_blocking`` on a side stream one batch ahead; for the CPU the batches are only
        read and cast ahead.
    depth
        Batches held ready at most (host memory: ``depth + 2`` batches).

    Use it as a context manager, so an early exit (an exception, ``max_steps``) stops the thread::

        with Prefetcher(loader, device) as batches:
            for batch in batches:
                ...
    """

    def __init__(self, batches: Iterable[Mapping[str, Any]], device: torch.device, depth: int = 2):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._source = batches
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None

    # -- the reader's side ----------------------------------------------------------------------

    def _put(self, item: Any) -> bool:
        """Queue ``item`` unless asked to stop; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        source = iter(self._source)
        try:
            # The stop flag is checked before each pull, so a closed feed reads nothing more.
            while not self._stop.is_set():
                try:
                    batch = next(source)
                except StopIteration:
                    break
                if not self._put(host_batch(batch, pin=self.cuda)):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failure(error))
            return
        self._put(_END)

    # -- the consumer's side --------------------------------------------------------------------

    def _take(self) -> Any:
        return self._queue.get()

    def _to_device(self, batch: dict[str, Any]) -> tuple[dict[str, Any], torch.cuda.Event | None]:
        if not self.cuda:
            return batch, None
        with torch.cuda.stream(self._stream):
            moved = {
                name: value.to(self.device, non_blocking=True)
                if isinstance(value, torch.Tensor)
                else value
                for name, value in batch.items()
            }
            ready = torch.cuda.Event()
            ready.record(self._stream)
        return moved, ready

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._thread is not None:
            raise RuntimeError("a Prefetcher is iterated once")
        self._thread = threading.Thread(target=self._read, name="recspark-prefetch", daemon=True)
        self._thread.start()
        item = self._take()
        if isinstance(item, _Failure):
            raise item.error
        pending = None if item is _END else self._to_device(item)
        while pending is not None:
            batch, ready = pending
            item = self._take()
            failure = item if isinstance(item, _Failure) else None
            # The next batch's copy is queued before this one is handed out: it overlaps the step.
            pending = None if item is _END or failure else self._to_device(item)
            if ready is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(ready)
                for value in batch.values():
                    if isinstance(value, torch.Tensor):
                        # The caching allocator must not reuse this memory before the step is done.
                        value.record_stream(current)
            yield batch
            if failure is not None:
                # Every batch read before the failure has been handed out; now the reader's error.
                raise failure.error

    def close(self) -> None:
        """Stop the reader thread (it finishes the batch it is reading) and drop what it queued."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not None:
            self._thread.join(timeout=60)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
