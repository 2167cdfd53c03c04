"""Warm start (``train.warm_start``): a new model starts from the newest published model before
the run date, once its id maps are checked. Id maps are stable (a known id keeps its index), so
row ``i`` of an old table is row ``i`` of the new one (:func:`recspark.model.saving.carry_weights`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import NamedTuple

from recspark.core.storage import Layout, latest_date
from recspark.model.autorec import Blend
from recspark.model.base import EmbeddingModel
from recspark.model.published import check_id_maps, load_published_model
from recspark.model.saving import carry_weights
from recspark.model.spec import BlendSpec, ModelSpec

log = logging.getLogger(__name__)


class Carried(NamedTuple):
    """What a warm start carried: the run date of the model it started from (None: none) and
    the user and item rows copied from it."""

    source: str | None = None
    users: int = 0
    items: int = 0


def warm_start(
    layout: Layout, run_date: dt.date | str, model: EmbeddingModel, spec: ModelSpec
) -> Carried:
    """Initialise ``model`` from the newest published model before ``run_date``, if any."""
    source = latest_date(layout.root / "models", before=run_date)
    if source is None:
        log.info("warm start: no published model before %s; starting fresh", run_date)
        return Carried()
    old_model, old = load_published_model(layout, source)
    old_spec = old.spec
    if isinstance(old_spec, BlendSpec) and isinstance(old_model, Blend):
        # The main model carries over; the blend's partner is fitted afresh every run.
        old_model, old_spec = old_model.main, old_spec.parts[0]
    if layout.prepared(old.meta.index_date).exists():
        check_id_maps(
            layout,
            old,
            f"re-run `recspark train` for {source}, or set train.warm_start=false to start fresh",
        )
    else:
        log.warning(
            "warm start: the prepared run %s of the model of %s is gone; its id maps are not "
            "checked",
            old.meta.index_date,
            source,
        )
    if old_spec.kind != spec.kind:
        log.warning(
            "warm start: the model of %s is a %r, this run trains a %r; starting fresh",
            source,
            old_spec.kind,
            spec.kind,
        )
        return Carried()
    carried = carry_weights(model, old_model.state_dict(), old_spec.as_dict())
    log.info(
        "warm start from the model of %s: %d of %d users and %d of %d items carried",
        source,
        carried["users"],
        spec.n_users,
        carried["items"],
        spec.n_items,
    )
    return Carried(str(source), carried["users"], carried["items"])
