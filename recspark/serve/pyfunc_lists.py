"""The published lists of given users, from a model folder and three tables, with no Spark.

What the MLflow ``pyfunc`` of :mod:`recspark.serve.pyfunc` runs: the model ``train`` published
(``model.pt`` and its tables) and, copied beside it from the model's prepared run, ``rated/``
(each user's raw id, index and rated items), ``item_index/`` (raw item ids) and ``item_counts/``
(training ratings per item). A list is made as ``score`` makes it: the same lists model
(:func:`~recspark.model.lists.lists_model`), the same kernel
(:func:`~recspark.serve.kernel.recommend_batches`, ties to the lower index), rated items left out
(``score.exclude_seen``) and items with fewer than ``score.min_item_ratings`` training ratings
never listed, so a user's rows here are their rows of the published table. Nothing here imports
pyspark: the model loads on a machine with torch and pyarrow alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recspark.core.constants import ITEM_ID, ITEM_IDX, ITEMS, USER_ID, USER_IDX
from recspark.core.errors import BadInputError
from recspark.core.storage import read_parquet
from recspark.model.lists import lists_model
from recspark.model.saving import load_model, model_bytes
from recspark.serve.kernel import UserTable, recommend_batches

#: The prepared run's tables the lists need, copied beside the model.
TABLES = ("rated", "item_index", "item_counts")
TRAIN_RATINGS = "train_ratings"  # item_counts' column (recspark.data.prepared.TRAIN_RATINGS)
#: The columns of the lists, one row per (user, rank).
COLUMNS = (USER_ID, "rank", ITEM_ID, "score")


@dataclass(frozen=True)
class ListSettings:
    """How the lists are made: ``score.top_n``, ``score.exclude_seen``,
    ``score.min_item_ratings``."""

    top_n: int = 10
    exclude_seen: bool = True
    min_item_ratings: int = 5


class PublishedLists:
    """A published model's lists, ready to make for any of its users."""

    def __init__(self, model_folder: Path, tables: Path, settings: ListSettings):
        model, spec, meta = load_model(model_folder, "cpu")
        lists, lists_spec = lists_model(model, float(meta.get("lists_rating_weight") or 0.0))
        if lists_spec is not None:  # a ranking head's lists: raw scores, as PublishedModel.lists
            spec, meta = lists_spec, {**meta, "objective": "ranking"}
        self.settings = settings
        self.payload = model_bytes(lists, spec, meta)
        self.users = UserTable.of(lists)
        self.rated = tables / "rated"
        item_index = read_parquet(tables / "item_index", columns=[ITEM_ID, ITEM_IDX])
        order = np.argsort(item_index.column(ITEM_IDX).to_numpy())
        self.item_ids = item_index.column(ITEM_ID).take(pa.array(order)).combine_chunks()
        if len(self.item_ids) != lists.n_items:
            raise BadInputError(
                f"item_index has {len(self.item_ids)} items for a model of {lists.n_items}: the "
                "tables are not this model's prepared run"
            )
        self.eligible = _eligible(tables / "item_counts", lists.n_items, settings.min_item_ratings)
        self.user_id_type = read_parquet(self.rated, columns=[USER_ID]).schema.field(USER_ID).type

    def top_n(self, user_ids: Any) -> pd.DataFrame:
        """The lists of ``user_ids`` (raw ids, as the input had them): ``user_id``, ``rank``
        (1 = best), ``item_id``, ``score``; ids the model does not know get no rows."""
        wanted = pa.array(list(user_ids)).cast(self.user_id_type)
        table = read_parquet(self.rated, columns=[USER_IDX, USER_ID, ITEMS])
        table = table.filter(pc.is_in(table.column(USER_ID), value_set=wanted))
        if not self.settings.exclude_seen:
            table = table.set_column(
                table.schema.get_field_index(ITEMS),
                ITEMS,
                pa.nulls(table.num_rows, table.schema.field(ITEMS).type),
            )
        batches = recommend_batches(
            iter(table.combine_chunks().to_batches()),
            self.payload,
            self.settings.top_n,
            "auto",
            "cpu",
            carry=(USER_ID,),
            item_ids=self.item_ids,
            users=self.users,
            eligible=self.eligible,
        )
        frames = [batch.to_pandas() for batch in batches]
        if not frames:
            return pd.DataFrame({name: [] for name in COLUMNS})
        lists = pd.concat(frames, ignore_index=True)
        return lists[list(COLUMNS)].sort_values([USER_ID, "rank"], ignore_index=True)


def _eligible(counts_folder: Path, n_items: int, min_item_ratings: int) -> np.ndarray:
    """Items with at least ``min_item_ratings`` training ratings (as
    :func:`recspark.data.prepared.eligible_in_run` reads ``item_counts/``)."""
    if min_item_ratings <= 0:
        return np.ones(n_items, dtype=bool)
    table = read_parquet(counts_folder, columns=[ITEM_IDX, TRAIN_RATINGS])
    counts = np.zeros(n_items, dtype=np.int64)
    counts[table.column(ITEM_IDX).to_numpy().astype(np.int64)] = table.column(
        TRAIN_RATINGS
    ).to_numpy()
    return counts >= min_item_ratings
