"""Files and folders named by URI, on whichever filesystem the URI names.

recspark's outputs live under ``paths.root``, which may be a local folder or a cluster's storage:
``file://``, ``hdfs://`` (and ``viewfs://``), ``s3a://`` (``s3://``, ``s3n://``), ``gs://``,
``abfs://``/``abfss://``. Spark reads and writes them through Hadoop's connectors, given the full
URI (``str(location)``). Everything the driver, the training processes and the tests do with files
themselves (manifests, JSON records, model files, checkpoints, locks, staging, publishing,
retention) goes through :class:`Location`, backed by ``pyarrow.fs``:

* it works in every process recspark runs, the driver, Spark's Python workers and
  ``TorchDistributor``'s training processes, none of which has a JVM handle (Hadoop's
  ``FileSystem`` through py4j would only work on the driver);
* it is already installed (pyarrow is pinned for petastorm), and petastorm reads through it
  (:func:`recspark.train.feeding.open_feed`); fsspec would add one client package per store.

pyarrow has local, S3, GCS and HDFS (through ``libhdfs``, from ``HADOOP_HOME`` on a Hadoop
node) filesystems; Azure goes through fsspec's ``adlfs`` when it is installed. S3 credentials and
endpoint come from the same Hadoop settings Spark uses (``spark.hadoop.fs.s3a.*``; see
:func:`configure`), so a job is configured once.

A :class:`Location` behaves like a ``pathlib.Path`` for what recspark needs (``/``, ``name``,
``parent``, ``exists``, ``read_bytes``, ``glob``...). It converts to a local path (``os.fspath``,
``open``) only when it is one: code that would silently write to the driver's disk while
``paths.root`` is on a cluster's storage fails with a clear error instead.
"""

from __future__ import annotations

import fnmatch
import io
import os
import posixpath
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

import pyarrow.fs as pafs

from recspark.core.errors import ConfigError
from recspark.core.s3_settings import S3Settings

LOCAL_SCHEMES = frozenset({"file"})
S3_SCHEMES = frozenset({"s3a", "s3", "s3n"})
GCS_SCHEMES = frozenset({"gs", "gcs"})
HDFS_SCHEMES = frozenset({"hdfs", "viewfs"})
AZURE_SCHEMES = frozenset({"abfs", "abfss", "wasb", "wasbs"})
SCHEMES = LOCAL_SCHEMES | S3_SCHEMES | GCS_SCHEMES | HDFS_SCHEMES | AZURE_SCHEMES

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/]*)(/.*)?$")
_settings: dict[str, str] = {}
_filesystems: dict[tuple, pafs.FileSystem] = {}
_lock = threading.Lock()


def is_uri(text: str | os.PathLike) -> bool:
    """True for ``scheme://...`` text other than ``file://`` (a remote location)."""
    match = _URI.match(str(text))
    return match is not None and match.group(1).lower() not in LOCAL_SCHEMES


def configure(settings: Mapping[str, Any]) -> None:
    """Set the storage settings for this process: Hadoop's keys, as Spark takes them.

    ``fs.s3a.endpoint``, ``fs.s3a.access.key``, ``fs.s3a.secret.key``, ... with or without the
    ``spark.hadoop.`` prefix (so ``spark.conf`` of a config file can be passed whole). Later calls
    add to and override earlier ones. Without settings, S3 uses AWS's default credential chain
    (environment, profile, instance role), as S3A does.
    """
    prefix = "spark.hadoop."
    with _lock:
        for key, value in settings.items():
            key = key[len(prefix) :] if key.startswith(prefix) else key
            if key.startswith("fs."):
                _settings[key] = str(value)
        _filesystems.clear()


def settings() -> dict[str, str]:
    """This process's storage settings, to hand to another process's :func:`configure`."""
    with _lock:
        return dict(_settings)


def shown(value: Any) -> Any:
    """``value`` with every ``file://`` URI in it (strings, lists, dict values) as a plain path."""
    if isinstance(value, str):
        return str(Location(value).local) if value.startswith("file:") else value
    if isinstance(value, list):
        return [shown(item) for item in value]
    if isinstance(value, dict):
        return {key: shown(item) for key, item in value.items()}
    return value


