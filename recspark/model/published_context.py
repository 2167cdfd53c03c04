"""A published model opened for a later stage: loaded once, its id maps checked once.

``score``, ``evaluate``, ``recommend`` and ``benchmark`` all start the same way: load the model
published for a run date (:func:`~recspark.model.published.load_published_model`), check that the
prepared run it names still holds the id maps it was trained on
(:func:`~recspark.model.published.check_id_maps`, before any Spark task), and take the model its
lists rank by (:meth:`~recspark.model.published.PublishedModel.lists`).
:meth:`PublishedContext.open` does that once, so the stages differ only in what they do next.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from recspark.core.location import Location
from recspark.core.storage import Layout
from recspark.model.published import Lists, PublishedModel, check_id_maps, load_published_model

if TYPE_CHECKING:
    from recspark.model.base import EmbeddingModel


@dataclass(frozen=True)
class PublishedContext:
    """The model published for a run date, with what the later stages read of it."""

    layout: Layout
    #: The model as saved (eval mode): a rating model's rating head, or the ranking model.
    model: EmbeddingModel
    published: PublishedModel
    #: What its published lists rank by (a ranking head's model, or the model itself).
    lists: Lists

    @classmethod
    def open(
        cls,
        layout: Layout,
        run_date: dt.date | str,
        *,
        device: str | torch.device = "cpu",
        check_maps: bool = True,
        advice: str | None = None,
        folder: Location | None = None,
    ) -> PublishedContext:
        """Load the model published for ``run_date`` and check its id maps.

        Parameters
        ----------
        check_maps
            Check the prepared run's id maps against the model's (``score``, ``evaluate``,
            ``recommend``); ``benchmark``, which trained the model on the run itself moments
            before, may skip it.
        advice
            What the error says to do when the id maps differ (see
            :func:`~recspark.model.published.check_id_maps`).
        folder
            Read the model from this folder instead of ``models/RUN_DATE`` (a registered model
            downloaded from MLflow); its prepared run is still the root's.

        Raises
        ------
        MissingInputError
            When no model was published for ``run_date``, or its prepared run is gone.
        BadInputError
            When its files are not the trainer's, or the prepared run's id maps changed since.
        """
        model, published = load_published_model(layout, run_date, device, folder)
        if check_maps:
            check_id_maps(layout, published, advice)
        return cls(layout, model, published, published.lists(model))

    @property
    def prepared(self) -> Location:
        """The prepared run whose id maps the model's rows follow (``meta.index_date``)."""
        return self.layout.prepared(self.published.meta.index_date)

    @property
    def model_version(self) -> str:
        """The published model's version (``metrics.json``), as the tables it writes carry it."""
        return self.published.model_version
