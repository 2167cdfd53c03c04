"""PNG plots a person would rather look at than read (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from recspark.core.location import Location


def save_figure(figure, path, **options) -> Location:
    """Save ``figure`` as PNG to ``path`` (any store) and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **options)
    plt.close(figure)
    target = Location(path)
    target.write_bytes(buffer.getvalue())
    return target


def loss_curve(
    epochs: list[int],
    train_loss: list[float],
    validation_loss: list[float],
    path: str | Path | Location,
    loss_name: str = "MSE",
) -> None:
    """Train and validation loss per epoch."""
    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    axis.plot(epochs, train_loss, marker="o", label=f"train loss ({loss_name})")
    axis.plot(epochs, validation_loss, marker="o", label=f"validation loss ({loss_name})")
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.set_title("Training curve")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    save_figure(figure, path)
