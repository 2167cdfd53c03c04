"""The object-store pieces against a real S3 server: signed conditional writes and the lease lock.

Conditional PUTs are what make the run lock safe on an object store, so they are checked against
SeaweedFS (``object_store`` fixture), which answers a failed condition with 412 as S3 does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from recspark.core.errors import ConfigError, LockHeldError
from recspark.core.s3_client import PreconditionFailed, S3Client, S3Error
from recspark.core.s3_settings import S3Settings, split_uri
from recspark.ops.locking import RunLock

DAY1, DAY2 = "2026-03-01", "2026-03-02"


@pytest.fixture(scope="module")
def bucket(object_store) -> str:
    return object_store.create_bucket("recspark-s3-tests")


@pytest.fixture
def client(object_store) -> S3Client:
    return S3Client(object_store.s3_settings())


def fresh_key(prefix: str = "objects") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}/a kéy with spaces+plus.json"


# -- settings -----------------------------------------------------------------------------------


def test_hadoop_keys_with_or_without_the_spark_prefix():
    conf = {
        "spark.hadoop.fs.s3a.endpoint": "minio.local:9000",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.access.key": "AK",
        "spark.hadoop.fs.s3a.access.key": "ignored: the bare key wins",
        "spark.hadoop.fs.s3a.secret.key": "SK",
        "spark.hadoop.fs.s3a.session.token": "TOKEN",
        "fs.s3a.endpoint.region": "eu-west-1",
        "spark.hadoop.fs.s3a.path.style.access": "TRUE",
    }
    settings = S3Settings.from_hadoop(conf, environ={"AWS_ACCESS_KEY_ID": "from-env"})
    assert settings == S3Settings(
        endpoint="http://minio.local:9000",
        access_key="AK",
        secret_key="SK",
        session_token="TOKEN",
        region="eu-west-1",
        path_style=True,
    )
    ssl = S3Settings.from_hadoop({"fs.s3a.endpoint": "s3.example.com", "fs.s3a.region": "r1"})
    assert ssl.endpoint == "https://s3.example.com" and ssl.region == "r1"
    assert not ssl.path_style
    per_bucket = S3Settings.from_hadoop(
        {"fs.s3a.endpoint": "http://a:1", "fs.s3a.bucket.special.endpoint": "http://b:2"},
        bucket="special",
    )
    assert per_bucket.endpoint == "http://b:2"
    with pytest.raises(ConfigError, match=r"fs\.s3a\.path\.style\.access"):
        S3Settings.from_hadoop({"fs.s3a.path.style.access": "maybe"}, environ={})


def test_the_environment_fills_in_what_the_conf_lacks():
    environ = {
        "AWS_ACCESS_KEY_ID": "EK",
        "AWS_SECRET_ACCESS_KEY": "ES",
        "AWS_SESSION_TOKEN": "ET",
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/",
    }
    settings = S3Settings.from_hadoop({}, environ=environ)
    assert (settings.access_key, settings.secret_key, settings.session_token) == ("EK", "ES", "ET")
    assert settings.region == "ap-south-1" and settings.endpoint == "http://127.0.0.1:9000"
    assert S3Settings.from_hadoop({}, environ={**environ, "AWS_REGION": "r2"}).region == "r2"
    # Keys in the conf are used together: no env token is mixed with a conf key pair.
    mixed = S3Settings.from_hadoop(
        {"fs.s3a.access.key": "AK", "fs.s3a.secret.key": "SK"}, environ=environ
    )
    assert mixed.session_token is None and mixed.access_key == "AK"
    assert S3Settings.from_hadoop({}, environ={}) == S3Settings()


def test_settings_travel_as_a_dict_and_hide_the_secret():
    settings = S3Settings("http://h:1", "AK", "very-secret", "tok-secret", "r", True)
    assert S3Settings.from_dict(json.loads(json.dumps(settings.as_dict()))) == settings
    assert "very-secret" not in repr(settings) and "tok-secret" not in repr(settings)
    assert "AK" in repr(settings)
    with pytest.raises(ValueError, match="no field"):
        S3Settings.from_dict({"endpoint": "x", "secret": "y"})


def test_the_client_refuses_to_start_without_any_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # Nothing in the chain: no profile files, no instance metadata to ask.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match=r"no S3 credentials .*fs\.s3a\.access\.key"):
        S3Client(S3Settings(endpoint="http://127.0.0.1:1"))
    with pytest.raises(ConfigError, match="not an http"):
        S3Client(S3Settings(endpoint="ftp://127.0.0.1:1", access_key="a", secret_key="b"))
    assert split_uri("s3a://b/some/key") == ("b", "some/key")
    with pytest.raises(ValueError):
        split_uri("s3a://bucket-only")


# -- conditional writes -------------------------------------------------------------------------


def test_signed_put_get_delete_round_trip(object_store, bucket, client):
    key = fresh_key()
    etag = client.put_object(bucket, key, b"hello")
    assert etag.startswith('"')
    assert client.get_object(bucket, key) == (b"hello", etag)
    # pyarrow, built from the same settings, sees the same object.
    with object_store.s3_settings().filesystem().open_input_stream(f"{bucket}/{key}") as handle:
        assert handle.read() == b"hello"
    client.delete_object(bucket, key)
    assert client.get_object(bucket, key) is None
    client.delete_object(bucket, key)  # a missing key deletes fine, as in S3


def test_create_only_refuses_an_existing_object(bucket, client):
    key = fresh_key()
    client.put_object(bucket, key, b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed, match="412"):
        client.put_object(bucket, key, b"second", if_none_match=True)
    assert client.get_object(bucket, key)[0] == b"first"


def test_replace_only_the_version_read(bucket, client):
    key = fresh_key()
    etag = client.put_object(bucket, key, b"v1")
    with pytest.raises(PreconditionFailed):
        client.put_object(bucket, key, b"v2", if_match='"0123456789abcdef0123456789abcdef"')
    new = client.put_object(bucket, key, b"v2", if_match=etag)
    assert new != etag and client.get_object(bucket, key) == (b"v2", new)
    with pytest.raises(PreconditionFailed):
        client.put_object(bucket, key, b"v3", if_match=etag)  # v1 is gone


def test_refusals_carry_the_servers_code(object_store, bucket, client):
    with pytest.raises(S3Error, match="NoSuchBucket") as missing:
        client.get_object("no-such-bucket-here", "key")
    assert missing.value.status == 404
    wrong = S3Settings(**{**object_store.s3_settings().as_dict(), "secret_key": "wrong"})
    with pytest.raises(S3Error, match="SignatureDoesNotMatch"):
        S3Client(wrong).get_object(bucket, "key")


# -- the lease lock -----------------------------------------------------------------------------


def lock_uri(bucket: str) -> str:
    return f"s3a://{bucket}/roots/{uuid.uuid4().hex[:8]}/_nightly/lock"


def test_a_second_holder_is_refused_with_the_first_holders_pid(object_store, bucket, client):
    settings = object_store.s3_settings()
    where = lock_uri(bucket)
    with RunLock(where, DAY1, s3=settings) as first:
        first.check_held()
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()} on host .*run_date {DAY1}"):
            RunLock(where, DAY2, s3=settings).acquire()
        record = json.loads(client.get_object(*split_uri(where))[0])
        assert record["run_date"] == DAY1 and record["expires_at"] > record["started_at"]
    assert client.get_object(*split_uri(where)) is None  # released: the lease object is gone
    with RunLock(where, DAY2, s3=settings) as second:
        assert second.previous is None and not second.lost


HOLD = """
import json, sys, time
from recspark.core.s3_settings import S3Settings
from recspark.ops.locking import RunLock
lock = RunLock(sys.argv[1], "2026-03-01", s3=S3Settings.from_dict(json.loads(sys.argv[2])),
               lease_seconds=1.0).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holders_lease_expires_and_is_taken_over(object_store, bucket):
    settings = object_store.s3_settings()
    where = lock_uri(bucket)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, where, json.dumps(settings.as_dict())],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(1.5)  # longer than the lease: only the renewals keep it
        with pytest.raises(LockHeldError, match=f"pid {holder.pid} "):
            RunLock(where, DAY2, s3=settings).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            lock = RunLock(where, DAY2, s3=settings, lease_seconds=5).acquire()
            break
        except LockHeldError:
            assert time.monotonic() < deadline, "the killed holder's lease never expired"
            time.sleep(0.2)
    try:
        assert lock.previous is not None and lock.previous.pid == holder.pid
    finally:
        lock.release()


