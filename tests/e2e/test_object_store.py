"""recspark with ``paths.root`` on an object store: a real S3 server, Spark's S3A, no local disk.

The server is SeaweedFS on loopback (``object_store`` in ``tests/conftest.py``); Spark reaches it
through the S3A connector fetched at set-up, the Python side through :mod:`recspark.core.location`.
``tests/e2e/test_pipeline.py`` runs the five stages with ``paths.root`` as a ``file://`` URI;
the rest of the suite gives plain paths. Select these with ``pytest -m objectstore``.
"""

from __future__ import annotations

import json
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from io import StringIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recspark.cli import main
from recspark.core import location
from recspark.core.location import Location
from recspark.core.storage import parquet_files, parquet_rows
from recspark.data.prepare import write_index
from recspark.data.quarantine import write_quarantine
from recspark.ops.history import read_history
from tests.conftest import tiny_overrides
from tests.e2e.test_nightly import DAY1, DAY2, as_arguments, planted_ratings

pytestmark = pytest.mark.objectstore

BUCKET = "recspark"


@pytest.fixture(scope="module")
def s3(spark, object_store):
    """The session's Spark and this process's storage layer pointed at the test server."""
    conf = object_store.hadoop_conf()
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in conf.items():
        hadoop.set(key.removeprefix("spark.hadoop."), value)
    location.configure(conf)
    object_store.create_bucket(BUCKET)
    return object_store


def _run(command: str, overrides: list[str]) -> dict:
    out = StringIO()
    with redirect_stdout(out):
        status = main([command, *as_arguments(overrides)])
    lines = out.getvalue().strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    assert status == 0, f"{command} exited {status}: {summary.get('error')}"
    return summary


def _write_inputs(root: Location) -> dict[str, str]:
    """Two days of ratings as Parquet under ``root/input`` (the second with more users)."""
    paths = {}
    for day, users in ((DAY1, 150), (DAY2, 170)):
        frame = planted_ratings(users, 60, 25)
        target = root / "input" / day / "part-0.parquet"
        with target.open("wb") as handle:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), handle)
        paths[day] = str(target.parent)
    return paths


def _race(overrides: list[str], root: Location) -> dict:
    """Two nightly runs for one date started together (two threads of this process, sharing its
    Spark session) on one root: their exit statuses and summary lines, and the root right after."""
    start = threading.Barrier(2)
    statuses = []

    def nightly():
        start.wait()
        statuses.append(main(["nightly", *as_arguments(overrides)]))

    out = StringIO()
    with redirect_stdout(out):
        runs = [threading.Thread(target=nightly) for _ in range(2)]
        for run in runs:
            run.start()
        for run in runs:
            run.join(timeout=600)
    return {
        "statuses": statuses,
        "lines": [json.loads(line) for line in out.getvalue().strip().splitlines()],
        "history": [(r.run_date, r.status) for r in read_history(root)],
        "published": (root / "recommendations" / f"run_date={DAY1}" / "_SUCCESS").is_file(),
        "journal": (root / "_nightly" / "inflight.json").exists(),
        "lock": (root / "_nightly" / "lock").exists(),
        "stash": (root / "_nightly" / "stash").glob("*"),
    }


def _pipeline(root: str) -> tuple[dict[str, dict], dict]:
    """generate → prepare → train (2 processes) → score → evaluate → nightly (two dates, the
    first raced by two runs) → recommend, all under ``root``; the summaries by step, and the race.

    The one ``train`` runs two DDP processes, each reading its shard of the feed from the store;
    one-process training on the store is the nightly runs' train stage.
    """
    # tiny_overrides only str()s its root; a URI must not go through Path, which would fold "//".
    overrides = {"spark.conf": "{}", "evaluate.baselines": "[]"}
    base = tiny_overrides(root, **overrides)
    inputs = _write_inputs(Location(root))
    summaries = {}
    for command in ("generate", "prepare"):
        summaries[command] = _run(command, base)
    # Three epochs are enough to publish a model that score, evaluate and warm start can use.
    summaries["train"] = _run(
        "train", [*base, "train.num_processes=2", "train.reader_workers=1", "train.epochs=3"]
    )
    for command in ("score", "evaluate"):
        summaries[command] = _run(command, base)
    race: dict = {}
    for day in (DAY1, DAY2):
        nightly = [
            *base,
            f"run_date={day}",
            "input.format=parquet",
            f"input.path={inputs[day]}",
            "train.epochs=4",
            "nightly.keep_runs=3",
        ]
        if day == DAY1:
            race = _race(nightly, Location(root))
            winners = [line for line in race["lines"] if line["status"] == "ok"]
            summaries[f"nightly-{day}"] = winners[0] if winners else race["lines"][0]
        else:
            summaries[f"nightly-{day}"] = _run("nightly", nightly)
    summaries["recommend"] = _run(
        "recommend",
        [
            *base,
            f"run_date={DAY2}",
            "recommend.user=7",
            "recommend.min_item_ratings=0",
            "recommend.similar_table=true",
        ],
    )
    return summaries, race


