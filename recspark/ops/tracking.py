"""MLflow run records: where tracking goes, the check that its server answers, and one run's log.

Tracking is on when ``tracking.uri`` is set, else when ``MLFLOW_TRACKING_URI`` is, and off
otherwise: then nothing here imports mlflow and the commands run as they always did. With a URI,
:func:`check_tracking` (the commands' precheck, before Spark starts) asks an ``http(s)`` server's
``/health``; one that does not answer stops the command with one line naming the URI, or with
``tracking.required: false`` is warned about once and the command runs without logging.
:func:`tracked_run` opens a run in ``tracking.experiment`` (nested under the active run, as
nightly's stages are under nightly's run) and hands a :class:`TrackedRun` that logs settings as
params, figures and per-epoch curves as metrics, files as artifacts and input tables as datasets
(:class:`mlflow.data.meta_dataset.MetaDataset`: a source and a fingerprint, no rows read). The
registered model and its aliases are :mod:`recspark.ops.tracking_registry`'s.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recspark.core.config import TrackingConfig
from recspark.core.errors import RecsparkError
from recspark.core.location import Location

log = logging.getLogger(__name__)

ENV_URI = "MLFLOW_TRACKING_URI"
#: MLflow refuses longer param values; longer ones are cut (a list of ids, a long path).
MAX_PARAM_LENGTH = 6000
#: What each URI's check found: the URI to log to, or None (off after a warning).
_CHECKED: dict[tuple[str, bool], str | None] = {}


class TrackingUnavailableError(RecsparkError):
    """``tracking.uri`` names a tracking server that does not answer (``tracking.required``)."""


def tracking_uri(settings: TrackingConfig) -> str | None:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else None (tracking off)."""
    return settings.uri or os.environ.get(ENV_URI) or None


def check_tracking(settings: TrackingConfig) -> str | None:
    """The URI to log to, once its server answered; None when tracking is off.

    Raises
    ------
    TrackingUnavailableError
        When an ``http(s)`` server does not answer its ``/health`` and ``tracking.required``.
    """
    uri = tracking_uri(settings)
    if uri is None:
        return None
    key = (uri, settings.required)
    if key not in _CHECKED:
        problem = _health_problem(uri, settings.timeout_seconds)
        if problem is None:
            _CHECKED[key] = uri
        elif settings.required:
            raise TrackingUnavailableError(
                f"the MLflow tracking server at {uri} does not answer ({problem}): start it, fix "
                "tracking.uri, or set tracking.required=false to run without logging"
            )
        else:
            log.warning(
                "the MLflow tracking server at %s does not answer (%s): running without "
                "logging (tracking.required=false)",
                uri,
                problem,
            )
            _CHECKED[key] = None
    return _CHECKED[key]


def _health_problem(uri: str, timeout: float) -> str | None:
    """Why an ``http(s)`` tracking server does not answer ``/health``; None when it does (and
    for other schemes, a database or a folder, which MLflow opens itself)."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} from /health"
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        return str(reason).strip() or type(error).__name__
    return None


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (``train.lr``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def figures(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``values`` (dotted keys; booleans and text left out)."""
    return {
        key: float(value)
        for key, value in flat(values).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


@dataclass(frozen=True)
class TrackedRun:
    """One open MLflow run: what a stage logs to it."""

    run_id: str
    experiment_id: str
    uri: str
    settings: TrackingConfig

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        text = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in flat(params).items()}
        mlflow.log_params(text)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        import mlflow

        numbers = figures(metrics)
        if numbers:
            mlflow.log_metrics(numbers, step=step)

    def log_curves(self, history: list[Mapping[str, Any]]) -> None:
        """Every epoch's figures (``metrics.json``'s ``history``), stepped by epoch."""
        for record in history:
            step = int(record.get("epoch", 0))
            self.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=step)

    def log_files(self, files: Sequence[Location | str], folder: str | None = None) -> None:
        """Log existing files as artifacts (under ``folder``); files on a store are copied."""
        import mlflow

        with tempfile.TemporaryDirectory(prefix="recspark-artifacts-") as scratch:
            for file in map(Location, files):
                if not file.exists():
                    continue
                path = local_copy(file, Path(scratch) / file.name)
                mlflow.log_artifact(str(path), artifact_path=folder)

    def log_dataset(self, name: str, uri: str, digest: str | None, context: str) -> None:
        """A table this run read, by its location and fingerprint."""
        import mlflow
        from mlflow.data.meta_dataset import MetaDataset

        # MetaDataset's profile is abstract in the stubs and optional at run time.
        source, cut = _source(uri), (digest or "none")[:36]
        dataset = MetaDataset(source=source, name=name, digest=cut)  # type: ignore[abstract]
        mlflow.log_input(dataset, context=context)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({key: str(value) for key, value in tags.items() if value is not None})

    def summary(self) -> dict[str, Any]:
        """The summary line's ``tracking`` field."""
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "uri": self.uri}


def _source(uri: str) -> Any:
    """MLflow's dataset source for a table's location (``s3a://`` read as ``s3://``)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
            warnings.simplefilter("ignore", UserWarning)
            return resolve_dataset_source(str(uri).replace("s3a://", "s3://", 1))
    except Exception:  # a scheme MLflow has no source for (gs://, abfss://): keep the URI
        return HTTPDatasetSource(url=str(uri))


def local_copy(source: Location, target: Path) -> Path:
    """A local path holding ``source`` (a file or a folder): itself when local, else a copy."""
    if source.is_local:
        return source.local
    if source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        return target
    prefix = len(source.fs_path.rstrip("/")) + 1
    for file in source.files():
        path = target / file.fs_path[prefix:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.read_bytes())
    return target


def copy_folder(source: Location, target: Path) -> Path:
    """A local copy of the folder ``source`` at ``target`` (a new folder)."""
    if source.is_local:
        shutil.copytree(source.local, target)
        return target
    return local_copy(source, target)


@contextmanager
def tracked_run(
    settings: TrackingConfig, name: str, tags: Mapping[str, Any] | None = None
) -> Iterator[TrackedRun | None]:
    """An MLflow run named ``name`` for the duration of the block (None when tracking is off),
    nested under the run already active; it ends ``FAILED`` when the block raises."""
    uri = check_tracking(settings)
    if uri is None:
        yield None
        return
    import mlflow

    # mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI in this process's environment, which
    # would turn tracking on for every later command of the process (a notebook, a test
    # session): the outermost run puts the environment back as it found it.
    before = os.environ.get(ENV_URI)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    parent = mlflow.active_run()
    if parent is None:
        mlflow.set_experiment(settings.experiment)
    clean = {key: str(value) for key, value in (tags or {}).items() if value is not None}
    try:
        with mlflow.start_run(run_name=name, nested=parent is not None, tags=clean) as run:
            yield TrackedRun(run.info.run_id, run.info.experiment_id, uri, settings)
    finally:
        if parent is None:
            if before is None:
                os.environ.pop(ENV_URI, None)
            else:
                os.environ[ENV_URI] = before
