"""Downstream tables: recommendations as a Delta Lake table or Parquet folders, in Spark's catalog.

Delta's jars come from ``.jars/`` (set-up fetches them) and the session fixture's ``get_spark``
turns its SQL extension on. The model is the hand-planted one of ``tests/e2e/test_score_job.py``
(5 users, 6 items: 14 rows at ``top_n=3``), so each publish takes seconds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pandas as pd
import pytest
from pyspark.sql import functions as F

from recspark.cli import main
from recspark.core.errors import BadInputError, ConfigError
from recspark.core.storage import Layout
from recspark.ops.journal import NightlyState
from recspark.ops.nightly import prune
from recspark.serve.tables import OutputTable
from tests.conftest import REPO
from tests.e2e.test_score_job import EVERY_ITEM, RUN_DATE, plant, score, set_args
from tests.fixtures.paused_score import command as paused_score_command

DAY2 = "2026-01-16"
DELTA = ("score.table_format=delta", "score.table=recspark.recommendations")


def plant_two_days(root):
    """A planted run whose model is published for RUN_DATE and, copied, for DAY2."""
    root = plant(root)
    shutil.copytree(root / "models" / RUN_DATE, root / "models" / DAY2)
    return root


@pytest.fixture(scope="module")
def two_days(spark, tmp_path_factory):
    return plant_two_days(tmp_path_factory.mktemp("tables"))


@pytest.fixture(scope="module")
def published(two_days):
    """Both dates published to the Delta table once; the tests below share it in file order,
    the last (retention) dropping the first date."""
    summaries = [
        score_quietly(two_days, *DELTA, f"run_date={day}", "score.top_n=3")
        for day in (RUN_DATE, DAY2)
    ]
    return two_days, summaries


def score_quietly(root, *extra: str) -> dict:
    """``score`` through the CLI, its summary line parsed (for module fixtures, without capsys)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(
            ["score", *set_args([f"paths.root={root}", "spark.conf={}", EVERY_ITEM, *extra])]
        )
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert status == 0, summary
    return summary


def rows_of(spark, name: str, day: str) -> int:
    return spark.table(name).where(F.col("run_date") == day).count()


def test_delta_table_holds_both_dates_and_a_rerun_replaces_one_whole(spark, published, capsys):
    two_days, (first, second) = published
    assert first["outputs"]["table"] == "recspark.recommendations"
    assert (first["counts"]["rows"], second["counts"]["rows"]) == (14, 14)
    assert second["metrics"]["table_format"] == "delta"
    assert second["metrics"]["table_version"] == first["metrics"]["table_version"] + 1
    table = spark.table("recspark.recommendations")
    assert {"run_date", "model_version", "user_id", "item_id"} <= set(table.columns)
    assert dict(table.groupBy("run_date").count().collect()) == {
        dt.date.fromisoformat(RUN_DATE): 14,
        dt.date.fromisoformat(DAY2): 14,
    }
    # Readers during a re-run of DAY2 (top 2: 10 rows) see the old 14 rows or the new 10, never
    # both (24) nor none (0).
    seen, stop = [], threading.Event()

    def read_in_a_loop():
        while not stop.is_set():
            seen.append(rows_of(spark, "recspark.recommendations", DAY2))

    reader = threading.Thread(target=read_in_a_loop)
    reader.start()
    try:
        rerun = score(two_days, capsys, *DELTA, f"run_date={DAY2}", "score.top_n=2")
    finally:
        stop.set()
        reader.join(timeout=120)
    assert rerun["counts"]["rows"] == 10
    assert seen and set(seen) <= {14, 10}, seen
    assert rows_of(spark, "recspark.recommendations", DAY2) == 10
    assert rows_of(spark, "recspark.recommendations", RUN_DATE) == 14


def test_a_delta_write_killed_midway_leaves_the_previous_version(
    spark, published, tmp_path, capsys
):
    two_days, _ = published
    table = OutputTable(Layout(two_days).recommendations, "delta")
    version, before = table.identity(RUN_DATE), rows_of(spark, "recspark.recommendations", RUN_DATE)
    sets = [
        f"paths.root={two_days}",
        f"run_date={RUN_DATE}",
        "score.top_n=1",
        EVERY_ITEM,
        *DELTA,
        "spark.master=local[2]",
        'spark.conf={"spark.ui.enabled": "false"}',
    ]
    # tests/fixtures/paused_score.py patches the scoring task to pause after its first block.
    marker = tmp_path / "paused"
    argv, env = paused_score_command(300, marker, set_args(sets))
    log = (tmp_path / "killed.log").open("w")
    job = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    try:
        # The write job is under way once a scoring task has handed its first rows on and paused.
        while not marker.exists():
            assert job.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the job never started writing"
            time.sleep(0.2)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL
    assert table.identity(RUN_DATE) == version
    spark.sql("REFRESH TABLE recspark.recommendations")
    assert rows_of(spark, "recspark.recommendations", RUN_DATE) == before
    assert score(two_days, capsys, *DELTA, "score.top_n=1")["counts"]["rows"] == 5


