"""The unit lane's guard (tests/unit/conftest.py) is not vacuous: each way to a JVM is shut."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.conftest import NO_JAVA_HOME, java_processes


def test_asking_for_the_spark_fixture_fails_and_says_where_the_test_belongs(request):
    with pytest.raises(pytest.fail.Exception, match="belongs in tests/e2e/"):
        request.getfixturevalue("spark")


def test_get_spark_is_refused_before_a_jvm_starts():
    from recspark.core.spark import get_spark

    with pytest.raises(pytest.fail.Exception, match="may not start a Spark"):
        get_spark("unit-lane", master="local[1]")


def test_a_session_builder_is_refused_too():
    from pyspark.sql import SparkSession

    with pytest.raises(pytest.fail.Exception, match="may not start a SparkSession"):
        SparkSession.builder.master("local[1]").getOrCreate()


def test_spark_submit_in_a_subprocess_finds_no_java():
    import pyspark

    spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    done = subprocess.run(
        [str(spark_submit), "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert NO_JAVA_HOME in done.stderr


def test_a_java_process_left_behind_is_seen(tmp_path):
    """The teardown check would see a JVM: a process whose name is ``java`` is found."""
    fake_java = tmp_path / "java"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", fake_java)
    if not Path("/proc").exists():
        pytest.skip("no /proc: the teardown check cannot list processes here")
    process = subprocess.Popen([str(fake_java), "30"])
    try:
        assert process.pid in java_processes()
    finally:
        process.kill()
        process.wait()
    assert process.pid not in java_processes()
