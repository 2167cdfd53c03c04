"""The run lock's holder records: typed, yet written and reported byte for byte as before.

Runs of older versions left lock files and lease objects; a summary line reports a taken-over
holder's record as it was. :class:`LockRecord` must therefore read every record older runs wrote,
write the keys in the order they always had, and keep what it does not know. The local lock (an
``flock`` on a file) is checked here too: it needs no server and no JVM.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket

import pytest

from recspark.core.errors import LockHeldError
from recspark.core.lock_record import LockRecord, describe
from recspark.ops.locking import RunLock

# As the lease of the previous version wrote it (json.dumps of a dict in this order).
OLD_LEASE = (
    b'{"run_id": "abc", "pid": 12, "host": "h", "started_at": "2026-03-01T02:00:00+00:00", '
    b'"run_date": "2026-03-01", "renewed_at": "2026-03-01T02:00:01.000+00:00", '
    b'"expires_at": "2026-03-01T02:02:01.000+00:00", "lease_seconds": 120.0}\n'
)


def test_an_old_lease_reads_typed_and_writes_back_unchanged():
    record = LockRecord.parse(OLD_LEASE)
    assert record is not None
    assert (record.run_id, record.pid, record.host, record.lease_seconds) == ("abc", 12, "h", 120.0)
    assert record.expired()  # 2026-03-01 has passed by the time this runs
    assert record.to_bytes() == OLD_LEASE
    written = LockRecord.written(**json.loads(OLD_LEASE))
    assert written.to_bytes() == OLD_LEASE and written == record


def test_odd_records_are_described_as_before():
    assert LockRecord.parse(b"") is None and LockRecord.parse(b"[1, 2]") is None
    assert describe(None) == describe(LockRecord.parse(b"{}")) == "a process that left no record"
    garbled = LockRecord.parse(b"not json at all")
    assert garbled is not None and garbled.unreadable == "not json at all"
    assert not garbled.expired()  # an unreadable lease never expires: it is not taken over
    odd = LockRecord.parse(b'{"pid": "seven", "host": null, "future": [1]}')
    assert odd is not None and odd.pid is None  # typed fields read a wrong type as missing...
    assert describe(odd) == "pid seven on host None since None (run_date None)"  # ...words don't
    assert odd.as_read == {"pid": "seven", "host": None, "future": [1]}


def test_the_local_lock_writes_its_holder_in_the_old_key_order(tmp_path):
    path = tmp_path / "_nightly" / "lock"
    with RunLock(path, "2026-03-01") as lock:
        written = json.loads(path.read_text())
        assert list(written) == ["pid", "host", "started_at", "run_date"]
        assert written["pid"] == os.getpid() and written["run_date"] == "2026-03-01"
        lock.check_held()
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()} on host"):
            RunLock(path, "2026-03-02").acquire()
    assert path.read_text() == ""


def test_a_record_left_on_this_host_is_taken_over_and_reported_whole(tmp_path):
    path = tmp_path / "lock"
    left = {"pid": 1, "host": socket.gethostname(), "started_at": "x", "extra": True}
    path.write_text(json.dumps(left))
    with RunLock(path, "2026-03-01") as lock:
        assert lock.previous is not None and lock.previous.as_read == left
    recent = dt.datetime.now(dt.UTC).isoformat()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started_at": recent}))
    with pytest.raises(LockHeldError, match="records a run on another host"):
        RunLock(path, "2026-03-01").acquire()
