"""The rating objective: fit the predicted ratings by mean squared error.

``model.objective: rating`` (the default) trains on every prepared row. The loss of a batch is the
MSE of the model's predictions; for an :class:`~recspark.model.ensemble.Ensemble` it is the sum of
its members' own MSEs, so that each member gets exactly the gradient it would get trained alone
and the members learn independently (the reported loss is their mean MSE). The loop adds the L2
penalty on the embedding rows of the batch's pairs. Validation reports the MSE (the loss early
stopping minimises), its root and the mean absolute error. Predictions are cast to float32 before
any loss or figure, so a forward pass under bfloat16 autocast (``train.precision: bf16``) still
reports float32 figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from recspark.core.torch_utils import unwrap
from recspark.model.ensemble import Ensemble
from recspark.train.objectives.base import (
    BatchLoss,
    Objective,
    RunContext,
    ValidationFigures,
    batch_tensors,
)


class RatingObjective(Objective):
    """MSE on ratings; see the module docstring."""

    name: ClassVar[str] = "rating"
    loss_name: ClassVar[str] = "MSE"

    def start_epoch(self, model: nn.Module, device: torch.device, context: RunContext) -> None:
        """Nothing to prepare: the MSE of a batch depends on the batch alone."""

    def batch_loss(self, model: nn.Module, batch: dict, device: torch.device) -> BatchLoss:
        """The batch's MSE (an ensemble: the sum of its members' MSEs, reported as their mean)."""
        users, items, ratings = batch_tensors(batch, device)
        if isinstance(unwrap(model), Ensemble):
            predicted = model(users, items, members=True).float()
            each = (predicted - ratings).pow(2).mean(dim=1)
            loss, mse = each.sum(), each.mean()
        else:
            mse = loss = nn.functional.mse_loss(model(users, items).float(), ratings)
        rows = len(ratings)
        return BatchLoss(loss, users, items, mse.detach() * rows, rows, rows)

    @torch.no_grad()
    def validation(
        self, model: nn.Module, batches: Iterable[dict], device: torch.device, context: RunContext
    ) -> ValidationFigures:
        """MSE (the loss) and MAE of the predicted ratings over ``batches``."""
        model.eval()
        squared = torch.zeros((), dtype=torch.float64, device=device)
        absolute = torch.zeros((), dtype=torch.float64, device=device)
        rows = 0
        for batch in batches:
            users, items, ratings = batch_tensors(batch, device)
            error = model(users, items).float() - ratings
            squared += (error.double() ** 2).sum()
            absolute += error.double().abs().sum()
            rows += len(ratings)
        if rows == 0:
            return ValidationFigures(rows=0, loss=math.nan, mse=math.nan, mae=math.nan)
        mse = float(squared) / rows
        return ValidationFigures(rows=rows, loss=mse, mse=mse, mae=float(absolute) / rows)
