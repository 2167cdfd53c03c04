"""recspark: a recommender that runs as distributed batch jobs on Apache Spark.

Stages (one module per concern): :mod:`recspark.data.synthetic` (the embedded data set),
:mod:`recspark.data.sources` (reading and checking), :mod:`recspark.data.indexing` (stable id
maps), :mod:`recspark.data.splitting`, :mod:`recspark.train.feeding` (Petastorm),
:mod:`recspark.model.embedding`, :mod:`recspark.train.loop`, :mod:`recspark.serve.scoring`,
:mod:`recspark.evaluate.metrics`, :mod:`recspark.core.storage` (layout and safe publishing) and
:mod:`recspark.core.config`. The commands in :mod:`recspark.commands` wire them together;
:mod:`recspark.cli` runs them.
"""

__version__ = "0.1.0"
