"""Publishing on an object store, where a move copies every file: the copies run several at a
time, the ``_SUCCESS`` marker is copied after every other file, and tables written into a staging
folder there are committed once. The store is a local folder behind an ``s3a://`` name, with its
server-side copies recorded: the unit lane starts no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from recspark.core import location
from recspark.core.location import Location
from recspark.core.s3_commit import renames_are_copies, staging_writer
from recspark.core.storage import SUCCESS, publish, publish_token


class RecordingStore:
    """A local folder answering as an object store's filesystem, recording every copy."""

    def __init__(self, folder: Path):
        self._inner = pafs.SubTreeFileSystem(str(folder), pafs.LocalFileSystem())
        self.copies: list[str] = []

    def copy_file(self, source: str, target: str) -> None:
        self.copies.append(target)
        self._inner.create_dir(target.rsplit("/", 1)[0], recursive=True)
        self._inner.copy_file(source, target)

    def open_output_stream(self, path: str) -> Any:
        self._inner.create_dir(path.rsplit("/", 1)[0], recursive=True)  # a store has no folders
        return self._inner.open_output_stream(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def store(tmp_path, monkeypatch) -> RecordingStore:
    recording = RecordingStore(tmp_path)
    monkeypatch.setitem(location._filesystems, ("s3a",), recording)
    return recording


def _folder(where: Location, names: list[str]) -> None:
    for name in names:
        (where / name).write_bytes(name.encode())


def test_a_publish_copies_the_marker_after_every_other_file(store):
    names = [f"part-{n:03d}.parquet" for n in range(40)] + ["nested/part-0.parquet"]
    old, new = Location("s3a://bucket/old-staging"), Location("s3a://bucket/new-staging")
    final = Location("s3a://bucket/prepared/2026-11-26")
    _folder(old, ["stale.parquet"])
    publish(old, final)
    first_token = publish_token(final)
    _folder(new, names)
    store.copies.clear()
    publish(new, final)
    into_final = [path for path in store.copies if path.startswith("bucket/prepared/2026-11-26/")]
    assert into_final[-1] == f"bucket/prepared/2026-11-26/{SUCCESS}"
    assert len(into_final) == len(names) + 1
    assert sorted(entry.relative for entry in final.listing()) == sorted([*names, SUCCESS])
    assert (final / "nested" / "part-0.parquet").read_bytes() == b"nested/part-0.parquet"
    assert publish_token(final) not in (None, first_token)
    # Nothing else is left: not the staging folder, not the old output moved aside.
    assert [entry.relative for entry in Location("s3a://bucket").listing()] == [
        f"prepared/2026-11-26/{name}" for name in sorted([*names, SUCCESS])
    ]


def test_a_failed_copy_raises_and_leaves_the_target_unmarked(store, monkeypatch):
    staging = Location("s3a://bucket/staging")
    _folder(staging, [f"part-{n}.parquet" for n in range(8)])
    copy = store.copy_file

    def failing(source: str, target: str) -> None:
        if target.endswith("part-5.parquet"):
            raise OSError("connection reset")
        copy(source, target)

    monkeypatch.setattr(store, "copy_file", failing)
    with pytest.raises(OSError, match="connection reset"):
        publish(staging, Location("s3a://bucket/final"))
    assert not (Location("s3a://bucket/final") / SUCCESS).exists()


def test_only_object_stores_count_a_rename_as_copies():
    assert renames_are_copies("s3a://bucket/root/_staging/x")
    assert renames_are_copies("gs://bucket/x")
    assert not renames_are_copies("/tmp/root/_staging/x")
    assert not renames_are_copies("file:///tmp/root")
    assert not renames_are_copies("hdfs://namenode:8020/root")


class _Writer:
    def __init__(self):
        self.options: dict[str, str] = {}

    def option(self, key: str, value: str) -> _Writer:
        self.options[key] = value
        return self


class _Frame:
    def __init__(self):
        self.write = _Writer()


def test_tables_staged_on_an_object_store_are_committed_once():
    remote, local = _Frame(), _Frame()
    staging_writer(remote, "s3a://bucket/root/_staging/t")
    staging_writer(local, "/tmp/root/_staging/t")
    assert remote.write.options == {"mapreduce.fileoutputcommitter.algorithm.version": "2"}
    assert local.write.options == {}
