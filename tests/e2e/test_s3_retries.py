"""The lease lock rides out a transient 503 from a real S3 server, and refuses when it lasts.

Between the lock and SeaweedFS (``object_store`` fixture) sits :class:`FlakyProxy`, a small HTTP
server in the test process that forwards every request unchanged (the ``Host`` header included, so
SigV4 signatures still match) and can be told to answer the next requests with 503 instead, as an
overloaded store does. botocore's standard retry mode, not a mock, is what is under test.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from recspark.core.errors import LockHeldError
from recspark.core.s3_settings import S3Settings
from recspark.ops.locking import RunLock

UNAVAILABLE = b"<Error><Code>ServiceUnavailable</Code><Message>try again</Message></Error>"


@dataclass
class FlakyProxy:
    """Where the proxy listens, and how many of the next requests it answers with 503."""

    endpoint: str = ""
    failures: int = 0
    answered_503: int = 0
    forwarded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(proxy: FlakyProxy, upstream: str) -> type[http.server.BaseHTTPRequestHandler]:
    target = urllib.parse.urlsplit(upstream)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with proxy.lock:
                fail = proxy.failures > 0
                if fail:
                    proxy.failures -= 1
                    proxy.answered_503 += 1
                else:
                    proxy.forwarded += 1
            if fail:
                self.send_response(503)
                self.send_header("Content-Length", str(len(UNAVAILABLE)))
                self.end_headers()
                self.wfile.write(UNAVAILABLE)
                return
            connection = http.client.HTTPConnection(target.netloc, timeout=30)
            try:
                connection.request(self.command, self.path, body or None, dict(self.headers))
                response = connection.getresponse()
                payload = response.read()
            finally:
                connection.close()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_DELETE = do_HEAD = relay

    return Handler


@pytest.fixture
def flaky(object_store) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), _handler(proxy, object_store.endpoint)
    )
    proxy.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield proxy
    server.shutdown()
    server.server_close()


def test_check_held_rides_out_one_503_and_refuses_only_when_the_store_stays_down(
    object_store, flaky
):
    bucket = object_store.create_bucket("recspark-retry-tests")
    through_proxy = S3Settings(
        **{**object_store.s3_settings().as_dict(), "endpoint": flaky.endpoint}
    )
    where = f"s3a://{bucket}/roots/{uuid.uuid4().hex[:8]}/_nightly/lock"
    # A long lease: its renewal thread stays asleep, so only check_held meets the 503s.
    with RunLock(where, "2026-03-01", s3=through_proxy, lease_seconds=600) as lock:
        flaky.failures = 1
        lock.check_held()  # before: one 503 made a healthy run refuse to publish
        assert flaky.answered_503 == 1 and flaky.failures == 0 and not lock.lost
        flaky.failures = 50
        with pytest.raises(LockHeldError, match=r"could not confirm .*503.* must not publish"):
            lock.check_held()
        flaky.failures = 0
        lock.check_held()  # still ours: the version it wrote was never replaced
    # Released through the proxy: the next run takes the lock with nothing to take over.
    with RunLock(where, "2026-03-02", s3=object_store.s3_settings()) as second:
        assert second.previous is None
