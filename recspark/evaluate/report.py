"""The evaluation report's plots: PNG files a person would rather look at than read.

- :func:`training_curves`: train and validation loss (and validation RMSE) per epoch, from the
  ``history`` the trainer writes to the model's ``metrics.json``.
- :func:`metric_table`: the model and its baselines side by side, one panel of rating metrics
  (lower is better), one of ranking metrics (higher is better) and one of the figures beyond
  accuracy (coverage, rare items, popularity bias, diversity), with the figures printed and the
  best of each metric (:func:`best_per_metric`) starred.
- :func:`format_metric_table`: the same figures as a plain-text table, one line per metric, the
  best starred; evaluate prints it and keeps it in the report folder.
- :func:`rating_distribution`: histograms of the predicted and the true validation ratings.
- :func:`histogram`: the counts behind the last plot, computed in Spark (only bins come back).

matplotlib runs headless (the Agg backend).
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recspark.core.plots import save_figure
from recspark.core.storage import Where

RATING_PANEL = ("rmse", "mae", "cold_start_rmse")
RANKING_PANEL = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "hit_rate_at_k")
BEYOND_PANEL = ("coverage", "rare_item_share", "popularity_bias", "intra_list_diversity")

#: Metrics a best is marked for, and whether higher is better. The other figures (novelty, rare
#: items, popularity) describe the lists rather than rank them, so none is called best.
BEST_DIRECTION = {
    "rmse": False,
    "mae": False,
    "cold_start_rmse": False,
    "cold_start_mae": False,
    "precision_at_k": True,
    "recall_at_k": True,
    "ndcg_at_k": True,
    "map_at_k": True,
    "hit_rate_at_k": True,
    "coverage": True,
    "intra_list_diversity": True,
}
#: Rows of the printed table, in order.
TABLE_ROWS = (
    *RATING_PANEL,
    "cold_start_mae",
    *RANKING_PANEL,
    "coverage",
    "novelty",
    "rare_item_share",
    "heldout_rare_item_share",
    "log_popularity",
    "heldout_log_popularity",
    "popularity_bias",
    "intra_list_diversity",
)


def training_curves(history: list[dict[str, Any]], path: Where, objective: str = "rating") -> bool:
    """Loss per epoch from the trainer's history, and validation RMSE (rating objective) or AUC
    (ranking: 1 - the mean fraction of items scored above a held-out positive); False (no file)
    when the history is empty."""
    if not history:
        return False
    epochs = [record["epoch"] for record in history]
    ranking = objective == "ranking"
    loss_name = "softmax/BPR" if ranking else "MSE"
    figure, (loss_axis, rmse_axis) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    loss_axis.plot(
        epochs, [r["train_loss"] for r in history], marker="o", label=f"train loss ({loss_name})"
    )
    loss_axis.plot(
        epochs,
        [r["validation_loss"] for r in history],
        marker="o",
        label=f"validation loss ({loss_name})",
    )
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("Training curve")
    loss_axis.legend()
    label = "validation AUC" if ranking else "validation RMSE"
    values = [_figure(record, ranking) for record in history]
    if all(value is not None for value in values):
        rmse_axis.plot(epochs, values, marker="o", color="tab:green")
    rmse_axis.set_xlabel("epoch")
    rmse_axis.set_ylabel(label)
    rmse_axis.set_title(label[0].upper() + label[1:])
    for axis in (loss_axis, rmse_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)
    return True


def _figure(record: dict[str, Any], ranking: bool) -> float | None:
    """An epoch's AUC (ranking) or RMSE (rating) from ``metrics.json``'s history.

    Histories written before the figures had their own names kept a ranking model's one minus
    AUC under ``validation_mae``.
    """
    if not ranking:
        return record.get("validation_rmse")
    if record.get("validation_auc") is not None:
        return record["validation_auc"]
    legacy = record.get("validation_mae")
    return None if legacy is None else 1.0 - legacy


def best_per_metric(rows: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """For each metric of :data:`BEST_DIRECTION` that any contender has, the contender(s) with the
    best figure (several on a tie); ``rows`` is name -> metrics."""
    best: dict[str, list[str]] = {}
    for metric, higher in BEST_DIRECTION.items():
        figures = {
            name: value
            for name, metrics in rows.items()
            if isinstance(value := metrics.get(metric), int | float) and math.isfinite(value)
        }
        if figures:
            top = (max if higher else min)(figures.values())
            best[metric] = [name for name, value in figures.items() if math.isclose(value, top)]
    return best


def format_metric_table(
    rows: dict[str, dict[str, Any]],
    best: dict[str, list[str]],
    metrics: tuple[str, ...] = TABLE_ROWS,
) -> str:
    """A plain-text table: one line per metric any contender has, one column per contender, the
    best of each metric (``best``, from :func:`best_per_metric`) marked ``*``."""
    names = list(rows)
    shown = [m for m in metrics if any(rows[n].get(m) is not None for n in names)]
    lines = [["metric", *names]]
    for metric in shown:
        cells = [metric]
        for name in names:
            value = rows[name].get(metric)
            mark = "*" if name in best.get(metric, ()) else ""
            cells.append("n/a" if value is None else f"{value:.4f}{mark}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    render = [
        " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    ]
    render.insert(1, "-+-".join("-" * w for w in widths))
    note = "* best: lowest error, highest ranking metric, coverage and diversity"
    return "\n".join([*render, note])


def _bars(
    axis,
    names: list[str],
    rows: dict[str, dict[str, Any]],
    metrics: tuple[str, ...],
    best: dict[str, list[str]] | None = None,
) -> None:
    shown = [m for m in metrics if any(rows[n].get(m) is not None for n in names)]
    width = 0.8 / max(1, len(names))
    for offset, name in enumerate(names):
        values = [rows[name].get(m) for m in shown]
        positions = [i + offset * width for i in range(len(shown))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = axis.bar(positions, heights, width, label=name)
        for bar, value, metric in zip(bars, values, shown, strict=True):
            starred = best is not None and name in best.get(metric, ())
            label = "n/a" if value is None else f"{value:.3f}" + (" *" if starred else "")
            y = max(bar.get_height(), 0.0)
            axis.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, y),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                fontweight="bold" if starred else "normal",
            )
    axis.margins(y=0.15)  # room for the figures printed above the bars
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(shown))])
    axis.set_xticklabels(shown, rotation=20, fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)


def metric_table(
    rows: dict[str, dict[str, Any]],
    k: int,
    path: Where,
    best: dict[str, list[str]] | None = None,
) -> None:
    """Grouped bars of every contender's rating, ranking and beyond-accuracy figures (``rows``:
    name -> metrics); the best of each metric (``best``) is starred and bold."""
    names = list(rows)
    figure, (rating_axis, ranking_axis, beyond_axis) = plt.subplots(
        1, 3, figsize=(17, 4.8), dpi=110
    )
    _bars(rating_axis, names, rows, RATING_PANEL, best)
    rating_axis.set_title("Rating error (lower is better)")
    _bars(ranking_axis, names, rows, RANKING_PANEL, best)
    ranking_axis.set_title(f"Ranking at k={k} (higher is better)")
    _bars(beyond_axis, names, rows, BEYOND_PANEL, best)
    beyond_axis.axhline(0.0, color="grey", linewidth=0.8)
    beyond_axis.set_title(f"Beyond accuracy, lists of {k} (* best)")
    figure.tight_layout()
    save_figure(figure, path)


def histogram(frame: DataFrame, column: str, low: float, high: float, bins: int) -> list[int]:
    """Counts of ``column`` in ``bins`` equal bins over ``[low, high]`` (outside: the end bins)."""
    width = (high - low) / bins
    index = F.least(F.greatest(F.floor((F.col(column) - low) / width), F.lit(0)), F.lit(bins - 1))
    counts: dict[int, int] = dict(
        frame.where(F.col(column).isNotNull() & ~F.isnan(column))
        .groupBy(index.cast("int").alias("bin"))
        .count()
        .collect()  # at most ``bins`` rows
    )
    return [int(counts.get(b, 0)) for b in range(bins)]


def rating_distribution(
    predicted: list[int], truth: list[int], low: float, high: float, path: Where
) -> None:
    """Histograms of predicted and true ratings over the same bins."""
    bins = len(predicted)
    width = (high - low) / bins
    edges = [low + i * width for i in range(bins)]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    total_predicted, total_truth = max(1, sum(predicted)), max(1, sum(truth))
    axis.bar(edges, [c / total_truth for c in truth], width, align="edge", alpha=0.5, label="truth")
    axis.bar(
        edges,
        [c / total_predicted for c in predicted],
        width,
        align="edge",
        alpha=0.5,
        label="prediction",
    )
    axis.set_xlabel("rating")
    axis.set_ylabel("share of validation rows")
    axis.set_title("Predicted vs true ratings (validation)")
    axis.set_xlim(low, high if math.isfinite(high) else None)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    save_figure(figure, path)
