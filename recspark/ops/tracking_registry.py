"""The MLflow model registry of a root: a version per trained model, the ``champion`` alias, and
a registered version brought back to be scored.

``train`` logs the published model as a ``pyfunc`` (:mod:`recspark.serve.pyfunc`: the model
folder and the three tables of its prepared run that a list needs) and registers it as a new
version of ``tracking.model_name`` (:func:`log_published_model`). ``nightly`` moves the alias
``champion`` to the version it publishes once the gate passed and score committed
(:func:`crown`); a version the gate rejected gets the alias ``rejected`` and every version its
``nightly_status`` tag (:func:`mark_version`). ``score.model=models:/NAME@champion`` downloads the
version's published folder (:func:`download_registered`) and scores it.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from recspark.core.config import TrackingConfig
from recspark.core.constants import ITEM_ID, USER_ID
from recspark.core.errors import MissingInputError
from recspark.core.location import Location
from recspark.core.parquet_safety import read_schema
from recspark.core.storage import parquet_files
from recspark.ops.tracking import TrackedRun, check_tracking, copy_folder
from recspark.serve.pyfunc_lists import TABLES, ListSettings

log = logging.getLogger(__name__)

CHAMPION, REJECTED = "champion", "rejected"
STATUS_TAG = "nightly_status"
#: Where a registered version's published model folder lies in its downloaded artifacts.
PUBLISHED_IN_MODEL = Path("artifacts") / "published"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _id_type(folder: Location, column: str) -> str:
    """The pyarrow type name of ``column`` in a prepared table (``int64``, ``string``)."""
    return str(read_schema(parquet_files(folder)[0]).field(column).type)


def log_published_model(
    run: TrackedRun,
    model_folder: Location,
    prepared: Location,
    settings: ListSettings,
    tags: dict[str, str],
) -> str | None:
    """Log the model published in ``model_folder`` to ``run`` as a ``pyfunc`` and, with
    ``tracking.register``, register it; return the registered version (None: not registered).
    ``tags`` go on the version (its ``model_version`` and run date)."""
    from recspark.serve.pyfunc import log_lists_model

    register = run.settings.model_name if run.settings.register_model else None
    if not (prepared / "rated").is_dir():
        # Without rated/ (a run prepared before it existed) the lists could not leave out what
        # each user rated, as score's do: no pyfunc rather than one that lists something else.
        log.warning(
            "not logging an MLflow model: %s has no rated/ table (prepare the date again)", prepared
        )
        return None
    with tempfile.TemporaryDirectory(prefix="recspark-pyfunc-") as scratch:
        # Copied even when local: MLflow names an artifact folder after its source's name.
        published = copy_folder(model_folder, Path(scratch) / "published")
        tables = Path(scratch) / "tables"
        for name in TABLES:
            copy_folder(prepared / name, tables / name)
        ids = (_id_type(prepared / "rated", USER_ID), _id_type(prepared / "item_index", ITEM_ID))
        info = log_lists_model(published, tables, settings, ids, register)
    version = getattr(info, "registered_model_version", None)
    if register is None or version is None:
        return None
    client = _client(run.uri)
    for key, value in tags.items():
        client.set_model_version_tag(register, str(version), key, value)
    log.info("registered %s version %s", register, version)
    return str(version)


def crown(settings: TrackingConfig, version: str) -> None:
    """Point ``champion`` at ``version`` of ``tracking.model_name``: the version now published."""
    uri = check_tracking(settings)
    if uri is None:
        return
    client = _client(uri)
    client.set_registered_model_alias(settings.model_name, CHAMPION, version)
    client.set_model_version_tag(settings.model_name, version, STATUS_TAG, "published")


def mark_version(settings: TrackingConfig, version: str, status: str) -> None:
    """Tag ``version`` with how its night ended (``rejected`` by the gate, or ``failed``); a
    rejected version also takes the alias ``rejected``. ``champion`` does not move."""
    uri = check_tracking(settings)
    if uri is None:
        return
    client = _client(uri)
    client.set_model_version_tag(settings.model_name, version, STATUS_TAG, status)
    if status == REJECTED:
        client.set_registered_model_alias(settings.model_name, REJECTED, version)


def download_registered(settings: TrackingConfig, model_uri: str, target: Path) -> tuple[Path, str]:
    """Download the registered version ``model_uri`` (``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION``) into ``target``; return its published model folder and version.

    Raises
    ------
    MissingInputError
        When tracking is off, or the registry has no such model, alias or version.
    """
    uri = check_tracking(settings)
    if uri is None:
        raise MissingInputError(
            f"score.model={model_uri} names a registered model, but tracking is off: set "
            "tracking.uri (or MLFLOW_TRACKING_URI) to the MLflow server that holds it"
        )
    import mlflow
    from mlflow.exceptions import MlflowException

    match = _MODEL_URI.match(model_uri)
    assert match is not None  # ScoreConfig.model's pattern is the same
    client = _client(uri)
    try:
        if match["alias"]:
            found = client.get_model_version_by_alias(match["name"], match["alias"])
        else:
            found = client.get_model_version(match["name"], match["version"])
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{match['name']}/{found.version}",
            dst_path=str(target),
            tracking_uri=uri,
            registry_uri=uri,
        )
    except MlflowException as error:
        first = str(error.message).strip().splitlines()[0]
        raise MissingInputError(f"score.model={model_uri} at {uri}: {first}") from None
    return Path(local) / PUBLISHED_IN_MODEL, str(found.version)
