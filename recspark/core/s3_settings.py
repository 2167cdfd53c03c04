"""Where an S3-compatible store is and how to sign in to it, read from Spark's ``fs.s3a.*`` keys.

With ``paths.root=s3a://bucket/prefix`` Spark reaches the store through Hadoop's S3A connector,
configured by ``fs.s3a.*`` keys; the driver's own file operations go through ``pyarrow.fs`` and
the run lock through boto3 (:mod:`recspark.core.s3_client`). One :class:`S3Settings`, read from the
same Hadoop keys (:meth:`S3Settings.from_hadoop`), configures all three, so they cannot point at
different stores. It is a plain frozen value that ships to worker processes as a dict
(:meth:`S3Settings.as_dict`). The module imports nothing from Spark, so it works in any process.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

import pyarrow.fs

from recspark.core.errors import ConfigError

OBJECT_STORE_SCHEMES = ("s3a", "s3", "s3n")
DEFAULT_REGION = "us-east-1"
_HADOOP_PREFIX = "spark.hadoop."
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
        Static credentials; ``None`` leaves pyarrow and boto3 to their own AWS credential chains
        (environment, profiles, instance roles, web identity).
    region
        Signing region; ``None`` means ``us-east-1``, which most non-AWS stores accept.
    path_style
        Address buckets as ``<endpoint>/<bucket>/<key>`` rather than ``<bucket>.<endpoint>/<key>``
        (Hadoop's ``fs.s3a.path.style.access``). The pinned pyarrow always uses path style for a
        custom endpoint and virtual-hosted style for AWS, whatever this says; boto3 follows it.
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
