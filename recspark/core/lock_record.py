"""What a run lock records about its holder, read from and written to the lock's JSON.

Both run locks, the local lock file (:mod:`recspark.ops.locking`) and the object-store lease
(:mod:`recspark.core.s3`), keep one JSON object naming the holder: pid, host, start time, run date,
and for a lease its run id and expiry. :class:`LockRecord` is that object, typed. It keeps the JSON
exactly as read (:attr:`LockRecord.as_read`), so a summary that reports a taken-over holder shows
what older runs wrote, unknown keys included, and writes the keys in the order runs always have.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

# Key order of what a holder writes: a lease's run id first, as earlier versions wrote it.
_WRITTEN = (
    "run_id",
    "pid",
    "host",
    "started_at",
    "run_date",
    "renewed_at",
    "expires_at",
    "lease_seconds",
)


def now() -> dt.datetime:
    """The current time, timezone-aware (UTC), as locks record it."""
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class LockRecord:
    """A lock holder's record.

    Attributes
    ----------
    pid, host, started_at, run_date
        Who holds the lock and since when, for what run date.
    run_id, renewed_at, expires_at, lease_seconds
        Object-store lease only: the holder's run id and its lease's last renewal and expiry.
    unreadable
        The start of a record that is not JSON (it then names no holder).
    as_read
        The JSON object as read (or as written), unknown keys included.
    """

    pid: int | None = None
    host: str | None = None
    started_at: str | None = None
    run_date: str | None = None
    run_id: str | None = None
    renewed_at: str | None = None
    expires_at: str | None = None
    lease_seconds: float | None = None
    unreadable: str | None = None
    as_read: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __bool__(self) -> bool:
        # An empty JSON object names no holder, as an empty file does.
        return bool(self.as_read)

    @classmethod
    def parse(cls, raw: bytes) -> LockRecord | None:
        """The record in ``raw``; ``None`` for an empty file or JSON that is not an object."""
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            text = raw[:200].decode(errors="replace")
            return cls(unreadable=text, as_read={"unreadable": text})
        return cls.from_json(data) if isinstance(data, dict) else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LockRecord:
        """The record of a decoded JSON object; values of the wrong type read as missing."""
        lease = data.get("lease_seconds")
        pid = data.get("pid")
        return cls(
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            host=_text(data.get("host")),
            started_at=_text(data.get("started_at")),
            run_date=_text(data.get("run_date")),
            run_id=_text(data.get("run_id")),
            renewed_at=_text(data.get("renewed_at")),
            expires_at=_text(data.get("expires_at")),
            lease_seconds=float(lease) if isinstance(lease, int | float) else None,
            unreadable=_text(data.get("unreadable")),
            as_read=dict(data),
        )

    @classmethod
    def written(cls, **fields: Any) -> LockRecord:
        """A record this process writes; ``as_read`` holds the given keys in the usual order."""
        data = {key: fields[key] for key in _WRITTEN if key in fields}
        return cls.from_json(data)

    def to_bytes(self) -> bytes:
        """The JSON line written to the lock."""
        return (json.dumps(self.as_read) + "\n").encode()

    def describe(self) -> str:
        """The holder in words, for a refusal or a warning."""
        return (
            f"pid {self.as_read.get('pid')} on host {self.as_read.get('host')} since "
            f"{self.as_read.get('started_at')} (run_date {self.as_read.get('run_date')})"
        )

    def expiry(self) -> str:
        """When the lease expires, as recorded."""
        return str(self.as_read.get("expires_at"))

    def expired(self) -> bool:
        """Whether a lease record's ``expires_at`` has passed; an unreadable one never expires."""
        expires = parse_time(self.expires_at)
        return expires is not None and now() >= expires


def describe(record: LockRecord | None) -> str:
    """:meth:`LockRecord.describe`, or what to say when no record was left."""
    return record.describe() if record else "a process that left no record"


def parse_time(text: str | None) -> dt.datetime | None:
    """An ISO time as recorded (UTC when it names no zone); ``None`` when it is not one."""
    if text is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