def test_a_holder_whose_lease_was_taken_over_knows_it_lost(object_store, bucket, client):
    settings = object_store.s3_settings()
    where = lock_uri(bucket)
    lock = RunLock(where, DAY1, s3=settings, lease_seconds=1.0).acquire()
    try:
        # Another run takes the lease over (as if this one had stalled past its expiry). The
        # holder renews every quarter of a second, so a renewal may land between reading the
        # lock and replacing it (HTTP 412): a usurper then reads it again, as a real one would.
        usurper = {"pid": 4242, "host": "elsewhere", "started_at": "now", "run_date": DAY2}
        for attempt in range(20):
            _, etag = client.get_object(*split_uri(where))
            try:
                client.put_object(*split_uri(where), json.dumps(usurper).encode(), if_match=etag)
                break
            except PreconditionFailed:
                assert attempt < 19, "the lock changed under every takeover attempt"
        deadline = time.monotonic() + 5
        while not lock.lost:
            assert time.monotonic() < deadline, "the renewal never noticed the takeover"
            time.sleep(0.05)
        with pytest.raises(LockHeldError, match=r"lost the lock.*pid 4242 on host elsewhere"):
            lock.check_held()
    finally:
        lock.release()
    assert json.loads(client.get_object(*split_uri(where))[0])["pid"] == 4242  # not deleted


