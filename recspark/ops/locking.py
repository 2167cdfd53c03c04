"""An exclusive lock per ``paths.root``, so two scheduled runs never work on one root at once.

The lock is an ``fcntl.flock`` on ``<root>/_nightly/lock``, held for the whole run. The kernel
drops it when the holding process exits for any reason, ``kill -9`` included, so a crashed run
never leaves a lock that blocks the next one. The file also records who holds it (pid, host, start
time, run date) for the message a second run prints, and as a fallback for filesystems that do not
share ``flock`` between hosts: a record left by another host that is younger than
``stale_after_hours`` is honoured even when ``flock`` succeeds, an older one is taken over with a
warning. A clean release empties the record.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from recspark.core.errors import LockHeldError

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _read_record(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return {"unreadable": raw[:200].decode(errors="replace")}
    return record if isinstance(record, dict) else None


def _describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "a process that left no record"
    return (
        f"pid {record.get('pid')} on host {record.get('host')} since {record.get('started_at')}"
        f" (run_date {record.get('run_date')})"
    )


class RunLock:
    """Context manager holding the lock file ``path`` exclusively, without waiting.

    Parameters
    ----------
    path
        The lock file; its folder is created when missing.
    run_date
        Recorded in the lock file so that a second run can say what the holder is doing.
    stale_after_hours
        Age after which a record left by *another host* is taken over (see the module docstring).

    Attributes
    ----------
    previous
        The record of a holder that died without releasing the lock (same host) or that was
        taken over as stale (another host); ``None`` after a clean release.
    """

    def __init__(self, path: str | os.PathLike, run_date: str, stale_after_hours: float = 24.0):
        self.path = Path(path)
        self.run_date = str(run_date)
        self.stale_after = dt.timedelta(hours=stale_after_hours)
        self.previous: dict[str, Any] | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`LockHeldError` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(fd)
            os.close(fd)
            raise LockHeldError(
                f"another nightly run holds {self.path}: {_describe(holder)}. Two runs must not "
                "work on one paths.root at once; this one did nothing. Wait for that run to end "
                "(the scheduler should not start overlapping runs)"
            ) from None
        try:
            record = _read_record(fd)
            if record and record.get("host") != socket.gethostname():
                started = _parse_time(record.get("started_at"))
                if started is not None and _now() - started < self.stale_after:
                    raise LockHeldError(
                        f"{self.path} records a run on another host, {_describe(record)}, younger "
                        f"than nightly.lock_stale_hours ({self.stale_after}). This filesystem may "
                        "not share locks between hosts, so it is honoured. If that run is dead, "
                        f"delete {self.path} and start again"
                    )
            if record:
                log.warning(
                    "taking over the lock of a run that did not release it: %s", _describe(record)
                )
            self.previous = record
            self._write(
                fd,
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started_at": _now().isoformat(timespec="seconds"),
                    "run_date": self.run_date,
                },
            )
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the record and drop the lock; safe to call twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _write(fd: int, record: dict[str, Any]) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _parse_time(text: object) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
