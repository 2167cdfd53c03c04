"""The boto3 S3 client and the lease against a minimal in-test S3 server: credentials, retries.

The server (:class:`StubS3`) runs in a thread of the test process and speaks just enough S3 for
single objects: path-style GET, PUT and DELETE with ``If-None-Match`` / ``If-Match`` (412 on a
failed condition), XML errors. It records every request's headers, so a test sees which access key
signed a request, and it can be told to answer the next requests with a 5xx before serving them,
which is how a transient failure of a real store looks to botocore. No part of boto3 is mocked.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from recspark.core.errors import LockHeldError
from recspark.core.s3 import S3Lease
from recspark.core.s3_client import PreconditionFailed, S3Client, S3Error
from recspark.core.s3_settings import S3Settings

CREDENTIAL = re.compile(r"Credential=([^/]+)/")


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class StubS3:
    """What the server holds and what it was asked; see the module docstring.

    Attributes
    ----------
    objects
        ``/bucket/key`` to ``(body, etag)``.
    failures
        Statuses to answer the next requests with, one each, before serving any.
    land_then_fail
        Statuses to answer the next PUTs with *after* storing them (an answer lost on the way).
    """

    endpoint: str = ""
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    land_then_fail: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def access_keys(self) -> list[str]:
        """The access key that signed each request, in order."""
        keys = []
        for request in self.seen:
            match = CREDENTIAL.search(request.headers.get("authorization", ""))
            keys.append(match.group(1) if match else "")
        return keys


def _handler(stub: StubS3) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def answer(self, status: int, body: bytes = b"", etag: str | None = None) -> None:
            self.send_response(status)
            if etag is not None:
                self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def error(self, status: int, code: str) -> None:
            body = f"<Error><Code>{code}</Code><Message>{code} here</Message></Error>"
            self.answer(status, body.encode())

        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            with stub.lock:
                stub.seen.append(Seen(self.command, self.path, headers))
                if stub.failures:
                    self.error(stub.failures.pop(0), "ServiceUnavailable")
                    return
                self.serve(body, headers)

        def serve(self, body: bytes, headers: dict[str, str]) -> None:
            path = self.path.split("?")[0]
            current = stub.objects.get(path)
            if not path.startswith("/bucket/"):
                self.error(404, "NoSuchBucket")
            elif self.command == "GET":
                if current is None:
                    self.error(404, "NoSuchKey")
                else:
                    self.answer(200, current[0], etag=current[1])
            elif self.command == "DELETE":
                stub.objects.pop(path, None)
                self.answer(204)
            elif (headers.get("if-none-match") == "*" and current is not None) or (
                "if-match" in headers and (current is None or current[1] != headers["if-match"])
            ):
                self.error(412, "PreconditionFailed")
            else:
                etag = f'"{hashlib.md5(body).hexdigest()}"'
                stub.objects[path] = (body, etag)
                if stub.land_then_fail:
                    self.error(stub.land_then_fail.pop(0), "InternalError")
                else:
                    self.answer(200, etag=etag)

        do_GET = do_PUT = do_DELETE = handle_one

    return Handler


@pytest.fixture
def stub() -> Iterator[StubS3]:
    state = StubS3()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_aws_environment(monkeypatch, tmp_path) -> None:
    """Nothing in boto3's credential chain unless a test puts it there."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def settings_for(stub: StubS3) -> S3Settings:
    return S3Settings(endpoint=stub.endpoint, access_key="AK", secret_key="SK", path_style=True)


# -- credentials --------------------------------------------------------------------------------


