"""Single-object S3 calls for the run lock, through boto3: put (conditional or not), get, delete.

The lock needs "create only if absent" and "replace only the version I read", which S3 offers as
conditional PUTs (``If-None-Match: *`` and ``If-Match: "<etag>"``, answered with 412 when the
condition fails) and which pyarrow's filesystem cannot send. botocore signs the requests, walks
the whole AWS credential chain (static keys, environment, profiles, instance roles, web identity)
and retries transient failures (5xx, throttling, dropped connections) in its ``standard`` retry
mode; this module only builds a client from :class:`~recspark.core.s3_settings.S3Settings` and
turns botocore's errors into :class:`S3Error` / :class:`PreconditionFailed`, which carry the HTTP
status and the store's error code.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Any

import boto3.session
import botocore.config
import botocore.exceptions

from recspark.core.errors import ConfigError, RecsparkError
from recspark.core.s3_settings import DEFAULT_REGION, S3Settings

# botocore's standard mode waits with jittered exponential backoff (at most 20 s) between tries.
DEFAULT_ATTEMPTS = 5
_LOOPBACK_HOSTS = {"localhost"}


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


def boto3_client(
    settings: S3Settings, *, timeout: float = 30.0, max_attempts: int = DEFAULT_ATTEMPTS
) -> Any:
    """A boto3 S3 client for ``settings``, retrying transient errors in botocore's standard mode.

    Static keys in the settings (Spark's ``fs.s3a.access.key`` / ``secret.key`` /
    ``session.token``) are used when present; otherwise boto3's own credential chain. A loopback
    endpoint is reached directly, never through an HTTP proxy from the environment. Checksums are
    sent only where S3 requires them, since S3-compatible stores do not all accept the newer
    trailing checksums.

    Raises
    ------
    ConfigError
        When the endpoint is not an http(s) URL or no credentials are found anywhere.
    """
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key or None,
        aws_secret_access_key=settings.secret_key if settings.access_key else None,
        aws_session_token=settings.session_token if settings.access_key else None,
    )
    if session.get_credentials() is None:
        raise ConfigError(
            "no S3 credentials for the object-store run lock: set fs.s3a.access.key and "
            "fs.s3a.secret.key (spark.hadoop.* in spark.conf), or provide them through the AWS "
            "credential chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance "
            "role or web identity)"
        )
    config = botocore.config.Config(
        region_name=settings.region or session.region_name or DEFAULT_REGION,
        signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=timeout,
        read_timeout=timeout,
        s3={"addressing_style": "path" if settings.path_style else "virtual"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # An empty mapping (not None) stops botocore from reading HTTP(S)_PROXY.
        proxies={} if _is_loopback(settings.endpoint) else None,
    )
    return session.client("s3", endpoint_url=settings.endpoint, config=config)


class S3Client:
    """Put, get and delete single objects, with S3's conditional-write headers.

    Parameters
    ----------
    settings
        Endpoint, region, addressing style and credentials (see :func:`boto3_client`).
    timeout
        Seconds to wait to connect and for each answer.
    max_attempts
        Tries per call, the first included, before a transient error is raised.

    Raises
    ------
    ConfigError
        When the endpoint is not an http(s) URL or no credentials are found.
    """

    def __init__(
        self, settings: S3Settings, timeout: float = 30.0, *, max_attempts: int = DEFAULT_ATTEMPTS
    ):
        if settings.endpoint:
            parts = urllib.parse.urlsplit(settings.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"S3 endpoint {settings.endpoint!r} is not an http(s) URL")
        self.settings = settings
        self._client = boto3_client(settings, timeout=timeout, max_attempts=max_attempts)

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
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = _quoted(if_match)
        response = self._call(
            "PUT",
            bucket,
            key,
            lambda: self._client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType="application/octet-stream",
                **conditions,
            ),
        )
        return str(response.get("ETag", ""))

    def get_object(self, bucket: str, key: str) -> tuple[bytes, str] | None:
        """``(body, etag)`` of ``bucket/key``, or ``None`` when there is no such key.

        Raises
        ------
        S3Error
            For any other refusal (a missing bucket included).
        """

        def read() -> tuple[bytes, str]:
            response = self._client.get_object(Bucket=bucket, Key=key)
            with response["Body"] as body:
                return body.read(), str(response.get("ETag", ""))

        try:
            return self._call("GET", bucket, key, read)
        except S3Error as error:
            if error.status == 404 and error.code in ("NoSuchKey", ""):
                return None
            raise

    def delete_object(self, bucket: str, key: str, *, if_match: str | None = None) -> None:
        """Delete ``bucket/key``; deleting a missing key succeeds, as in S3.

        Parameters
        ----------
        if_match
            Sent as ``If-Match``: a store that supports conditional deletes then refuses with
            :class:`PreconditionFailed` when the object changed. Stores that do not ignore it, so
            a caller that cares must also compare the ETag itself first.
        """
        conditions = {} if if_match is None else {"IfMatch": _quoted(if_match)}
        self._call(
            "DELETE",
            bucket,
            key,
            lambda: self._client.delete_object(Bucket=bucket, Key=key, **conditions),
        )

    def _call(self, method: str, bucket: str, key: str, request: Any) -> Any:
        """``request()``, with botocore's errors (after its retries) as :class:`S3Error`."""
        try:
            return request()
        except botocore.exceptions.ClientError as error:
            raise _refusal(method, bucket, key, error) from None
        except botocore.exceptions.BotoCoreError as error:
            where = self.settings.endpoint or "AWS S3"
            raise S3Error(
                f"{method} s3://{bucket}/{key}: no answer from {where} ({error})"
            ) from None


def _refusal(method: str, bucket: str, key: str, error: botocore.exceptions.ClientError) -> S3Error:
    """The store's refusal as an exception carrying its status, code and message."""
    details = error.response.get("Error", {})
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    code = str(details.get("Code", "") or "")
    if code.isdigit():
        code = ""  # botocore puts the bare status there when the answer had no XML body
    message = str(details.get("Message", "") or "")
    detail = ": ".join(part for part in (code, message) if part) or "no detail"
    text = f"{method} s3://{bucket}/{key} failed with HTTP {status}: {detail}"
    kind = PreconditionFailed if status == 412 else S3Error
    return kind(text, status=status, code=code)


def _quoted(etag: str) -> str:
    return etag if etag.startswith(('"', "W/")) or etag == "*" else f'"{etag}"'


def _is_loopback(endpoint: str | None) -> bool:
    hostname = urllib.parse.urlsplit(endpoint or "").hostname or ""
    if hostname in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
