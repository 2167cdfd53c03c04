"""What every stage stands on: column names, errors, config, the Spark session, storage and
torch helpers.

Nothing here imports a stage room (:mod:`recspark.data`, :mod:`recspark.model`, ...); every room may
import from here.
"""
