"""The one way jobs, the CLI and tests get a SparkSession.

``get_spark`` sets a local master only when none was given (spark-submit passes its own through
``spark.master``), so a job runs unchanged on a laptop and on a cluster. It also points Spark's
Python workers at this interpreter: without it pandas UDFs run under a system Python that lacks
pyarrow and fail with "No module named 'pyarrow'".

Run from a checkout, it also puts the jars ``make setup`` fetched into ``.jars/spark-X.Y/`` for the
running pyspark's line (the S3A connector with its AWS SDK bundle, Delta Lake; see
``deps/spark-X.Y/pom.xml``) on the classpath (a local master: the
driver's, ``spark.driver.extraClassPath``, with no copy) or on ``spark.jars``, so ``s3a://`` paths
and ``format("delta")`` work without ``--jars``; when Delta is among the jars it turns on Delta's
SQL extension and catalog, which Delta needs besides its jars. A ``spark.jars`` from spark-submit
(``--jars``) or from ``conf`` wins, and the Delta settings are only defaults: on a cluster, with
``--py-files recspark.zip``, there is no ``.jars/`` next to the package and nothing is added.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

import recspark

_DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "true",
}

_SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"

# What Delta Lake needs besides its jars; set only when Delta's jars are on the session and the key
# is not set already.
_DELTA = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def spark_line() -> str:
    """``MAJOR.MINOR`` of the pyspark that runs: which ``.jars/spark-X.Y/`` and ``deps/`` apply."""
    import pyspark

    return ".".join(pyspark.__version__.split(".")[:2])


def _checkout_jars() -> list[str]:
    """The jars ``make setup`` put in the checkout's ``.jars/spark-X.Y/`` for the running pyspark's
    line (the S3A connector must match its Hadoop, Delta its Spark), sorted absolute paths.

    Empty when recspark is not imported from a checkout (``--py-files recspark.zip``, a wheel) or
    the jars were never fetched.
    """
    folder = Path(recspark.__file__).resolve().parents[1] / ".jars" / f"spark-{spark_line()}"
    if not folder.is_dir():
        return []
    return [str(jar.resolve()) for jar in sorted(folder.glob("*.jar")) if jar.is_file()]


def _mentions_delta(jars: str, packages: str) -> bool:
    """Whether a ``spark.jars`` list (file names) or ``spark.jars.packages`` list names Delta."""
    names = [item.strip().rsplit("/", 1)[-1] for item in jars.split(",")]
    names += [item.strip() for item in packages.split(",")]
    return any("delta" in name.lower() for name in names if name)


def get_spark(
    app_name: str = "recspark",
    master: str | None = None,
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """Return the active SparkSession or build one.

    Parameters
    ----------
    app_name
        Shown in the Spark UI and the cluster manager.
    master
        Used only when neither spark-submit nor ``conf`` set ``spark.master``; defaults to
        ``local[*]``.
    conf
        Extra Spark settings (``spark.conf`` in the YAML config); they win over the defaults here.
    """
    # Workers must run this interpreter (the venv's); a cluster may override via spark-submit.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit the JVM is already up: connect first, or SparkConf() below reads an
        # empty dict and the session is forced to local[*] whatever --master said.
        SparkContext._ensure_initialized()
    submitted = SparkConf()  # holds what spark-submit passed, when run under it
    builder = SparkSession.builder.appName(app_name)
    settings = dict(_DEFAULTS)
    if not submitted.contains("spark.pyspark.python"):
        settings["spark.pyspark.python"] = os.environ["PYSPARK_PYTHON"]
    settings.update(conf or {})
    if not submitted.contains("spark.master") and "spark.master" not in settings:
        settings["spark.master"] = master or "local[*]"
    jars = settings.get("spark.jars") or submitted.get("spark.jars", "")
    if not jars and (fetched := _checkout_jars()):
        jars = ",".join(fetched)
        master_set = settings.get("spark.master") or submitted.get("spark.master", "")
        local = master_set.startswith("local") and not submitted.contains("spark.master")
        if local and "spark.driver.extraClassPath" not in settings:
            # One JVM runs driver and executors: the classpath is enough. spark.jars would copy
            # every jar (the AWS SDK bundle alone is 560 MB) into each session's temp folder.
            settings["spark.driver.extraClassPath"] = ":".join(fetched)
        else:
            settings["spark.jars"] = jars
    master_set = settings.get("spark.master") or submitted.get("spark.master", "")
    packages = settings.get("spark.jars.packages") or submitted.get("spark.jars.packages", "")
    if _mentions_delta(jars, packages):
        delta = dict(_DELTA)
        if master_set.startswith("local"):
            # Delta rebuilds a table's state in 50 tasks by default, sized for clusters and long
            # logs: on one machine, for tables of a few dozen files (recspark's own), one task
            # per core does it in a fraction of the time.
            delta[_SNAPSHOT_PARTITIONS] = str(os.cpu_count() or 1)
        for key, value in delta.items():
            if not submitted.contains(key) and key not in settings:
                settings[key] = value
    for key, value in settings.items():
        if not submitted.contains(key) or key in (conf or {}):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # Spark checks the spark.sql.* settings when it builds the session's state, lazily at its
    # first use: build it now, so that a value it refuses fails here, not inside the first job.
    spark.conf.get("spark.sql.session.timeZone")
    return spark