def race(where: str, settings: S3Settings, contenders: int = 4) -> list[RunLock]:
    """Start ``contenders`` acquisitions at once; return the locks that were won."""
    locks = [RunLock(where, DAY1, s3=settings) for _ in range(contenders)]
    start = threading.Barrier(contenders)
    won: list[RunLock] = []
    refused: list[LockHeldError] = []

    def contend(lock: RunLock) -> None:
        start.wait()
        try:
            won.append(lock.acquire())
        except LockHeldError as error:
            refused.append(error)

    threads = [threading.Thread(target=contend, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) + len(refused) == contenders
    return won


def test_of_racing_contenders_exactly_one_wins(object_store, bucket):
    settings = object_store.s3_settings()
    where = lock_uri(bucket)
    for _ in range(3):
        won = race(where, settings)
        assert len(won) == 1 and won[0].previous is None
        won[0].release()


def test_of_racing_takeovers_of_an_expired_lease_exactly_one_wins(object_store, bucket, client):
    settings = object_store.s3_settings()
    for _ in range(3):
        where = lock_uri(bucket)
        dead = {"pid": 1, "host": "gone", "run_date": DAY1, "expires_at": "2026-01-01T00:00:00"}
        client.put_object(*split_uri(where), json.dumps(dead).encode())
        won = race(where, settings)
        previous = won[0].previous
        assert len(won) == 1 and previous is not None and previous.as_read == dead
        won[0].release()


def test_schemes_without_a_lock_are_refused():
    with pytest.raises(ConfigError, match=r"no run lock for hdfs://.*s3a://.*scheduler"):
        RunLock("hdfs://namenode:8020/root/_nightly/lock", DAY1)
