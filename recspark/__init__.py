"""recspark: a recommender that runs as distributed batch jobs on Apache Spark.

Stages (one module per concern): :mod:`recspark.synthetic` (the embedded data set),
:mod:`recspark.sources` (reading and checking), :mod:`recspark.indexing` (stable id maps),
:mod:`recspark.splitting`, :mod:`recspark.feeding` (Petastorm), :mod:`recspark.models`,
:mod:`recspark.training`, :mod:`recspark.scoring`, :mod:`recspark.metrics`,
:mod:`recspark.artifacts` (layout and safe publishing) and :mod:`recspark.config`. The commands in
:mod:`recspark.commands` wire them together; :mod:`recspark.cli` runs them.
"""

__version__ = "0.1.0"
