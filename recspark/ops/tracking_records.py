"""What each command logs to its MLflow run (:mod:`recspark.ops.tracking`).

``train``: its settings (``model``, ``train``, ``ranking``, ``lists``) as params, the best epoch's
figures and every epoch's curves as metrics, ``loss.png`` and ``metrics.json`` as artifacts, the
input and the prepared splits as datasets (with the input's fingerprint and the id maps'), the
``model_version`` as a tag, and the model itself, registered
(:func:`~recspark.ops.tracking_registry.log_published_model`). ``evaluate``: its settings, the
model's and each baseline's figures, the report folder. ``nightly``: its settings digest and
input fingerprint on the parent run, and prepare's and score's counts on their nested runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recspark.core.config import Config
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.data.prepared import read_manifest
from recspark.model.published import index_fingerprint
from recspark.ops.tracking import TrackedRun
from recspark.ops.tracking_registry import log_published_model
from recspark.serve.pyfunc_lists import ListSettings

#: metrics.json keys that are not figures of the run: the curves and the settings it ran with.
_NOT_FIGURES = ("history", "spec", "train", "ranking")


def list_settings(config: Config) -> ListSettings:
    """How ``score`` makes the lists, for the registered model to make them alike."""
    return ListSettings(
        top_n=config.score.top_n,
        exclude_seen=config.score.exclude_seen,
        min_item_ratings=config.score.min_item_ratings,
    )


def run_tags(config: Config, command: str) -> dict[str, str]:
    """The tags every run of ``command`` carries: the command, run date and root."""
    return {
        "recspark.command": command,
        "run_date": str(config.run_date),
        "root": config.paths.root,
    }


def record_training(
    run: TrackedRun, config: Config, metrics: Mapping[str, Any], outputs: Mapping[str, str]
) -> dict[str, Any]:
    """Log a published training run to ``run`` and register its model; return the summary's
    ``tracking`` field (with the registered version)."""
    layout = Layout(config.paths.root)
    sections = ("model", "train", "ranking", "lists")
    run.log_params({name: getattr(config, name).model_dump(mode="json") for name in sections})
    run.log_params({"run_date": str(config.run_date), "model_version": metrics["model_version"]})
    run.log_metrics({k: v for k, v in metrics.items() if k not in _NOT_FIGURES})
    run.log_curves(list(metrics.get("history") or []))
    run.log_files([outputs[key] for key in ("loss_curve", "metrics") if key in outputs])
    manifest = read_manifest(layout, config.run_date)
    prepared = layout.prepared(config.run_date)
    maps = index_fingerprint(manifest)
    if manifest.input.path:
        run.log_dataset("input", manifest.input.path, manifest.input.fingerprint, "input")
    run.log_dataset(f"train {manifest.run_date}", str(prepared / "train"), maps, "training")
    run.log_dataset(
        f"validation {manifest.run_date}", str(prepared / "validation"), maps, "validation"
    )
    run.set_tags({"model_version": metrics["model_version"]})
    version = log_published_model(
        run,
        Location(outputs["model"]).parent,
        prepared,
        list_settings(config),
        {"model_version": str(metrics["model_version"]), "run_date": str(config.run_date)},
    )
    return {
        **run.summary(),
        "registered_model": run.settings.model_name if version else None,
        "registered_version": version,
    }


def record_evaluation(
    run: TrackedRun,
    config: Config,
    result: Mapping[str, Any],
    report_files: list[str],
    validation: tuple[Location, str | None],
) -> dict[str, Any]:
    """Log an evaluation (its summary fields ``result``: metrics, counts, baselines) to ``run``;
    return the summary's ``tracking`` field. ``validation``: the split it measured and the
    fingerprint of its id maps."""
    run.log_params(
        {
            "evaluate": config.evaluate.model_dump(mode="json"),
            "score.min_item_ratings": config.score.min_item_ratings,
            "run_date": str(config.run_date),
        }
    )
    metrics = result.get("metrics", {})
    run.log_metrics(metrics)
    run.log_metrics({f"count.{k}": v for k, v in result.get("counts", {}).items()})
    run.log_metrics({"baseline": dict(result.get("baselines", {}))})
    run.log_files(report_files)
    split, maps = validation
    run.log_dataset(f"validation {split.parent.name}", str(split), maps, "validation")
    run.set_tags({"model_version": metrics.get("model_version")})
    return run.summary()


def record_stage(run: TrackedRun, counts: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
    """A nightly stage that has no run of its own (prepare, score): its counts and figures."""
    run.log_metrics({f"count.{k}": v for k, v in counts.items()})
    run.log_metrics(metrics)
    run.set_tags({"model_version": metrics.get("model_version")})