def _check_published(root: Location, summaries: dict[str, dict]) -> None:
    for name, summary in summaries.items():
        assert summary["status"] == "ok", name
    for day in (DAY1, DAY2):
        assert (root / "recommendations" / f"run_date={day}" / "_SUCCESS").is_file()
        assert (root / "models" / day / "model.pt").is_file()
    assert summaries["train"]["metrics"]["num_processes"] == 2
    records = read_history(root)
    assert [(r.run_date, r.status) for r in records] == [(DAY1, "published"), (DAY2, "published")]
    # Nothing left half-done: no staging folders, no lock, no journal, no retired copies.
    leftovers = [
        entry.relative
        for entry in root.listing()
        if entry.relative.startswith(("_staging/", "_nightly/stash", "_nightly/inflight"))
        or "/.retired-" in entry.relative
        # A local lock file stays, emptied on release; an object-store lease is deleted.
        or (entry.relative == "_nightly/lock" and entry.size)
    ]
    assert leftovers == []
    listed = summaries["recommend"]["recommendations"]
    assert len(listed) == 10


@pytest.fixture(scope="module")
def pipeline(s3, tmp_path_factory):
    """The pipeline of :func:`_pipeline` run once on the store, for the tests below."""
    root = f"s3a://{BUCKET}/pipeline-{uuid.uuid4().hex[:8]}"
    # The working directory and HOME point at an empty folder that must stay empty. Scratch goes
    # elsewhere: Spark's (spark.local.dir, set by the session fixture) and the temporary folder
    # (TorchDistributor's torchrun keeps its rendezvous files there, torch its compile cache),
    # with matplotlib's font cache.
    folder = tmp_path_factory.mktemp("pipeline")
    watched, scratch = folder / "watched", folder / "scratch"
    watched.mkdir()
    scratch.mkdir()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(watched)
        monkeypatch.setenv("HOME", str(watched))
        monkeypatch.setenv("TMPDIR", str(scratch))
        monkeypatch.setenv("MPLCONFIGDIR", str(scratch / "matplotlib"))
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        summaries, race = _pipeline(root)
    written = sorted(str(path.relative_to(watched)) for path in watched.rglob("*"))
    return {"root": root, "summaries": summaries, "race": race, "written": written}


def test_the_whole_pipeline_runs_on_an_object_store_without_a_local_file(pipeline):
    summaries = pipeline["summaries"]
    _check_published(Location(pipeline["root"]), summaries)
    for summary in summaries.values():
        for value in summary.get("outputs", {}).values():
            if isinstance(value, str) and "://" in value:
                assert value.startswith("s3a://"), value
    assert pipeline["written"] == [], "\n".join(pipeline["written"])


def test_two_nightly_runs_started_together_on_one_bucket_publish_once(pipeline):
    """The pipeline's first nightly date is two runs racing for one root."""
    race = pipeline["race"]
    lines = race["lines"]
    assert sorted(race["statuses"]) == [0, 1], lines
    winner = next(summary for summary in lines if summary["status"] == "ok")
    loser = next(summary for summary in lines if summary["status"] == "error")
    assert winner["nightly"]["decision"] == "published"
    assert "another nightly run holds" in loser["error"] and "pid" in loser["error"], loser
    assert race["history"] == [(DAY1, "published")]
    assert race["published"]
    # The loser touched nothing: no journal, no stash, and the winner's lease is gone.
    assert not race["journal"]
    assert not race["lock"]
    assert not race["stash"]


def test_a_folder_of_more_than_a_thousand_objects_is_removed_whole(s3):
    """pyarrow deletes in batches of 1,000 keys, which SeaweedFS refuses ("MalformedXML");
    rmtree then deletes key by key (a 1M-rating nightly's retention hit this)."""
    folder = Location(f"s3a://{BUCKET}/many-{uuid.uuid4().hex[:8]}")
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda n: (folder / f"part-{n:05d}").write_bytes(b"x"), range(1001)))
    assert len(folder.files()) == 1001
    folder.rmtree()
    assert not folder.exists() and folder.files() == []


def test_tables_staged_on_a_store_are_few_files_committed_once(s3, spark):
    """An id map spread over many partitions is written as one file per ``rows_per_file`` rows,
    and Spark's commit leaves no ``_temporary`` behind (each file moved once, at task commit)."""
    folder = Location(f"s3a://{BUCKET}/staged-{uuid.uuid4().hex[:8]}")
    ids = spark.range(3000).selectExpr("id AS user_id", "CAST(id AS INT) AS user_idx")
    write_index(ids.repartition(12), str(folder / "user_index"), good_rows=3000, rows_per_file=2000)
    write_quarantine(ids.repartition(5), folder, rows=3000, rows_per_file=2_000_000)
    relative = sorted(entry.relative for entry in folder.listing())
    assert [name for name in relative if name.endswith(".parquet")] == [
        name for name in relative if name.startswith(("user_index/part-", "quarantine/part-"))
    ]
    assert len(parquet_files(folder / "user_index")) == 2
    assert len(parquet_files(folder / "quarantine")) == 1
    assert not [name for name in relative if "_temporary" in name]
    assert parquet_rows(folder / "user_index") == parquet_rows(folder / "quarantine") == 3000
