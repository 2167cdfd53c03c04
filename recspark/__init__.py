"""recspark: a recommender that runs as distributed batch jobs on Apache Spark.

The rooms, upstream first: :mod:`recspark.core` (config, errors, storage and safe publishing,
Spark), :mod:`recspark.data` (the embedded synthetic data set, reading and checking inputs,
stable id maps, splits), :mod:`recspark.model` (one typed spec per kind, the registry that builds
them, saving), :mod:`recspark.train` (the feeds, the loop, the objectives, publication),
:mod:`recspark.serve` (the scoring kernel and jobs, fold-in), :mod:`recspark.evaluate` (metrics,
baselines, reports) and :mod:`recspark.ops` (nightly, locks, history). The stages of
:mod:`recspark.commands` wire them together; :mod:`recspark.cli` runs them.
"""

__version__ = "0.1.0"
