"""Object-store access for the driver: connection settings, and conditional writes for the run lock.

With ``paths.root=s3a://bucket/prefix`` Spark reaches the store through Hadoop's S3A connector,
configured by ``fs.s3a.*`` keys; the driver's own file operations go through ``pyarrow.fs``. One
:class:`S3Settings`, read from the same Hadoop keys (:meth:`S3Settings.from_hadoop`), configures
both, so they cannot point at different stores. It is a plain frozen value that ships to worker
processes as a dict (:meth:`S3Settings.as_dict`).

An object store has no atomic rename, and the pinned pyarrow (14) cannot make a write conditional, yet the
nightly run lock needs "create only if absent" and "replace only the version I read". S3 offers
both as conditional PUTs (``If-None-Match: *`` and ``If-Match: "<etag>"``, answered with 412 when
the condition fails), so :class:`S3Client` is a small client for exactly those calls, signed with
AWS Signature Version 4 using only the standard library. It needs static credentials (access key
and secret key, optionally a session token) from the settings or the ``AWS_*`` environment
variables: it does not walk the AWS credential chain (instance profiles, web identity, SSO), so a
cluster that relies on those must also provide keys for the lock. The module imports nothing from
Spark, so it works in any process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import os
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from typing import Any

import pyarrow.fs

from recspark.core.errors import ConfigError, RecsparkError

OBJECT_STORE_SCHEMES = ("s3a", "s3", "s3n")
DEFAULT_REGION = "us-east-1"
_HADOOP_PREFIX = "spark.hadoop."
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """How to reach one S3-compatible store.

    Parameters
    ----------
    endpoint
        Full URL of the store (``http://127.0.0.1:8333``, ``https://s3.eu-west-1.amazonaws.com``),
        or ``None`` for AWS S3 in ``region``.
    access_key, secret_key, session_token
        Static credentials; ``None`` leaves pyarrow to its default AWS credential chain (the
        conditional-write client then refuses to start, see :class:`S3Client`).
    region
        Signing region; ``None`` means ``us-east-1``, which most non-AWS stores accept.
    path_style
        Address buckets as ``<endpoint>/<bucket>/<key>`` rather than ``<bucket>.<endpoint>/<key>``
        (Hadoop's ``fs.s3a.path.style.access``). the pinned pyarrow always uses path style for a custom
        endpoint and virtual-hosted style for AWS, whatever this says.
    """

    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    path_style: bool = False

    def __repr__(self) -> str:
        return (
            f"S3Settings(endpoint={self.endpoint!r}, access_key={self.access_key!r}, "
            f"secret_key={_masked(self.secret_key)}, session_token={_masked(self.session_token)}, "
            f"region={self.region!r}, path_style={self.path_style!r})"
        )

    @classmethod
    def from_hadoop(
        cls,
        conf: Mapping[str, str],
        *,
        bucket: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> S3Settings:
        """Settings from Hadoop S3A keys, as in a Spark conf, falling back to ``AWS_*`` variables.

        Parameters
        ----------
        conf
            Keys such as ``fs.s3a.endpoint``, with or without the ``spark.hadoop.`` prefix (the
            bare key wins when both are given). Read: ``fs.s3a.endpoint``, ``fs.s3a.access.key``,
            ``fs.s3a.secret.key``, ``fs.s3a.session.token``, ``fs.s3a.endpoint.region`` (or
            ``fs.s3a.region``), ``fs.s3a.path.style.access`` and
            ``fs.s3a.connection.ssl.enabled``: an endpoint without a scheme gets ``http://``
            when SSL is disabled, ``https://`` otherwise.
        bucket
            When given, S3A's per-bucket keys (``fs.s3a.bucket.<bucket>.endpoint`` ...) override
            the general ones, as they do in Hadoop.
        environ
            Where to find ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``
            (used together, only when the conf has no access key), ``AWS_REGION`` /
            ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``;
            ``os.environ`` by default.

        Raises
        ------
        ConfigError
            When a boolean key holds something other than true/false.
        """
        env = os.environ if environ is None else environ

        def setting(name: str) -> str | None:
            keys = [f"fs.s3a.{name}"]
            if bucket:
                keys.insert(0, f"fs.s3a.bucket.{bucket}.{name}")
            for key in keys:
                for candidate in (key, _HADOOP_PREFIX + key):
                    value = conf.get(candidate)
                    if value is not None and str(value).strip():
                        return str(value).strip()
            return None

        if setting("access.key"):
            access_key = setting("access.key")
            secret_key = setting("secret.key")
            session_token = setting("session.token")
        else:
            access_key = env.get("AWS_ACCESS_KEY_ID") or None
            secret_key = env.get("AWS_SECRET_ACCESS_KEY") or None
            session_token = env.get("AWS_SESSION_TOKEN") or None
        region = (
            setting("endpoint.region")
            or setting("region")
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION")
            or None
        )
        endpoint = setting("endpoint")
        if endpoint and "://" not in endpoint:
            ssl = _flag(setting("connection.ssl.enabled"), "fs.s3a.connection.ssl.enabled", True)
            endpoint = f"{'https' if ssl else 'http'}://{endpoint}"
        endpoint = endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        return cls(
            endpoint=endpoint.rstrip("/") if endpoint else None,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            region=region,
            path_style=_flag(setting("path.style.access"), "fs.s3a.path.style.access", False),
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (secret included), to hand to another process."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> S3Settings:
        """The inverse of :meth:`as_dict`; unknown keys are refused rather than dropped."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"S3Settings has no field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def filesystem(self, *, allow_bucket_creation: bool = False) -> pyarrow.fs.S3FileSystem:
        """A pyarrow S3 filesystem for these settings.

        Without keys, pyarrow looks for credentials itself (environment, profile, instance role),
        and without a region it picks one as the AWS SDK does.
        """
        options: dict[str, Any] = {
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "session_token": self.session_token,
            "allow_bucket_creation": allow_bucket_creation,
        }
        if self.region:
            options["region"] = self.region
        if self.endpoint:
            parts = urllib.parse.urlsplit(self.endpoint)
            options["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
            options["scheme"] = parts.scheme or "https"
        return pyarrow.fs.S3FileSystem(**options)


def split_uri(location: str) -> tuple[str, str]:
    """``s3a://bucket/some/key`` -> ``("bucket", "some/key")``.

    Raises
    ------
    ValueError
        When the scheme is not an S3 one or the bucket or key is missing.
    """
    parts = urllib.parse.urlsplit(location)
    key = parts.path.lstrip("/")
    if parts.scheme not in OBJECT_STORE_SCHEMES or not parts.netloc or not key:
        raise ValueError(f"{location!r} is not an s3a://bucket/key location")
    return parts.netloc, key


class S3Error(RecsparkError):
    """A request the store refused or could not answer.

    Attributes
    ----------
    status
        The HTTP status (0 when no answer came).
    code
        The store's error code, e.g. ``NoSuchBucket`` (empty when it gave none).
    """

    def __init__(self, message: str, status: int = 0, code: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code


class PreconditionFailed(S3Error):
    """A conditional write found the object not in the expected state (HTTP 412)."""


class S3Client:
    """Put, get and delete single objects, with S3's conditional-write headers.

    Parameters
    ----------
    settings
        Endpoint, region, addressing style and credentials; keys missing there are taken from
        ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``.
    timeout
        Seconds to wait for each request.

    Raises
    ------
    ConfigError
        When no static credentials are available (see the module docstring).
    """

    def __init__(self, settings: S3Settings, timeout: float = 30.0):
        access_key, secret_key, token = (
            settings.access_key,
            settings.secret_key,
            settings.session_token,
        )
        if not access_key:
            access_key = os.environ.get("AWS_ACCESS_KEY_ID")
            secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
            token = os.environ.get("AWS_SESSION_TOKEN")
        if not access_key or not secret_key:
            raise ConfigError(
                "the object-store run lock signs its own S3 requests and needs static "
                "credentials: set fs.s3a.access.key and fs.s3a.secret.key (spark.hadoop.* in "
                "spark.conf) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Instance roles, "
                "web identity and profiles are not read by it"
            )
        self.settings = settings
        self.region = settings.region or DEFAULT_REGION
        self.timeout = timeout
        self._access_key = access_key
        self._secret_key = secret_key
        self._token = token or None
        if settings.endpoint:
            parts = urllib.parse.urlsplit(settings.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"S3 endpoint {settings.endpoint!r} is not an http(s) URL")
            self._scheme, self._host = parts.scheme, parts.netloc
            self._base_path = parts.path.rstrip("/")
        else:
            self._scheme, self._host = "https", f"s3.{self.region}.amazonaws.com"
            self._base_path = ""
        hostname = urllib.parse.urlsplit(f"//{self._host}").hostname or ""
        # A loopback store must not be sent through an HTTP proxy from the environment.
        handlers = [urllib.request.ProxyHandler({})] if hostname in _LOOPBACK_HOSTS else []
        self._opener = urllib.request.build_opener(*handlers)

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        """Write ``body`` to ``bucket/key`` and return the new ETag (quoted, as S3 gives it).

        Parameters
        ----------
        if_none_match
            Create only: fail when the key exists.
        if_match
            Replace only the version with this ETag: fail when the object changed or is gone.

        Raises
        ------
        PreconditionFailed
            When the condition does not hold.
        S3Error
            For any other refusal, with the store's code and message.
        """
        headers = {"content-type": "application/octet-stream"}
        if if_none_match:
            headers["if-none-match"] = "*"
        if if_match is not None:
            headers["if-match"] = _quoted(if_match)
        _, response_headers = self._request("PUT", bucket, key, body, headers)
        return response_headers.get("ETag", "")

    def get_object(self, bucket: str, key: str) -> tuple[bytes, str] | None:
        """``(body, etag)`` of ``bucket/key``, or ``None`` when there is no such key.

        Raises
        ------
        S3Error
            For any other refusal (a missing bucket included).
        """
        try:
            body, headers = self._request("GET", bucket, key)
        except S3Error as error:
            if error.status == 404 and error.code in ("NoSuchKey", ""):
                return None
            raise
        return body, headers.get("ETag", "")

    def delete_object(self, bucket: str, key: str, *, if_match: str | None = None) -> None:
        """Delete ``bucket/key``; deleting a missing key succeeds, as in S3.

        Parameters
        ----------
        if_match
            Sent as ``If-Match``: a store that supports conditional deletes then refuses with
            :class:`PreconditionFailed` when the object changed. Stores that do not ignore it, so
            a caller that cares must also compare the ETag itself first.
        """
        headers = {} if if_match is None else {"if-match": _quoted(if_match)}
        self._request("DELETE", bucket, key, b"", headers)

    def _request(
        self,
        method: str,
        bucket: str,
        key: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[bytes, Mapping[str, str]]:
        if self.settings.path_style:
            host, path = self._host, f"{self._base_path}/{bucket}/{key}"
        else:
            host, path = f"{bucket}.{self._host}", f"{self._base_path}/{key}"
        path = urllib.parse.quote(path, safe="/~")
        signed = self._sign(method, host, path, body, dict(headers or {}))
        request = urllib.request.Request(
            f"{self._scheme}://{host}{path}",
            data=body if method == "PUT" else None,
            headers=signed,
            method=method,
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.read(), response.headers
        except urllib.error.HTTPError as error:
            raise _error(method, bucket, key, error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise S3Error(
                f"{method} s3://{bucket}/{key}: no answer from {self._scheme}://{host} ({reason})"
            ) from None

    def _sign(
        self, method: str, host: str, path: str, body: bytes, headers: dict[str, str]
    ) -> dict[str, str]:
        """``headers`` plus the AWS Signature Version 4 ones for this request."""
        now = dt.datetime.now(dt.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {
            **headers,
            "host": host,
            "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
            "x-amz-date": stamp,
        }
        if self._token:
            headers["x-amz-security-token"] = self._token
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                "",
                *(f"{name}:{' '.join(headers[name].split())}" for name in names),
                "",
                ";".join(names),
                headers["x-amz-content-sha256"],
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                stamp,
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        signing_key = f"AWS4{self._secret_key}".encode()
        for part in (day, self.region, "s3", "aws4_request"):
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers


def _error(method: str, bucket: str, key: str, error: urllib.error.HTTPError) -> S3Error:
    """The store's refusal as an exception carrying its status, code and message."""
    raw = error.read() if error.fp is not None else b""
    code = message = ""
    try:
        root = ElementTree.fromstring(raw)
        code = root.findtext("Code") or ""
        message = root.findtext("Message") or ""
    except ElementTree.ParseError:
        message = raw[:200].decode(errors="replace").strip()
    detail = ": ".join(part for part in (code, message) if part) or error.reason
    text = f"{method} s3://{bucket}/{key} failed with HTTP {error.code}: {detail}"
    kind = PreconditionFailed if error.code == 412 else S3Error
    return kind(text, status=error.code, code=code)


def _quoted(etag: str) -> str:
    return etag if etag.startswith(('"', "W/")) or etag == "*" else f'"{etag}"'


def _masked(secret: str | None) -> str:
    return "None" if secret is None else "'***'"


def _flag(value: str | None, name: str, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")
