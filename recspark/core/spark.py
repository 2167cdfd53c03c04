"""The one way jobs, the CLI and tests get a SparkSession.

``get_spark`` sets a local master only when none was given (spark-submit passes its own through
``spark.master``), so a job runs unchanged on a laptop and on a cluster. It also points Spark's
Python workers at this interpreter: without it pandas UDFs run under a system Python that lacks
pyarrow and fail with "No module named 'pyarrow'".
"""

from __future__ import annotations

import os
import sys

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

_DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.adaptive.enabled": "true",
}


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
    for key, value in settings.items():
        if not submitted.contains(key) or key in (conf or {}):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
