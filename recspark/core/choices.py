"""The allowed values of config keys that other modules also check, declared once.

The config (:mod:`recspark.core.config`) types its keys with these ``Literal`` types, and modules
that check a value themselves (a saved model's kind, a direct call) take their tuples from here.
Plain ``typing``, no pydantic: the scoring kernel and the training loop import this on machines
that have torch and nothing else.
"""

from __future__ import annotations

from typing import Literal, get_args

InputFormat = Literal["movielens-100k", "movielens-1m", "csv", "tsv", "parquet", "synthetic"]
SideInfoFormat = Literal["movielens-100k", "movielens-1m"]
# The kinds ``model.kind`` may name (configurable); the trainer builds the internal ones itself
# (``model.blend``: an autoencoder or EASE partner, and the blend of it with the main model).
ModelKind = Literal["dot", "dot_bias", "mlp"]
InternalModelKind = Literal["autorec", "ease", "blend"]
Optimizer = Literal["sgd", "adam", "adamw", "sparse_adam", "sparse_sgd"]
ScheduleName = Literal["one_cycle", "cosine", "constant"]
RankingLoss = Literal["softmax", "bpr"]
Confidence = Literal["none", "weight", "rating"]
TableFormat = Literal["parquet", "delta"]
BaselineName = Literal["global_mean", "biases", "als", "most_popular", "als_implicit"]

INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)
SIDE_INFO_FORMATS: tuple[str, ...] = get_args(SideInfoFormat)
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
INTERNAL_MODEL_KINDS: tuple[str, ...] = get_args(InternalModelKind)
#: Every kind :func:`recspark.model.registry.build_model` builds (its table's keys).
BUILT_MODEL_KINDS: tuple[str, ...] = MODEL_KINDS + INTERNAL_MODEL_KINDS
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
RANKING_LOSSES: tuple[str, ...] = get_args(RankingLoss)
CONFIDENCES: tuple[str, ...] = get_args(Confidence)
TABLE_FORMATS: tuple[str, ...] = get_args(TableFormat)
BASELINE_NAMES: tuple[str, ...] = get_args(BaselineName)
