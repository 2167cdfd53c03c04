"""Spark's Python worker daemon, with torch and the scoring kernel imported before it forks.

Spark starts one daemon per executor (``python -m pyspark.daemon``), which forks a worker for
each task slot, and again whenever idle workers were stopped (after a minute). Every fresh worker
would import torch and recspark's kernel on its first scoring task: about two seconds of CPU
each, paid by every core at once at the start of every scoring job. Run as the daemon instead
(``spark.python.daemon.module``, which :func:`recspark.core.spark.get_spark` sets in local mode,
where the workers run the driver's own interpreter and so find recspark), this module imports
them once, and the forked workers start with them in memory. Importing torch creates no thread
and no device context, so forking after it is safe.
"""

from __future__ import annotations

import recspark.serve.rated_files  # noqa: F401  (imports torch, pyarrow and the kernel)

if __name__ == "__main__":
    from pyspark import daemon

    daemon.manager()
