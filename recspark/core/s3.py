"""The object-store run lock: a lease object kept with S3 conditional writes.

An object store has no flock and no atomic rename, so the lock on an ``s3a://`` root is a
*lease*: an object (a :class:`~recspark.core.lock_record.LockRecord` as JSON) written through
:class:`~recspark.core.s3_client.S3Client`. It is taken by creating the object only if absent
(``If-None-Match: *``); its body records the holder and when its lease expires. A holder's daemon
thread renews the lease every quarter of ``lease_seconds``, each time replacing only the version it
wrote (``If-Match``). A run that finds a lease not renewed in time (its holder was killed or lost
the store) takes it over, again with ``If-Match`` on the version it read, so of two contenders
exactly one wins. A holder whose renewal is refused has lost the lock: :meth:`S3Lease.check_held`
then raises, and the run must not publish. Transient failures (5xx, throttling, dropped
connections) are retried by botocore before any of this sees them, so one 503 does not make a
healthy run refuse; a retried write whose first try did land is recognised by the run id it
recorded. A clean release deletes the object if it is still the holder's; a killed run's lease
simply expires. Expiry compares the holder's ``expires_at`` with the reader's clock, so hosts'
clocks must agree to well within ``lease_seconds``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid

from recspark.core.errors import ConfigError, LockHeldError
from recspark.core.lock_record import LockRecord, describe, now
from recspark.core.s3_client import DEFAULT_ATTEMPTS, PreconditionFailed, S3Client, S3Error
from recspark.core.s3_settings import S3Settings, split_uri

log = logging.getLogger(__name__)

# Rounds of create / read / take over before giving up on a lock object that keeps changing.
_ATTEMPTS = 5


class S3Lease:
    """The lock at an ``s3a://bucket/key`` location, held as a lease (see the module docstring).

    Parameters
    ----------
    location
        ``s3a://bucket/key`` of the lease object.
    run_date
        Recorded with the lease, so that a second run can say what the holder is doing.
    settings
        How to reach the store.
    lease_seconds
        How long a lease lasts without renewal, so how long a killed run blocks the root.
    run_id
        Recorded with the lease; a fresh id by default.

    Attributes
    ----------
    previous
        The record of an expired lease this run took over; ``None`` otherwise.
    """

    def __init__(
        self,
        location: str,
        run_date: str,
        settings: S3Settings,
        lease_seconds: float = 120.0,
        run_id: str | None = None,
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
        # botocore tries each call up to DEFAULT_ATTEMPTS times: each try gets its share of a
        # renewal interval, so a store that hangs costs retries, not the lease.
        self.client = S3Client(
            settings, timeout=max(5.0, self.lease_seconds / 4 / DEFAULT_ATTEMPTS)
        )
        self.previous: LockRecord | None = None
        self._started_at = ""
        self._etag: str | None = None
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def lost(self) -> bool:
        """Whether another run took the lease over while this one held it."""
        return self._lost is not None

    def acquire(self) -> None:
        """Take the lease, or raise :class:`LockHeldError` naming a live holder."""
        if self._etag is not None:
            raise RuntimeError(f"{self.location} is already held by this RunLock")
        self._started_at = now().isoformat(timespec="seconds")
        for _ in range(_ATTEMPTS):
            if self._take():
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

    def _take(self) -> bool:
        """One round of create / read / take over; False when the object changed meanwhile."""
        try:
            self._etag = self._write(if_none_match=True)
            return True
        except PreconditionFailed:
            pass  # someone holds it: read who, below
        except S3Error as error:
            # 409: another conditional write on the key was in flight (AWS); look again.
            if error.status != 409:
                raise
        found = self.client.get_object(self.bucket, self.key)
        if found is None:
            return False  # released between our create and our read
        body, seen = found
        holder = LockRecord.parse(body)
        if holder is not None and holder.run_id == self.run_id:
            self._etag = seen  # a retried create whose first try landed: the lease is ours
            return True
        if holder is None or not holder.expired():
            raise LockHeldError(
                f"another nightly run holds {self.location}: {describe(holder)}. Two runs "
                "must not work on one paths.root at once; this one did nothing. Wait for "
                f"that run to end (if it died, its lease expires at {_expiry(holder)})"
            )
        try:
            self._etag = self._write(if_match=seen)
        except PreconditionFailed:
            return False  # another run took it over (or released it) first: read who again
        log.warning("taking over the expired lease of a run: %s", describe(holder))
        self.previous = holder
        return True

    def check_held(self) -> None:
        """Renew the lease, or raise :class:`LockHeldError` when this run no longer holds it."""
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
                holder = describe(LockRecord.parse(found[0]))
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
                try:
                    found = self.client.get_object(self.bucket, self.key)
                except S3Error as error:
                    holder_text = f"an unknown run ({error})"
                else:
                    holder = LockRecord.parse(found[0]) if found is not None else None
                    if found is not None and holder is not None and holder.run_id == self.run_id:
                        self._etag = found[1]  # a retried renewal whose first try landed
                        return
                    holder_text = describe(holder) if found else "nobody (the lease object is gone)"
                self._lost = f"the lease was taken over by {holder_text}"
                log.error("lost the lock on %s: %s", self.location, self._lost)
                raise

    def _write(self, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        written = now()
        record = LockRecord.written(
            run_id=self.run_id,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=self._started_at,
            run_date=self.run_date,
            renewed_at=written.isoformat(timespec="milliseconds"),
            expires_at=(written + dt.timedelta(seconds=self.lease_seconds)).isoformat(
                timespec="milliseconds"
            ),
            lease_seconds=self.lease_seconds,
        )
        return self.client.put_object(
            self.bucket,
            self.key,
            record.to_bytes(),
            if_none_match=if_none_match,
            if_match=if_match,
        )


def _expiry(record: LockRecord | None) -> str:
    return record.expiry() if record else "an unknown time"