def test_the_fs_s3a_keys_sign_when_set_even_with_keys_in_the_environment(
    stub, no_aws_environment, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENV-KEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    conf = {
        "spark.hadoop.fs.s3a.endpoint": stub.endpoint,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.access.key": "CONF-KEY",
        "spark.hadoop.fs.s3a.secret.key": "conf-secret",
        "spark.hadoop.fs.s3a.session.token": "CONF-TOKEN",
        "fs.s3a.bucket.bucket.access.key": "BUCKET-KEY",
        "fs.s3a.bucket.bucket.secret.key": "bucket-secret",
    }
    S3Client(S3Settings.from_hadoop(conf)).put_object("bucket", "a/key", b"x")
    S3Client(S3Settings.from_hadoop(conf, bucket="bucket")).put_object("bucket", "a/key", b"y")
    assert stub.access_keys() == ["CONF-KEY", "BUCKET-KEY"]
    assert stub.seen[0].headers["x-amz-security-token"] == "CONF-TOKEN"
    assert stub.seen[0].path == "/bucket/a/key"  # fs.s3a.path.style.access


def test_without_fs_s3a_keys_the_environment_signs(stub, no_aws_environment, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENV-KEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "ENV-TOKEN")
    conf = {"fs.s3a.endpoint": stub.endpoint, "fs.s3a.path.style.access": "true"}
    S3Client(S3Settings.from_hadoop(conf)).put_object("bucket", "key", b"x")
    # Settings that carry no keys at all leave the environment to boto3's own chain.
    S3Client(S3Settings(endpoint=stub.endpoint, path_style=True)).put_object("bucket", "k", b"x")
    assert stub.access_keys() == ["ENV-KEY", "ENV-KEY"]
    assert all(seen.headers["x-amz-security-token"] == "ENV-TOKEN" for seen in stub.seen)


def test_a_profile_signs_when_there_are_no_keys_anywhere_else(
    stub, no_aws_environment, monkeypatch, tmp_path
):
    # The old hand-signing client read no profiles; boto3's chain does (and instance roles, IRSA).
    profiles = tmp_path / "credentials"
    profiles.write_text(
        "[default]\naws_access_key_id = PROFILE-KEY\naws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(profiles))
    settings = S3Settings.from_hadoop(
        {"fs.s3a.endpoint": stub.endpoint, "fs.s3a.path.style.access": "true"}
    )
    assert settings.access_key is None  # nothing in the conf or the AWS_* variables
    S3Client(settings).get_object("bucket", "k")
    assert stub.access_keys() == ["PROFILE-KEY"]


def test_a_loopback_store_is_not_reached_through_the_environments_proxy(stub, monkeypatch):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    S3Client(settings_for(stub), max_attempts=1).put_object("bucket", "key", b"x")
    assert [seen.method for seen in stub.seen] == ["PUT"]


# -- answers and retries ------------------------------------------------------------------------


def test_conditional_writes_and_refusals(stub):
    client = S3Client(settings_for(stub))
    etag = client.put_object("bucket", "key", b"v1", if_none_match=True)
    assert client.get_object("bucket", "key") == (b"v1", etag)
    with pytest.raises(PreconditionFailed, match="HTTP 412: PreconditionFailed"):
        client.put_object("bucket", "key", b"v2", if_none_match=True)
    assert stub.seen[-1].headers["if-none-match"] == "*"
    new = client.put_object("bucket", "key", b"v2", if_match=etag.strip('"'))  # quoted for us
    assert stub.seen[-1].headers["if-match"] == etag
    with pytest.raises(PreconditionFailed):
        client.put_object("bucket", "key", b"v3", if_match=etag)
    client.delete_object("bucket", "key", if_match=new)
    assert client.get_object("bucket", "key") is None
    with pytest.raises(S3Error, match="NoSuchBucket") as missing:
        client.get_object("elsewhere", "key")
    assert (missing.value.status, missing.value.code) == (404, "NoSuchBucket")


def test_a_transient_503_is_retried_and_a_lasting_one_is_raised(stub):
    client = S3Client(settings_for(stub), max_attempts=3)
    stub.failures[:] = [503]
    assert client.put_object("bucket", "key", b"v1")
    assert [seen.method for seen in stub.seen] == ["PUT", "PUT"]
    stub.failures[:] = [503, 500, 503]
    with pytest.raises(S3Error, match="HTTP 503") as lasting:
        client.get_object("bucket", "key")
    assert lasting.value.status == 503 and not stub.failures  # three tries, then raised


def test_check_held_survives_a_transient_503_and_refuses_when_it_lasts(stub):
    lease = S3Lease("s3a://bucket/root/_nightly/lock", "2026-03-01", settings_for(stub))
    lease.acquire()
    try:
        stub.failures[:] = [503]
        lease.check_held()  # a healthy run does not refuse to publish over one 503
        record = json.loads(stub.objects["/bucket/root/_nightly/lock"][0])
        assert record["run_id"] == lease.run_id and not lease.lost
        stub.failures[:] = [503] * 10
        with pytest.raises(LockHeldError, match=r"could not confirm .* must not publish"):
            lease.check_held()
        stub.failures.clear()
        lease.check_held()  # the lease was never lost: once the store answers, it is confirmed
    finally:
        lease.release()
    assert stub.objects == {}


def test_a_retried_write_whose_first_try_landed_is_still_this_runs(stub):
    lease = S3Lease("s3a://bucket/lock", "2026-03-01", settings_for(stub))
    # The create lands but its answer is lost: the retry's If-None-Match fails on our own record.
    stub.land_then_fail[:] = [500]
    lease.acquire()
    try:
        # The same for a renewal: the retry's If-Match names the version the first try replaced.
        stub.land_then_fail[:] = [500]
        lease.check_held()
        assert not lease.lost and lease.previous is None
    finally:
        lease.release()
    assert stub.objects == {}  # released: our version was recognised as ours