def test_retention_drops_old_dates_from_a_delta_table(spark, published):
    two_days, _ = published
    layout = Layout(two_days)
    table = OutputTable(layout.recommendations, "delta", "recspark.recommendations")
    state = NightlyState(layout, table)
    removed, error = prune(layout, state, keep_runs=1, run_date=DAY2, spark=spark)
    assert (removed, error) == ([RUN_DATE], None)
    assert table.dates(spark) == [DAY2]
    assert rows_of(spark, "recspark.recommendations", RUN_DATE) == 0
    history = spark.sql(f"DESCRIBE HISTORY delta.`{table.root}`").select("operation").collect()
    assert "DELETE" in {row[0] for row in history}


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_a_date_whose_ids_change_type_is_refused(spark, tmp_path, fmt):
    layout = Layout(tmp_path / "root")
    table = OutputTable(layout.recommendations, fmt)
    numbers = spark.createDataFrame([(1, 10, 1)], "user_id long, item_id long, rank int")
    table.publish(spark, layout, numbers, RUN_DATE)
    text = spark.createDataFrame([("u1", 10, 1)], "user_id string, item_id long, rank int")
    with pytest.raises(
        BadInputError, match=r"user_id of run_date 2026-01-16 is string but .* bigint"
    ):
        table.publish(spark, layout, text, DAY2)
    assert table.dates(spark) == [RUN_DATE]


def test_parquet_output_is_a_catalog_table_that_sees_each_new_date(spark, tmp_path, capsys):
    two_days = plant_two_days(tmp_path / "root")
    name = "recspark.recommendations_parquet"
    score(two_days, capsys, "score.top_n=3", f"score.table={name}")
    assert rows_of(spark, name, RUN_DATE) == 14
    score(two_days, capsys, "score.top_n=2", f"run_date={DAY2}", f"score.table={name}")
    # No MSCK REPAIR: the new date's folder is read with the table.
    assert rows_of(spark, name, DAY2) == 10
    assert {"run_date", "model_version"} <= set(spark.table(name).columns)


def test_a_table_name_taken_by_another_root_is_refused(spark, tmp_path):
    name = "recspark.taken"
    first = Layout(tmp_path / "one")
    frame = spark.createDataFrame([(1, 10, 1)], "user_id long, item_id long, rank int")
    OutputTable(first.recommendations, "parquet", name).publish(spark, first, frame, RUN_DATE)
    other = Layout(tmp_path / "two")
    with pytest.raises(ConfigError, match=r"another paths\.root publishes under that name"):
        OutputTable(other.recommendations, "parquet", name).publish(spark, other, frame, RUN_DATE)


def test_a_delta_date_holds_the_rows_a_parquet_date_gets(spark, tmp_path, capsys):
    """The scoring tasks write the date's rows for either format; a Delta commit takes them
    from the staged files, which are gone afterwards, as they are for a Parquet date."""
    tables = {}
    for fmt in ("parquet", "delta"):
        root = plant(tmp_path / fmt, listed=True)
        summary = score(root, capsys, f"score.table_format={fmt}", "score.top_n=3")
        assert summary["metrics"]["user_factors"] == "broadcast", summary
        if fmt == "delta":
            frame = spark.read.format("delta").load(str(root / "recommendations"))
            frame = frame.where(F.col("run_date") == RUN_DATE).drop("run_date")
            tables[fmt] = frame.toPandas()  # 14 rows
        else:
            tables[fmt] = pd.read_parquet(summary["outputs"]["partition"])
        assert not list((root / "_staging").iterdir())
    order = ["user_id", "rank"]
    delta = tables["delta"].sort_values(order).reset_index(drop=True)
    parquet = tables["parquet"].sort_values(order).reset_index(drop=True)[delta.columns]
    assert len(delta) == 14
    pd.testing.assert_frame_equal(delta, parquet, check_dtype=False)