def configure_from_spark(spark: Any) -> None:
    """Take the storage settings from a running session's Hadoop configuration (driver only).

    Under ``spark-submit --conf spark.hadoop.fs.s3a.endpoint=...`` (or ``core-site.xml``) the
    settings are Spark's; reading them back means the Python side needs no second copy. S3A's
    per-bucket keys (``fs.s3a.bucket.<bucket>.*``) come along.
    """
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    found: dict[str, str] = {}
    for key in _HADOOP_KEYS:
        value = conf.get(key)
        if value is not None:
            found[key] = value
    per_bucket = conf.getValByRegex(r"^fs\.s3a\.bucket\..+")
    for key in per_bucket.keySet():
        found[str(key)] = str(per_bucket.get(key))
    configure(found)


_HADOOP_KEYS = (
    "fs.s3a.endpoint",
    "fs.s3a.access.key",
    "fs.s3a.secret.key",
    "fs.s3a.session.token",
    "fs.s3a.endpoint.region",
    "fs.s3a.region",
    "fs.s3a.path.style.access",
    "fs.s3a.connection.ssl.enabled",
    "fs.defaultFS",
)


def s3_settings(bucket: str | None = None) -> S3Settings:
    """The :class:`recspark.core.s3_settings.S3Settings` from this process's settings and
    environment; with ``bucket``, S3A's per-bucket keys for it override the general ones."""
    return S3Settings.from_hadoop(settings(), bucket=bucket)


def _filesystem(scheme: str, authority: str) -> pafs.FileSystem:
    key = (scheme, authority) if scheme in HDFS_SCHEMES else (scheme,)
    with _lock:
        cached = _filesystems.get(key)
    if cached is not None:
        return cached
    if scheme in LOCAL_SCHEMES:
        filesystem = pafs.LocalFileSystem()
    elif scheme in S3_SCHEMES:
        filesystem = s3_settings().filesystem()
    elif scheme in GCS_SCHEMES:
        filesystem = pafs.GcsFileSystem()
    elif scheme in HDFS_SCHEMES:
        host, _, port = authority.partition(":")
        try:
            filesystem = pafs.HadoopFileSystem(host or "default", int(port or 0))
        except OSError as error:
            raise ConfigError(
                f"cannot open {scheme}://{authority}: {error}. pyarrow reaches HDFS through "
                "libhdfs: run where HADOOP_HOME, JAVA_HOME and the Hadoop CLASSPATH are set (a "
                "cluster node, or a YARN container)."
            ) from error
    elif scheme in AZURE_SCHEMES:
        filesystem = _azure_filesystem(authority)
    else:
        raise ConfigError(
            f"unknown storage scheme {scheme}://; recspark reads and writes "
            f"{', '.join(sorted(s + '://' for s in SCHEMES))} and plain local paths"
        )
    with _lock:
        _filesystems[key] = filesystem
    return filesystem


def _azure_filesystem(authority: str) -> pafs.FileSystem:
    try:
        import adlfs
    except ImportError as error:
        raise ConfigError(
            "abfs(s):// paths need the adlfs package on every node (pip install adlfs): pyarrow "
            "12 has no Azure filesystem of its own"
        ) from error
    account = authority.partition("@")[2].split(".")[0]
    handler = pafs.FSSpecHandler(adlfs.AzureBlobFileSystem(account_name=account))
    return pafs.PyFileSystem(handler)


class FileEntry(NamedTuple):
    """A file found by :meth:`Location.listing`: where, its path below the listed folder
    (``/``-separated; its own name for a file), size in bytes and modification time."""

    location: Location
    relative: str
    size: int
    mtime_ns: int


