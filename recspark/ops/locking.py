"""An exclusive lock per ``paths.root``, so two scheduled runs never work on one root at once.

:class:`RunLock` picks the mechanism from the lock's location:

* **Local path** (or ``file:``): an ``fcntl.flock`` on ``<root>/_nightly/lock``, held for the
  whole run. The kernel drops it when the holding process exits for any reason, ``kill -9``
  included, so a crashed run never leaves a lock that blocks the next one. The file also records
  who holds it (pid, host, start time, run date) for the message a second run prints, and as a
  fallback for filesystems that do not share ``flock`` between hosts: a record left by another
  host that is younger than ``stale_after_hours`` is honoured even when ``flock`` succeeds, an
  older one is taken over with a warning. A clean release empties the record.
* **Object store** (``s3a://``, ``s3://``): there is no flock and no atomic rename, so the lock is
  a *lease*, an object written with S3 conditional PUTs and renewed by the holder
  (:class:`recspark.core.s3.S3Lease`, whose docstring tells how). A holder whose renewal is refused
  has lost the lock: :meth:`RunLock.check_held` then raises, and the run must not publish.
* **Any other scheme** (``hdfs://``, ``gs://``, ``abfss://`` ...): no lock is offered and
  :class:`RunLock` raises :class:`ConfigError` rather than run unprotected with a lock that only
  looks like one; there a scheduler must guarantee one run per root at a time.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Protocol

from recspark.core.errors import ConfigError, LockHeldError
from recspark.core.location import Location, s3_settings
from recspark.core.lock_record import LockRecord, describe, now, parse_time
from recspark.core.s3 import S3Lease
from recspark.core.s3_settings import OBJECT_STORE_SCHEMES, S3Settings, split_uri

log = logging.getLogger(__name__)


class _Lock(Protocol):
    """What :class:`RunLock` asks of each mechanism."""

    @property
    def previous(self) -> LockRecord | None: ...

    @property
    def lost(self) -> bool: ...

    def acquire(self) -> None: ...

    def check_held(self) -> None: ...

    def release(self) -> None: ...


def _read_record(fd: int) -> LockRecord | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    return LockRecord.parse(raw)


class RunLock:
    """Context manager holding the lock at ``location`` exclusively, without waiting.

    Parameters
    ----------
    location
        The lock: a local file path (its folder is created when missing) or an
        ``s3a://bucket/key`` object, as a string or a :class:`Location`; see the module
        docstring for how each is held.
    run_date
        Recorded with the lock so that a second run can say what the holder is doing.
    stale_after_hours
        Local lock only: age after which a record left by *another host* is taken over.
    s3
        Object-store lock only: how to reach the store; by default this process's storage
        settings for the lock's bucket (:func:`recspark.core.location.s3_settings`); without keys
        there, boto3's credential chain (environment, profiles, instance roles, web identity).
    lease_seconds
        Object-store lock only: how long a lease lasts without renewal, so how long a killed
        run blocks the root.
    run_id
        Object-store lock only: recorded with the lease; a fresh id by default.
    scheduler
        On a root with no lock of its own (``hdfs://``, ``gs://``...), hold nothing: the
        scheduler guarantees one run per root (``nightly.lock: scheduler``).

    Attributes
    ----------
    location
        The lock's location as a URI (``file://...`` for a local path).
    previous
        The record of a holder whose lock was taken over: one that died without releasing it
        (local, same host), a stale record of another host (local) or an expired lease (object
        store); ``None`` after a clean release.

    Raises
    ------
    ConfigError
        For a scheme without a lock, or an object store without any credentials.
    """

    def __init__(
        self,
        location: str | os.PathLike | Location,
        run_date: str,
        stale_after_hours: float = 24.0,
        *,
        s3: S3Settings | None = None,
        lease_seconds: float = 120.0,
        run_id: str | None = None,
        scheduler: bool = False,
    ):
        where = Location(location)
        self.location = where.uri
        if where.is_local:
            self._lock: _Lock = _FileLock(where.local, str(run_date), stale_after_hours)
        elif where.scheme in OBJECT_STORE_SCHEMES:
            settings = s3 if s3 is not None else _settings_for(self.location)
            self._lock = S3Lease(self.location, str(run_date), settings, lease_seconds, run_id)
        elif scheduler:
            self._lock = _SchedulerGuarantee()
        else:
            raise ConfigError(
                f"there is no run lock for {where.scheme}:// ({self.location}): nightly locks "
                f"local paths and {', '.join(s + '://' for s in OBJECT_STORE_SCHEMES)} object "
                "stores only. On this root let the scheduler run one nightly per paths.root at a "
                "time and say so with nightly.lock: scheduler"
            )

    @property
    def previous(self) -> LockRecord | None:
        return self._lock.previous

    @property
    def lost(self) -> bool:
        """Whether another run took the lock over while this one held it (object store only)."""
        return self._lock.lost

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`LockHeldError` naming the holder."""
        self._lock.acquire()
        return self

    def check_held(self) -> None:
        """Raise :class:`LockHeldError` unless this run still holds the lock; call it before
        publishing.

        For an object store this also renews the lease, so the step that follows has a whole
        ``lease_seconds`` before another run could take it over.
        """
        self._lock.check_held()

    def release(self) -> None:
        """Let the lock go; safe to call twice."""
        self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class _SchedulerGuarantee:
    """No lock: the scheduler runs one nightly per root (``nightly.lock: scheduler``)."""

    lost = False
    previous: LockRecord | None = None

    def acquire(self) -> None:
        log.info("nightly.lock: scheduler: no lock is taken; the scheduler runs one run per root")

    def check_held(self) -> None:
        return None

    def release(self) -> None:
        return None


class _FileLock:
    """The local lock: ``flock`` on a file that also records the holder."""

    lost = False

    def __init__(self, path: Path, run_date: str, stale_after_hours: float):
        self.path = path
        self.run_date = run_date
        self.stale_after = dt.timedelta(hours=stale_after_hours)
        self.previous: LockRecord | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(fd)
            os.close(fd)
            raise LockHeldError(
                f"another nightly run holds {self.path}: {describe(holder)}. Two runs must not "
                "work on one paths.root at once; this one did nothing. Wait for that run to end "
                "(the scheduler should not start overlapping runs)"
            ) from None
        try:
            record = _read_record(fd)
            if record and record.host != socket.gethostname():
                started = parse_time(record.started_at)
                if started is not None and now() - started < self.stale_after:
                    raise LockHeldError(
                        f"{self.path} records a run on another host, {describe(record)}, younger "
                        f"than nightly.lock_stale_hours ({self.stale_after}). This filesystem may "
                        "not share locks between hosts, so it is honoured. If that run is dead, "
                        f"delete {self.path} and start again"
                    )
            if record:
                log.warning(
                    "taking over the lock of a run that did not release it: %s", describe(record)
                )
            self.previous = record
            self._write(
                fd,
                LockRecord.written(
                    pid=os.getpid(),
                    host=socket.gethostname(),
                    started_at=now().isoformat(timespec="seconds"),
                    run_date=self.run_date,
                ),
            )
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd

    def check_held(self) -> None:
        if self._fd is None:
            raise LockHeldError(f"this run does not hold {self.path}")

    def release(self) -> None:
        """Empty the record and drop the lock."""
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
    def _write(fd: int, record: LockRecord) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record.to_bytes())
        os.fsync(fd)


def _settings_for(location: str) -> S3Settings:
    """This process's storage settings for the lock's bucket (S3A's per-bucket keys apply)."""
    try:
        bucket, _ = split_uri(location)
    except ValueError:
        bucket = None  # S3Lease refuses the location with a clear message
    return s3_settings(bucket=bucket)
