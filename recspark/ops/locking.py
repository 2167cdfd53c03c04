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
  a *lease*, an object written with S3 conditional PUTs (:class:`recspark.core.s3.S3Client`). It
  is taken by creating the object only if absent (``If-None-Match: *``); its body records the
  holder and when its lease expires. A holder's daemon thread renews the lease every quarter of
  ``lease_seconds``, each time replacing only the version it wrote (``If-Match``). A run that
  finds a lease not renewed in time (its holder was killed or lost the store) takes it over, again
  with ``If-Match`` on the version it read, so of two contenders exactly one wins. A holder whose
  renewal is refused has lost the lock: :meth:`RunLock.check_held` then raises, and the run must
  not publish. A clean release deletes the object if it is still the holder's; a killed run's
  lease simply expires. Expiry compares the holder's ``expires_at`` with the reader's clock, so
  hosts' clocks must agree to well within ``lease_seconds``.
* **Any other scheme** (``hdfs://``, ``gs://``, ``abfss://`` ...): no lock is offered and
  :class:`RunLock` raises :class:`ConfigError` rather than run unprotected with a lock that only
  looks like one; there a scheduler must guarantee one run per root at a time.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from recspark.core.errors import ConfigError, LockHeldError
from recspark.core.location import Location, s3_settings
from recspark.core.s3 import (
    OBJECT_STORE_SCHEMES,
    PreconditionFailed,
    S3Client,
    S3Error,
    S3Settings,
    split_uri,
)

log = logging.getLogger(__name__)

# Rounds of create / read / take over before giving up on a lock object that keeps changing.
_ATTEMPTS = 5


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _read_record(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    return _parse_record(raw)


def _parse_record(raw: bytes) -> dict[str, Any] | None:
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
        settings (:func:`recspark.core.location.s3_settings`, which fall back to the ``AWS_*``
        environment variables). The lock needs static credentials there.
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
        For a scheme without a lock, or an object store without static credentials.
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
            self._lock: _FileLock | _Lease = _FileLock(
                where.local, str(run_date), stale_after_hours
            )
        elif where.scheme in OBJECT_STORE_SCHEMES:
            settings = s3 if s3 is not None else s3_settings()
            self._lock = _Lease(self.location, str(run_date), settings, lease_seconds, run_id)
        elif scheduler:
            self._lock = _SchedulerGuarantee()
        else:
            raise ConfigError(
                f"there is no run lock for {where.scheme}:// ({self.location}): nightly locks local "
                f"paths and {', '.join(s + '://' for s in OBJECT_STORE_SCHEMES)} object stores "
                "only. On this root let the scheduler run one nightly per paths.root at a time "
                "and say so with nightly.lock: scheduler"
            )

    @property
    def previous(self) -> dict[str, Any] | None:
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
        """Raise :class:`LockHeldError` unless this run still holds the lock; call before publishing.

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
    previous = None

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
        self.previous: dict[str, Any] | None = None
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
    def _write(fd: int, record: dict[str, Any]) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)


class _Lease:
    """The object-store lock: a lease object kept with conditional PUTs (see the module docstring)."""

    def __init__(
        self,
        location: str,
        run_date: str,
        settings: S3Settings,
        lease_seconds: float,
        run_id: str | None,
    ):
        if lease_seconds <= 0:
            raise ConfigError(f"the lock's lease_seconds must be positive, not {lease_seconds}")
        try:
            self.bucket, self.key = split_uri(location)
        except ValueError as error:
            raise ConfigError(f"the run lock needs an s3a://bucket/key location: {error}") from None
        self.location = location
        self.run_date = run_date
        self.lease_seconds = float(lease_seconds)
        # The run id makes every holder's record, so its ETag (an MD5 of the body on most stores),
        # unique: If-Match then tells one holder's version from another's.
        self.run_id = run_id or uuid.uuid4().hex
        self.client = S3Client(settings, timeout=max(5.0, self.lease_seconds / 4))
        self.previous: dict[str, Any] | None = None
        self._started_at = ""
        self._etag: str | None = None
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def lost(self) -> bool:
        return self._lost is not None

    def acquire(self) -> None:
        if self._etag is not None:
            raise RuntimeError(f"{self.location} is already held by this RunLock")
        self._started_at = _now().isoformat(timespec="seconds")
        for _ in range(_ATTEMPTS):
            try:
                self._etag = self._write(if_none_match=True)
                break
            except PreconditionFailed:
                pass  # someone holds it: read who, below
            except S3Error as error:
                # 409: another conditional write on the key was in flight (AWS); look again.
                if error.status != 409:
                    raise
            found = self.client.get_object(self.bucket, self.key)
            if found is None:
                continue  # released between our create and our read
            body, seen = found
            holder = _parse_record(body)
            if not _expired(holder):
                raise LockHeldError(
                    f"another nightly run holds {self.location}: {_describe(holder)}. Two runs "
                    "must not work on one paths.root at once; this one did nothing. Wait for "
                    f"that run to end (if it died, its lease expires at {_expiry(holder)})"
                )
            try:
                self._etag = self._write(if_match=seen)
            except PreconditionFailed:
                # Another run took it over (or released it) first: the next round reads who.
                continue
            log.warning("taking over the expired lease of a run: %s", _describe(holder))
            self.previous = holder
            break
        else:
            raise LockHeldError(
                f"{self.location} changed under every one of {_ATTEMPTS} attempts to take it: "
                "other runs are contending for this paths.root; this one did nothing"
            )
        self._stop.clear()
        self._renewer = threading.Thread(
            target=self._renew_until_stopped, name=f"lease-{self.key}", daemon=True
        )
        self._renewer.start()

    def check_held(self) -> None:
        if self._etag is None and self._lost is None:
            raise LockHeldError(f"this run does not hold {self.location}")
        try:
            self._renew()
        except PreconditionFailed:
            pass  # taken over: _renew recorded it in self._lost, reported below
        except S3Error as error:
            raise LockHeldError(
                f"could not confirm that this run still holds {self.location} ({error}); it "
                "must not publish"
            ) from None
        if self._lost is not None:
            raise LockHeldError(
                f"this run lost the lock on {self.location}: {self._lost}. Another run may be "
                "working on this paths.root, so this one must not publish"
            )

    def release(self) -> None:
        """Stop renewing and delete the lease object if it is still this run's."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        with self._mutex:
            etag, self._etag = self._etag, None
        if etag is None or self._lost is not None:
            return
        try:
            found = self.client.get_object(self.bucket, self.key)
            if found is not None and found[1] == etag:
                # If-Match makes the delete conditional on stores that support it; the ETag
                # comparison above covers those that ignore it.
                self.client.delete_object(self.bucket, self.key, if_match=etag)
            elif found is not None:
                holder = _describe(_parse_record(found[0]))
                log.warning("%s was taken over before release, by %s", self.location, holder)
        except S3Error as error:
            log.warning(
                "could not delete the lease %s (%s); it expires by itself after %ss",
                self.location,
                error,
                self.lease_seconds,
            )

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            try:
                self._renew()
            except PreconditionFailed:
                return
            except S3Error as error:
                # A store that does not answer for a while: the lease is still ours as long as
                # its version is unchanged, which the next renewal's If-Match checks.
                log.warning("could not renew the lease on %s, will retry: %s", self.location, error)
            if self._lost is not None:
                return

    def _renew(self) -> None:
        """Extend the lease, replacing only our own version; a refusal marks the lock lost."""
        with self._mutex:
            if self._etag is None or self._lost is not None:
                return
            try:
                self._etag = self._write(if_match=self._etag)
            except PreconditionFailed:
                self._lost = f"the lease was taken over by {self._current_holder()}"
                log.error("lost the lock on %s: %s", self.location, self._lost)
                raise

    def _current_holder(self) -> str:
        try:
            found = self.client.get_object(self.bucket, self.key)
        except S3Error as error:
            return f"an unknown run ({error})"
        if found is None:
            return "nobody (the lease object is gone)"
        return _describe(_parse_record(found[0]))

    def _write(self, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        now = _now()
        record = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self._started_at,
            "run_date": self.run_date,
            "renewed_at": now.isoformat(timespec="milliseconds"),
            "expires_at": (now + dt.timedelta(seconds=self.lease_seconds)).isoformat(
                timespec="milliseconds"
            ),
            "lease_seconds": self.lease_seconds,
        }
        body = (json.dumps(record) + "\n").encode()
        return self.client.put_object(
            self.bucket, self.key, body, if_none_match=if_none_match, if_match=if_match
        )


def _expiry(record: dict[str, Any] | None) -> str:
    return str(record.get("expires_at")) if record else "an unknown time"


def _expired(record: dict[str, Any] | None) -> bool:
    """Whether a lease record's ``expires_at`` has passed; an unreadable record never expires."""
    expires = _parse_time(record.get("expires_at")) if record else None
    return expires is not None and _now() >= expires


def _parse_time(text: object) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
