"""A published model as an MLflow ``pyfunc``: the top-N items of given user ids, loadable with
``mlflow.pyfunc.load_model`` on a machine without Spark.

The model's artifacts are the published model folder (``published/``, what ``recspark score
--set score.model=models:/NAME@ALIAS`` scores) and the three tables of its prepared run that a
list needs (``tables/``: :data:`~recspark.serve.pyfunc_lists.TABLES`); its ``model_config`` holds
the list settings. ``predict`` takes a frame with a ``user_id`` column (or a list of ids) and
returns one row per (user, rank): ``user_id``, ``rank``, ``item_id``, ``score``, the rows
``score`` publishes for those users (:class:`~recspark.serve.pyfunc_lists.PublishedLists`).
This module imports mlflow: only tracking (``tracking.uri``) and a model's loader import it.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, Schema

from recspark.core.constants import ITEM_ID, USER_ID
from recspark.serve.pyfunc_lists import ListSettings, PublishedLists

#: The artifact names: the published model folder and the prepared run's tables.
PUBLISHED, TABLES = "published", "tables"
# MLflow's column types of the id types prepare writes (int ids are long; text ids string).
_ID_TYPES = {"int64": "long", "int32": "integer", "string": "string", "large_string": "string"}


class TopNModel(PythonModel):
    """The published lists of a recspark model (module docstring)."""

    def load_context(self, context) -> None:
        settings = ListSettings(**(context.model_config or {}))
        self._lists = PublishedLists(
            Path(context.artifacts[PUBLISHED]), Path(context.artifacts[TABLES]), settings
        )

    def predict(self, context, model_input, params=None):
        """The lists of the users of ``model_input`` (a ``user_id`` column, or a list)."""
        if isinstance(model_input, pd.DataFrame):
            if USER_ID not in model_input.columns:
                raise ValueError(
                    f"the input needs a {USER_ID!r} column; it has {list(model_input)}"
                )
            users = model_input[USER_ID].tolist()
        else:
            users = list(model_input)
        return self._lists.top_n(users)


def signature(user_id_type: str, item_id_type: str) -> ModelSignature:
    """The pyfunc's signature for ids of these pyarrow types (``int64``, ``string``)."""
    user, item = _ID_TYPES.get(user_id_type, "string"), _ID_TYPES.get(item_id_type, "string")
    return ModelSignature(
        inputs=Schema([ColSpec(user, USER_ID)]),
        outputs=Schema(
            [
                ColSpec(user, USER_ID),
                ColSpec("integer", "rank"),
                ColSpec(item, ITEM_ID),
                ColSpec("float", "score"),
            ]
        ),
    )


def log_lists_model(
    published: Path,
    tables: Path,
    settings: ListSettings,
    ids: tuple[str, str],
    registered_name: str | None,
) -> Any:
    """Log the pyfunc to the active run as ``model`` (registered as a new version of
    ``registered_name`` unless None) and return MLflow's ``ModelInfo``.

    ``ids`` are the pyarrow types of the user and item ids. The requirements are given, not
    inferred: inferring them loads the model in a subprocess first.
    """
    import recspark

    requirements = [f"recspark=={recspark.__version__}", "torch", "pyarrow", "pandas"]
    with warnings.catch_warnings():
        # MLflow's advice for other models: type hints on predict (this one has a signature),
        # an input example (it would run predict while logging), a model from code.
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=TopNModel(),
            artifacts={PUBLISHED: str(published), TABLES: str(tables)},
            model_config=dataclasses.asdict(settings),
            signature=signature(*ids),
            registered_model_name=registered_name,
            pip_requirements=[*requirements, f"mlflow=={mlflow.__version__}"],
        )
