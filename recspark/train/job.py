"""The train job's orchestration: from a prepared run to a published model under
``models/RUN_DATE`` (:func:`train_and_publish`, what ``recspark train`` runs).

The parts each have their module: the spec and the loop's settings (:mod:`recspark.train.spec`),
warm start (:mod:`recspark.train.warm`), ``model.blend`` (:mod:`recspark.train.blend`), the
publication gate (:mod:`recspark.train.publication_gate`) and what is written
(:mod:`recspark.train.artifacts`). Here: the objective ``model.objective`` and ``ranking.*`` name
(:func:`build_objective`), the checkpoint guard (:func:`run_fingerprint`: every epoch is
checkpointed under ``_checkpoints/RUN_DATE``), and :func:`run_fit`, which trains in this process
or data-parallel through TorchDistributor when ``train.num_processes > 1``
(:mod:`recspark.train.distributed`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, NamedTuple

import torch

from recspark.core.config import (
    Config,
    ListsConfig,
    ModelConfig,
    RankingConfig,
    TrainConfig,
    carries_lists_head,
)
from recspark.core.errors import BadInputError, TrainingRejectedError
from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.core.torch_utils import resolve_device
from recspark.data.prepared import PreparedRun, check_tables, read_manifest
from recspark.model.base import EmbeddingModel
from recspark.model.spec import ModelSpec
from recspark.train.artifacts import Published, TrainedModel, publish_model
from recspark.train.blend import fit_blend
from recspark.train.checkpoints import remove_checkpoints
from recspark.train.feeding import row_groups
from recspark.train.loop import fit, init_model, settings_fingerprint
from recspark.train.objectives import for_name
from recspark.train.objectives.base import Objective
from recspark.train.objectives.joint import JointObjective
from recspark.train.objectives.ranking import RankingObjective, RankingSettings
from recspark.train.objectives.sampling import item_popularity
from recspark.train.phases import PhaseClock
from recspark.train.publication_gate import (
    ValidationScores,
    best_figures,
    global_mean_rmse,
    publication_refusal,
    starting_figures,
)
from recspark.train.records import FitResult
from recspark.train.spec import model_spec, side_features, train_settings
from recspark.train.validation import HeldSplit
from recspark.train.warm import Carried, warm_start

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# train.* keys that do not change what a run computes, so a resumed run may differ in them.
_NOT_IN_FINGERPRINT = {"resume", "device", "reader_workers", "cpu_threads", "allow_worse"}


class TrainRun(NamedTuple):
    """What :func:`train_and_publish` did: the spec trained, train rows, what warm start
    carried, and what was published."""

    spec: ModelSpec
    rows: int
    carried: Carried
    published: Published
    blend: dict | None


def build_objective(
    model: ModelConfig,
    ranking: RankingConfig,
    lists: ListsConfig,
    *,
    manifest: PreparedRun,
    prepared: Location | None = None,
    spark: SparkSession | None = None,
) -> Objective:
    """The objective ``model.objective`` names, with its settings.

    For ``ranking``: ``ranking.*`` and, when negatives follow popularity, the positives per item
    of the train split under ``prepared`` (one Spark aggregate; needs ``spark``). A rating model
    with a ranking head (``lists.source: head``) gets the :class:`JointObjective`, whose head
    takes every train row as a positive.
    """
    head = carries_lists_head(model, lists)
    if model.objective != "ranking" and not head:
        return for_name(model.objective)
    settings = RankingSettings(**ranking.model_dump())
    if head:
        settings = dataclasses.replace(settings, positive_threshold=0.0, confidence="none")
    counts = None
    if spark is not None and prepared is not None and settings.sampling_alpha > 0:
        train = spark.read.parquet(str(prepared / "train"))
        counts = item_popularity(train, manifest.items, settings.positive_threshold)
    objective = for_name("ranking", ranking=settings, item_counts=counts)
    if head:
        assert isinstance(objective, RankingObjective)
        return JointObjective(objective, lists.head_weight, lists.head_rows)
    return objective


def train_rows(prepared: Location) -> int:
    """Rows of the prepared train split; an empty one is an error that says what to do."""
    rows = sum(row_groups(str(prepared / "train")))
    if rows == 0:
        raise BadInputError(f"{prepared / 'train'} holds no rows: re-run prepare with more data")
    return rows


def run_fingerprint(
    config: Config, spec: ModelSpec, rows: int, manifest: PreparedRun, warm_start_from: str | None
) -> str:
    """What a checkpoint must agree with for ``train.resume`` to continue from it (the settings
    of every section that changes what a run computes)."""
    head = config.lists_head
    ranking = config.model.objective == "ranking" or head
    return settings_fingerprint(
        {
            "spec": spec.as_dict(),
            "train": {
                k: v for k, v in config.train.model_dump().items() if k not in _NOT_IN_FINGERPRINT
            },
            "objective": config.model.objective,
            "ranking": config.ranking.model_dump() if ranking else None,
            **({"lists": config.lists.model_dump()} if head else {}),
            "train_rows": rows,
            "manifest": manifest.input.fingerprint,
            "warm_start_from": warm_start_from,
        }
    )


def run_fit(
    train: TrainConfig,
    spark: SparkSession,
    *,
    model: EmbeddingModel,
    spec: ModelSpec,
    prepared: Location,
    objective: Objective,
    checkpoint_dir: Location,
    fingerprint: str,
    head_lr_scale: float | None = None,
    validation: HeldSplit | None = None,
) -> FitResult:
    """Train in this process, or data-parallel when ``train.num_processes > 1``.

    ``spark``'s master says whether the processes of a data-parallel run start on the driver.
    ``validation`` holds the validation batches an earlier pass here read (one process only:
    the processes of a data-parallel run validate their own shards).
    """
    settings = train_settings(train, head_lr_scale)
    device = resolve_device(train.device)
    train_path, validation_path = str(prepared / "train"), str(prepared / "validation")
    if train.cpu_threads:
        # On cores shared with Spark tasks (or other jobs) fewer threads than cores run faster.
        torch.set_num_threads(train.cpu_threads)
    if train.num_processes <= 1:
        return fit(
            model,
            train_path,
            validation_path,
            settings,
            device,
            objective=objective,
            checkpoint_dir=str(checkpoint_dir),
            resume=train.resume,
            fingerprint=fingerprint,
            validation=validation,
        )
    from recspark.train.distributed import fit_distributed

    groups = len(row_groups(train_path))
    if groups < train.num_processes:
        raise BadInputError(
            f"{train_path} has {groups} Parquet row groups, fewer than train.num_processes="
            f"{train.num_processes}, and each process reads whole row groups: lower "
            "train.num_processes, or re-run prepare with a smaller prepare.rows_per_file"
        )
    return fit_distributed(
        model,
        spec.as_dict(),
        train_path=train_path,
        validation_path=validation_path,
        settings=settings,
        device=device,
        num_processes=train.num_processes,
        local_mode=(spark.sparkContext.master or "").startswith("local"),
        cpu_threads=train.cpu_threads,
        device_setting=train.device,
        executor_gpus=float(spark.conf.get("spark.task.resource.gpu.amount", "0") or 0) > 0,
        objective=objective,
        checkpoint_dir=str(checkpoint_dir),
        resume=train.resume,
        fingerprint=fingerprint,
    )


def train_and_publish(config: Config, spark: SparkSession) -> TrainRun:
    """Train the model the config describes on its prepared run and publish it, or refuse to.

    The one entry point ``recspark train`` calls, so it reads the whole config; every step it
    calls gets the sections it reads. Checkpoints are removed once the model is published; a
    refused run keeps its own, so ``train.resume`` with ``train.allow_worse`` publishes it.

    Raises
    ------
    TrainingRejectedError
        When the run did not learn (:func:`publication_refusal`) and ``train.allow_worse`` is off.
    """
    clock = PhaseClock()
    layout = Layout(config.paths.root)
    manifest = read_manifest(layout, config.run_date)
    prepared = layout.prepared(config.run_date)
    # pyarrow and petastorm read them: no file that could run code. (Its annotation says Path;
    # it reads a Location, as it always has.)
    check_tables(prepared)
    spec = model_spec(config.model, config.train, config.lists, manifest, prepared)
    rows = train_rows(prepared)
    model = init_model(spec.as_dict(), config.train.seed)
    assert isinstance(model, EmbeddingModel)
    carried = Carried()
    if config.train.warm_start:
        carried = warm_start(layout, config.run_date, model, spec)
    if config.model.side_info is not None:
        features = side_features(config.model, manifest, prepared)
        model.set_side_features(features.user, features.item)
    device = resolve_device(config.train.device)
    checkpoint_dir = layout.checkpoints / str(config.run_date)
    if not config.train.resume:
        remove_checkpoints(checkpoint_dir)
    log.info(
        "training %s on %d rows (%d users, %d items) on %s with %d process(es)",
        spec.kind,
        rows,
        spec.n_users,
        spec.n_items,
        device,
        config.train.num_processes,
    )
    started = time.perf_counter()
    trained, start = _train(
        config, spark, model, spec, carried, manifest=manifest, rows=rows, clock=clock
    )
    trained = dataclasses.replace(trained, seconds=time.perf_counter() - started)
    with clock.timing("validation"):
        _gate(
            config.model,
            config.train,
            best=trained.best,
            start=start,
            manifest=manifest,
            prepared=prepared,
            run_date=config.run_date,
        )
    published = publish_model(
        layout,
        trained,
        config.train,
        run_date=config.run_date,
        objective=config.model.objective,
        manifest=manifest,
        lists_rating_weight=config.lists.rating_weight if config.lists_head else None,
        clock=clock,
    )
    remove_checkpoints(checkpoint_dir)
    return TrainRun(trained.spec, rows, carried, published, trained.blend)


def _train(
    config: Config,
    spark: SparkSession,
    model: EmbeddingModel,
    spec: ModelSpec,
    carried: Carried,
    *,
    manifest: PreparedRun,
    rows: int,
    clock: PhaseClock,
) -> tuple[TrainedModel, ValidationScores]:
    """Fit the model (and a blend's partner); the figures of its starting weights beside it,
    which the publication gate compares with. The fit's phases are added to ``clock``."""
    layout = Layout(config.paths.root)
    prepared = layout.prepared(config.run_date)
    device = resolve_device(config.train.device)
    fingerprint = run_fingerprint(config, spec, rows, manifest, carried.source)
    objective = build_objective(
        config.model,
        config.ranking,
        config.lists,
        manifest=manifest,
        prepared=prepared,
        spark=spark,
    )
    held = HeldSplit()  # read by the starting weights' pass, kept for every epoch's
    with clock.timing("validation"):
        start = starting_figures(
            model,
            prepared,
            device,
            objective,
            config.train.seed,
            precision=config.train.precision,
            feed=config.train.feed,
            held=held,
        )
    result = run_fit(
        config.train,
        spark,
        model=model,
        spec=spec,
        prepared=prepared,
        objective=objective,
        checkpoint_dir=layout.checkpoints / str(config.run_date),
        fingerprint=fingerprint,
        head_lr_scale=config.lists.head_lr_scale if config.lists_head else None,
        validation=held,
    )
    clock.merge(result.seconds_by_phase)
    model.cpu()
    trained = TrainedModel(
        model,
        spec,
        result,
        best_figures(result, start),
        carried,
        device,
        0.0,
        objective.loss_name,
    )
    if config.model.blend is None:
        return trained, start
    blend = fit_blend(
        config.model.blend,
        config.train,
        config.ranking,
        main=model,
        main_spec=spec,
        manifest=manifest,
        prepared=prepared,
        best=trained.best,
    )
    blended = dataclasses.replace(
        trained, model=blend.model, spec=blend.spec, best=blend.best, blend=blend.metrics
    )
    return blended, start


def _gate(
    model: ModelConfig,
    train: TrainConfig,
    *,
    best: ValidationScores,
    start: ValidationScores,
    manifest: PreparedRun,
    prepared: Location,
    run_date: dt.date,
) -> None:
    """Refuse a run that did not learn, unless ``train.allow_worse`` (then only warn)."""
    rating = model.objective == "rating"
    baseline = global_mean_rmse(prepared, manifest.rating.mean) if rating else None
    refusal = publication_refusal(model.objective, best, start, baseline)
    if refusal is not None and not train.allow_worse:
        raise TrainingRejectedError(
            f"the model trained for {run_date} was not published: {refusal}; the model "
            "published before for this date (if any) stays. Check the data and train.lr, "
            "train.epochs, or set train.allow_worse=true to publish it anyway"
        )
    if refusal is not None:
        log.warning("publishing although %s (train.allow_worse)", refusal)