class Location:
    """A file or folder by URI; see the module docstring.

    Parameters
    ----------
    where
        A URI (``s3a://bucket/key``, ``hdfs://nn:8020/path``, ``file:///abs``), a local path
        (made absolute), or another Location.
    """

    __slots__ = ("authority", "path", "scheme")
    scheme: str
    authority: str
    path: str

    def __init__(self, where: str | os.PathLike | Location):
        if isinstance(where, Location):
            self.scheme, self.authority, self.path = where.scheme, where.authority, where.path
            return
        text = os.fspath(where) if isinstance(where, os.PathLike) else str(where)
        match = _URI.match(text)
        if match and match.group(1).lower() not in LOCAL_SCHEMES:
            self.scheme = match.group(1).lower()
            self.authority = match.group(2)
            self.path = posixpath.normpath("/" + (match.group(3) or "/").strip("/"))
            if not self.authority and self.scheme not in HDFS_SCHEMES:
                raise ConfigError(
                    f"{text!r} names no bucket or container: use {self.scheme}://NAME/..."
                )
            if self.scheme not in SCHEMES:
                _filesystem(self.scheme, self.authority)  # raises the clear error
            return
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif text.startswith("file:"):
            text = text[len("file:") :]
        self.scheme, self.authority = "file", ""
        self.path = os.path.abspath(text)

    # -- names ---------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def uri(self) -> str:
        """The full URI, as Spark and Hadoop take it."""
        if self.is_local:
            return "file://" + self.path
        return f"{self.scheme}://{self.authority}{'' if self.path == '/' else self.path}"

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and self.uri == other.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __fspath__(self) -> str:
        return str(self.local)

    @property
    def local(self) -> Path:
        """This location as a local ``Path``; an error for a cluster's storage."""
        if not self.is_local:
            raise ConfigError(
                f"{self.uri} is not on this machine's disk; recspark reads it through its storage "
                "layer (this is a bug in recspark if you see it)"
            )
        return Path(self.path)

    def __truediv__(self, name: str | os.PathLike) -> Location:
        child = object.__new__(Location)
        child.scheme, child.authority = self.scheme, self.authority
        joined = (os.path if self.is_local else posixpath).join(self.path, os.fspath(name))
        child.path = (os.path if self.is_local else posixpath).normpath(joined)
        return child

    @property
    def name(self) -> str:
        return (
            posixpath.basename(self.path.rstrip("/"))
            if not self.is_local
            else os.path.basename(self.path)
        )

    @property
    def parent(self) -> Location:
        parent = object.__new__(Location)
        parent.scheme, parent.authority = self.scheme, self.authority
        parent.path = (os.path if self.is_local else posixpath).dirname(self.path) or "/"
        return parent

    # -- the filesystem ------------------------------------------------------------------------
    @property
    def filesystem(self) -> pafs.FileSystem:
        return _filesystem(self.scheme, self.authority)

    @property
    def fs_path(self) -> str:
        """The path as ``filesystem`` takes it (``bucket/key`` on object stores)."""
        if self.is_local or self.scheme in HDFS_SCHEMES:
            return self.path
        return self.authority + ("" if self.path == "/" else self.path)

    def _info(self) -> pafs.FileInfo:
        return self.filesystem.get_file_info(self.fs_path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def size(self) -> int:
        return int(self._info().size or 0)

    def mtime(self) -> float:
        when = self._info().mtime
        return when.timestamp() if when is not None else 0.0

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        if not exist_ok and self.exists():
            raise FileExistsError(self.uri)
        self.filesystem.create_dir(self.fs_path, recursive=parents)

    def iterdir(self) -> list[Location]:
        """Children, sorted by name; an empty list for a missing folder."""
        selector = pafs.FileSelector(self.fs_path, allow_not_found=True)
        return sorted(self / info.base_name for info in self.filesystem.get_file_info(selector))

    def glob(self, pattern: str) -> list[Location]:
        """What matches ``pattern`` below this folder, sorted: ``fnmatch`` rules per ``/``-part
        (``run_date=*``, ``staging-*/_temporary``; no ``**``)."""
        head, _, rest = pattern.partition("/")
        found = [child for child in self.iterdir() if fnmatch.fnmatchcase(child.name, head)]
        if not rest:
            return found
        return sorted(match for child in found for match in child.glob(rest))

    def files(self) -> list[Location]:
        """Every file below this folder (recursively), sorted; empty for a missing folder."""
        return [entry.location for entry in self.listing()]

    def listing(self) -> list[FileEntry]:
        """Every file at or below this location, with size and time, sorted by path; one
        listing request per folder level on an object store, whatever the number of files."""
        info = self._info()
        if info.type == pafs.FileType.File:
            return [FileEntry(self, self.name, int(info.size or 0), info.mtime_ns or 0)]
        selector = pafs.FileSelector(self.fs_path, recursive=True, allow_not_found=True)
        base = len(self.fs_path.rstrip("/")) + 1
        entries = [
            FileEntry(
                self / entry.path[base:],
                entry.path[base:],
                int(entry.size or 0),
                entry.mtime_ns or 0,
            )
            for entry in self.filesystem.get_file_info(selector)
            if entry.type == pafs.FileType.File
        ]
        return sorted(entries, key=lambda entry: entry.relative)

    def __lt__(self, other: Location) -> bool:
        return self.uri < other.uri

    # -- contents ------------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        with self.filesystem.open_input_stream(self.fs_path) as handle:
            return handle.read()

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file at once: readers see the old contents or the new, never a part.

        Locally through a temporary file and a rename; on an object store one PUT is atomic.
        """
        if self.is_local:
            self.parent.mkdir()
            temporary = f"{self.path}.{uuid.uuid4().hex[:8]}.partial"
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self.path)
            return
        if self.scheme in HDFS_SCHEMES:
            self.parent.mkdir()
        with self.filesystem.open_output_stream(self.fs_path) as handle:
            handle.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def touch(self) -> None:
        if not self.exists():
            self.write_bytes(b"")

    def open(self, mode: str = "rb", encoding: str = "utf-8", errors: str = "strict") -> IO[Any]:
        """A stream for reading (``rb``/``r``) or writing whole (``wb``/``w``)."""
        if mode in ("rb", "r"):
            handle = self.filesystem.open_input_file(self.fs_path)
        elif mode in ("wb", "w"):
            if self.is_local or self.scheme in HDFS_SCHEMES:
                self.parent.mkdir()
            handle = self.filesystem.open_output_stream(self.fs_path)
        else:
            raise ValueError(f"unsupported mode {mode!r}")
        if "b" in mode:
            return handle
        return io.TextIOWrapper(handle, encoding=encoding, errors=errors)

    # -- removing and moving -------------------------------------------------------------------
    def unlink(self, missing_ok: bool = True) -> None:
        try:
            self.filesystem.delete_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        """Delete a folder and everything in it (or a file); nothing if it is missing."""
        info = self._info()
        if info.type == pafs.FileType.Directory:
            try:
                self.filesystem.delete_dir(self.fs_path)
            except OSError:
                if self.is_local:
                    raise
                # pyarrow deletes in batches of 1,000 keys (S3 DeleteObjects), which some
                # S3-compatible stores refuse (SeaweedFS: "MalformedXML"): one key at a time.
                self._delete_one_by_one()
        elif info.type == pafs.FileType.File:
            self.filesystem.delete_file(self.fs_path)

    def _delete_one_by_one(self) -> None:
        _each(lambda entry: entry.location.unlink(), self.listing())
        self.filesystem.delete_dir(self.fs_path)  # what is left: folder markers

    def move_to(self, target: Location, last: str | None = None) -> None:
        """Move this file or folder to ``target`` (which must not exist).

        Local disks and HDFS rename (atomic). Object stores have no rename: every file is copied
        (server-side, several requests at a time) and then the source deleted, with the file
        named ``last`` (a ``_SUCCESS`` marker) copied after all the others have been, so a reader
        that requires it never sees a part.
        """
        if (self.scheme, self.authority) != (target.scheme, target.authority):
            raise ValueError(f"cannot move {self} to another filesystem ({target})")
        if self.is_local or self.scheme in HDFS_SCHEMES:
            target.parent.mkdir()
            self.filesystem.move(self.fs_path, target.fs_path)
            return
        if self.is_file():
            self.filesystem.copy_file(self.fs_path, target.fs_path)
            self.unlink()
            return
        files = self.files()
        base = len(self.fs_path.rstrip("/")) + 1
        marker = [file for file in files if file.name == last]
        rest = [file for file in files if file.name != last]

        def copy(file: Location) -> None:
            self.filesystem.copy_file(file.fs_path, target.fs_path + "/" + file.fs_path[base:])

        # Server-side copies are independent requests: many at once, the marker after them all.
        _each(copy, rest)
        _each(copy, marker)
        self.rmtree()


# Requests to an object store in flight at once when copying or deleting a folder's files.
_PARALLEL_REQUESTS = 16


def _each(action: Callable[[Any], None], items: list[Any]) -> None:
    """``action`` on every item, several at a time (one request each); the first error raises,
    after every started action has ended."""
    if len(items) <= 1:
        for item in items:
            action(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(_PARALLEL_REQUESTS, len(items))) as pool:
        list(pool.map(action, items))
