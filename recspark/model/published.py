"""What the later stages read of a published model (``models/RUN_DATE``), typed once.

``model.pt`` stores its ``spec`` (:class:`~recspark.model.spec.ModelSpec`, the one typed
description of a model) and ``meta`` as plain dicts (:mod:`recspark.model.saving`), so models saved
before these types existed load unchanged; the spec and :class:`ModelMeta` are built from those
dicts on load and give them back with ``as_dict()`` for saving. :class:`PublishedModel` adds the
folder and what the trainer's ``metrics.json`` says (``model_version``, the per-epoch history, the
settings it ran with).

A model's rows follow the id maps of one prepared run (``meta.index_date``); ``prepare`` re-run for
that date with other data writes other maps, and the model's row ``i`` is then somebody else.
``meta.index_fingerprint`` (:func:`index_fingerprint`) records which maps it was trained on, and
:func:`check_id_maps` is what ``score``, ``evaluate``, ``recommend`` and a warm start call before
they use a model with a prepared run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from recspark.core.errors import BadInputError, MissingInputError
from recspark.core.location import Location
from recspark.core.storage import Layout, parquet_rows, read_json
from recspark.data.prepared import MANIFEST, PreparedRun, read_manifest
from recspark.model.base import EmbeddingModel
from recspark.model.lists import lists_model
from recspark.model.saving import MODEL_FILE, load_model, model_bytes
from recspark.model.spec import ModelSpec, spec_from_dict

METRICS_FILE = "metrics.json"


def _to_spec(value: Any) -> ModelSpec:
    """A stored spec dict (or a spec) as a :class:`ModelSpec`; pydantic reports what is wrong."""
    if not isinstance(value, ModelSpec | dict):
        raise ValueError(f"a model spec is a dict, not {type(value).__name__}")
    return spec_from_dict(value)


#: A :class:`ModelSpec` field of a pydantic model, validated from its stored dict.
StoredSpec = Annotated[ModelSpec, PlainValidator(_to_spec)]
# Beside a ranking head's model: the factor tables of the model its lists rank by.
LISTS_FOLDER = "lists"


class ModelMeta(BaseModel):
    """Facts about a trained model, as ``model.pt`` stores them (``meta``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    index_date: str  # the prepared run whose id maps the model's rows follow
    run_date: str | None = None
    objective: Literal["rating", "ranking"] = "rating"
    best_epoch: int | None = None
    warm_start_from: str | None = None  # the run date whose model it started from
    # index_fingerprint() of the prepared run it was trained on; None in models saved before it.
    index_fingerprint: str | None = None
    # lists.rating_weight the lists of a model with a ranking head were published with.
    lists_rating_weight: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The plain dict ``model.pt`` holds."""
        return self.model_dump(exclude_unset=True)


class PublishedModel(BaseModel):
    """What the later stages read of a model published under ``models/RUN_DATE``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    folder: Location
    spec: StoredSpec
    meta: ModelMeta
    model_version: str
    # metrics.json as the trainer wrote it: per-epoch ``history``, the ``train`` settings it ran
    # with, its validation figures.
    metrics: dict[str, Any] = Field(default_factory=dict)

    @property
    def predicts_ratings(self) -> bool:
        """Whether its scores are ratings (``model.objective: rating``).

        A ranking model's scores are unbounded preferences: only its lists are measured.
        """
        return self.meta.objective == "rating"

    @property
    def lists_from_head(self) -> bool:
        """Whether its lists come from a ranking head beside the rating head (``lists.source:
        head``) rather than from the model's own scores."""
        return self.spec.carries_lists_head

    @property
    def lists_objective(self) -> str:
        """What its list scores are: ``ranking`` (a ranking model, or a rating model's ranking
        head) or ``rating`` (predicted ratings)."""
        return "ranking" if self.lists_from_head else self.meta.objective

    @property
    def lists_folder(self) -> Location:
        """Where the lists model's factor tables are: ``lists/`` beside a ranking head's
        rating tables, else the model's own folder."""
        return self.folder / LISTS_FOLDER if self.lists_from_head else self.folder

    def lists(self, model: EmbeddingModel) -> Lists:
        """The model whose top-N are this model's published lists, with its spec, meta and
        factor tables.

        The one definition of "the list" that ``score``, ``evaluate``, ``recommend`` and
        ``nightly`` share: a model with a ranking head gives :func:`lists_model` at the
        ``lists.rating_weight`` it was published with, a plain ranking model on raw scores whose
        meta says ``objective: ranking``; any other model is its own.
        """
        if not self.lists_from_head:
            return Lists(model, self.spec.as_dict(), self.meta.as_dict(), self.folder)
        weight = self.meta.lists_rating_weight or 0.0
        lists, spec = lists_model(model, weight)
        assert spec is not None  # a model with a ranking head has a lists model of its own
        meta = {**self.meta.as_dict(), "objective": "ranking"}
        return Lists(lists, spec, meta, self.lists_folder)


class Lists(NamedTuple):
    """What scores a published model's lists (:meth:`PublishedModel.lists`)."""

    model: EmbeddingModel
    spec: dict[str, Any]
    meta: dict[str, Any]
    factors: Location  # the folder holding its user_factors/ and item_factors/


def load_published_model(
    layout: Layout,
    run_date,
    device: str | torch.device = "cpu",
    folder: Location | None = None,
) -> tuple[EmbeddingModel, PublishedModel]:
    """The model published for ``run_date`` (in eval mode) and what it was published with;
    ``folder``: read it from there instead of ``models/RUN_DATE`` (a registered model's copy).

    Raises
    ------
    MissingInputError
        When no model was published for ``run_date``.
    BadInputError
        When its ``model.pt`` or ``metrics.json`` is not one the trainer wrote.
    """
    folder = layout.model(run_date) if folder is None else Location(folder)
    if not (folder / MODEL_FILE).exists() or not (folder / METRICS_FILE).exists():
        raise MissingInputError(
            f"no trained model for run_date {run_date} under {layout.root}: "
            "run `recspark train` first"
        )
    model, spec, meta = load_model(folder, device)
    metrics = read_json(folder / METRICS_FILE)
    try:
        published = PublishedModel.model_validate(
            {
                "folder": folder,
                "spec": spec,
                "meta": meta,
                "model_version": metrics.get("model_version")
                if isinstance(metrics, dict)
                else None,
                "metrics": metrics,
            }
        )
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise BadInputError(
            f"the model published in {folder} is not one recspark train wrote ({where}: "
            f"{problem['msg']}): re-run `recspark train` for {run_date}"
        ) from None
    return model, published


def published_version(folder: str | Path | Location) -> str | None:
    """The ``model_version`` of the model published in ``folder``; None when there is none."""
    path = Location(folder) / METRICS_FILE
    if not path.exists():
        return None
    metrics = read_json(path)
    return metrics.get("model_version") if isinstance(metrics, dict) else None


def index_fingerprint(manifest: PreparedRun) -> str:
    """A short digest of what decides a prepared run's id maps, from its manifest.

    The run date, the map sizes, the run the maps extend, and the input they were read from (its
    path, format, file fingerprint, id types): ``prepare`` re-run for the date on other data
    changes it; re-run on the very same files and settings it does not (the maps are the same).
    """
    source = manifest.input
    facts = {
        "run_date": manifest.run_date,
        "users": manifest.users,
        "items": manifest.items,
        "previous_index_date": manifest.previous_index_date,
        "input": {
            "path": source.path,
            "format": source.format,
            "validation_path": source.validation_path,
            "fingerprint": source.fingerprint,
            "implicit": source.implicit,
            "id_types": source.id_types,
        },
    }
    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_id_maps(layout: Layout, published: PublishedModel, advice: str | None = None) -> None:
    """Check that the prepared run ``published`` names (``meta.index_date``) still holds the id
    maps the model was trained on; read the manifest and footers only, so this runs before any
    Spark task.

    A model with ``meta.index_fingerprint`` is checked against :func:`index_fingerprint` of the
    run's manifest; one saved before that field existed (or a run without a manifest) at least
    by the sizes of its user and item tables against the id maps'.

    Parameters
    ----------
    advice
        What to do when they differ; by default, re-run ``train`` for the model's date.

    Raises
    ------
    BadInputError
        When the prepared run's id maps are not the model's (``prepare`` was re-run since).
    MissingInputError
        When the prepared run is gone.
    """
    index_date = published.meta.index_date
    run_date = published.meta.run_date or published.folder.name
    prepared = layout.prepared(index_date)
    advice = advice or f"re-run `recspark train` for {run_date}"
    stale = f"the model for {run_date} was trained on other id maps than {prepared} holds now"
    if (prepared / MANIFEST).exists():
        manifest = read_manifest(layout, index_date)
        recorded = published.meta.index_fingerprint
        if recorded is not None and recorded != index_fingerprint(manifest):
            raise BadInputError(f"{stale} (prepare was re-run for {index_date} since): {advice}")
        sizes = (manifest.users, manifest.items)
    elif (prepared / "user_index").is_dir() and (prepared / "item_index").is_dir():
        sizes = (parquet_rows(prepared / "user_index"), parquet_rows(prepared / "item_index"))
    else:
        raise MissingInputError(
            f"no prepared run for {index_date} under {layout.root}, whose id maps the model for "
            f"{run_date} follows: run `recspark prepare` and then {advice[0].lower()}{advice[1:]}"
        )
    trained = (published.spec.n_users, published.spec.n_items)
    if sizes != trained:
        raise BadInputError(
            f"{stale} (the model has {trained[0]} users and {trained[1]} items, the id maps "
            f"{sizes[0]} and {sizes[1]}): {advice}"
        )


def save_model(
    path: str | Path | Location,
    model: EmbeddingModel,
    spec: ModelSpec | dict[str, Any],
    meta: ModelMeta | dict[str, Any],
) -> None:
    """Write ``model.pt``: ``spec`` and ``meta`` are checked against
    :class:`~recspark.model.spec.ModelSpec` and :class:`ModelMeta` and stored as plain dicts."""
    checked_spec, checked_meta = spec_from_dict(spec), ModelMeta.model_validate(meta)
    Location(path).write_bytes(model_bytes(model, checked_spec.as_dict(), checked_meta.as_dict()))
