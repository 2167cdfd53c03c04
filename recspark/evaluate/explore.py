"""Looking inside a trained model: principal components of the item embeddings, and a picture.

The item factor matrix has one row per item, so its PCA is a small dense SVD on the driver
(numpy, exact and deterministic). :func:`item_pca` centres the rows, keeps the leading components
and reports each one's share of the total variance; a component's sign is fixed so that its
largest projection is positive, so re-runs draw the same picture. :func:`pca_plot` writes the PNG
a person looks at: the share of variance per component, the items on the first two components
with the titles at both ends labelled, and for each of the first components the items at its
high and low ends (the seed article's "what did the model learn" view: on MovieLens one end of the
first component tends to hold acclaimed classics and the other broad crowd-pleasers).

Items with few ratings have rows that training barely moved; pass only the well-rated ones.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from recspark.core.errors import BadInputError
from recspark.core.location import Location
from recspark.core.plots import plt, save_figure
from recspark.core.storage import Layout, Where, staged, write_json


@dataclass(frozen=True)
class ItemPCA:
    """PCA of item embedding rows.

    ``projections[i, c]`` is item ``rows[i]`` on component ``c``; ``variance_share[c]`` its share
    of the total variance of the rows (over every component, so the shares of all components
    sum to one); ``components`` are unit vectors in factor space.
    """

    rows: np.ndarray  # (n,) the item indices that were analysed
    projections: np.ndarray  # (n, k)
    components: np.ndarray  # (k, factors)
    variance_share: np.ndarray  # (min(n, factors),) every component's share, descending

    def ends(self, component: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Item indices at the high and the low end of ``component``, most extreme first."""
        order = np.argsort(-self.projections[:, component], kind="stable")
        high = self.rows[order[:count]]
        low = self.rows[order[::-1][:count]]
        return high, low


def item_pca(factors: np.ndarray, rows: np.ndarray | None = None, components: int = 3) -> ItemPCA:
    """Principal components of the item rows ``factors[rows]``.

    Parameters
    ----------
    factors
        ``items x factors`` item embedding rows.
    rows
        Item indices to analyse (e.g. the items with enough ratings); None for all.
    components
        How many components to project on (capped by the rank of the data).

    Raises
    ------
    ValueError
        With fewer than three items or a matrix of rank below one.
    """
    factors = np.asarray(factors, dtype=np.float64)
    rows = np.arange(len(factors)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) < 3:
        raise BadInputError(
            f"PCA needs at least 3 items, got {len(rows)}: lower score.min_item_ratings"
        )
    data = factors[rows]
    centred = data - data.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    if variance.sum() <= 0:
        raise BadInputError("the item embeddings do not vary: train the model first")
    share = variance / variance.sum()
    keep = min(components, int((singular > singular[0] * 1e-9).sum()))
    basis = vt[:keep]
    projections = centred @ basis.T
    # Fix each component's sign: its largest-magnitude projection is positive.
    signs = np.sign(projections[np.abs(projections).argmax(axis=0), np.arange(keep)])
    signs[signs == 0] = 1.0
    return ItemPCA(rows, projections * signs, basis * signs[:, None], share)


def _label(item_idx: int, labels: dict[int, str], width: int = 34) -> str:
    text = labels.get(int(item_idx), f"item {item_idx}")
    return textwrap.shorten(text, width=width, placeholder="…")


def pca_plot(
    pca: ItemPCA,
    labels: dict[int, str],
    path: Where,
    ends: int = 8,
    title: str = "Item embeddings: principal components",
) -> Location:
    """Write the PCA picture to ``path`` (PNG) and return where it lies.

    Parameters
    ----------
    pca
        :func:`item_pca` output with at least two components.
    labels
        ``{item_idx: title}``; items without one are labelled by index.
    path
        Where to write the PNG.
    ends
        Items listed at each end of each component.
    """
    shown = min(pca.projections.shape[1], 3)
    if shown < 2:
        raise ValueError("the plot needs at least two principal components")
    figure = plt.figure(figsize=(16, 11), dpi=100)
    grid = figure.add_gridspec(2, 3, height_ratios=[1.25, 1.0], hspace=0.28, wspace=0.32)
    _variance_bars(figure.add_subplot(grid[0, 0]), pca)
    _ends_scatter(figure.add_subplot(grid[0, 1:]), pca, labels, min(5, ends))
    for component in range(shown):
        _ends_text(figure.add_subplot(grid[1, component]), pca, component, labels, ends)
    figure.suptitle(title, fontsize=14)
    return save_figure(figure, path, bbox_inches="tight")


def _variance_bars(bars: Axes, pca: ItemPCA) -> None:
    """The share of variance of the first (up to) ten components."""
    count = min(10, len(pca.variance_share))
    positions = np.arange(1, count + 1)
    bars.bar(positions, pca.variance_share[:count] * 100, color="#4c72b0")
    for x, value in zip(positions, pca.variance_share[:count], strict=True):
        bars.text(x, value * 100, f"{value:.0%}", ha="center", va="bottom", fontsize=8)
    bars.set_xticks(positions)
    bars.set_xlabel("principal component")
    bars.set_ylabel("share of variance (%)")
    bars.set_title("Variance explained per component")
    bars.grid(axis="y", alpha=0.3)


def _ends_scatter(scatter: Axes, pca: ItemPCA, labels: dict[int, str], ends: int) -> None:
    """Every item on the first two components, the ``ends`` items at both ends of each labelled."""
    x, y = pca.projections[:, 0], pca.projections[:, 1]
    scatter.scatter(x, y, s=8, color="#bbbbbb", alpha=0.7, linewidths=0)
    colours = {0: "#c44e52", 1: "#4c72b0"}
    marked: set[int] = set()
    for component in (0, 1):
        for end in pca.ends(component, ends):
            group = [int(item) for item in end if int(item) not in marked]
            marked.update(group)
            at = [int(np.flatnonzero(pca.rows == item)[0]) for item in group]
            # Labels of one end are stacked in the order of their points, so close points do
            # not print over each other; a thin line ties each label to its point.
            order = sorted(range(len(group)), key=lambda k: y[at[k]])
            for slot, k in enumerate(order):
                scatter.scatter(x[at[k]], y[at[k]], s=18, color=colours[component])
                scatter.annotate(
                    _label(group[k], labels, 28),
                    (x[at[k]], y[at[k]]),
                    fontsize=7,
                    color=colours[component],
                    xytext=(6, 11 * (slot - (len(order) - 1) / 2)),
                    textcoords="offset points",
                    va="center",
                    arrowprops={"arrowstyle": "-", "color": colours[component], "lw": 0.4},
                )
    scatter.margins(x=0.08, y=0.18)  # room for the stacked labels at the edges
    scatter.axhline(0, color="#888888", lw=0.5)
    scatter.axvline(0, color="#888888", lw=0.5)
    scatter.set_xlabel(f"PC1 ({pca.variance_share[0]:.0%} of variance)")
    scatter.set_ylabel(f"PC2 ({pca.variance_share[1]:.0%} of variance)")
    scatter.set_title(
        f"{len(pca.rows)} items on the first two components\n(red: ends of PC1, blue: ends of PC2)",
        fontsize=11,
    )


def _ends_text(
    panel: Axes, pca: ItemPCA, component: int, labels: dict[int, str], ends: int
) -> None:
    """The titles at the high and low ends of one component, as text."""
    panel.axis("off")
    high, low = pca.ends(component, ends)
    lines = [
        f"PC{component + 1}  ({pca.variance_share[component]:.1%} of variance)",
        "",
        "high end (+):",
    ]
    lines += [f"  {_label(item, labels)}" for item in high]
    lines += ["", "low end (−):"]
    lines += [f"  {_label(item, labels)}" for item in low]
    panel.text(
        0.0,
        1.0,
        "\n".join(lines),
        va="top",
        ha="left",
        family="monospace",
        fontsize=9,
        transform=panel.transAxes,
    )


def pca_summary(
    pca: ItemPCA, labels: dict[int, str], item_ids: np.ndarray, ends: int = 8
) -> dict[str, Any]:
    """A JSON-ready account of the PCA: variance shares and the items at both ends.

    ``item_ids[i]`` is the raw id of item index ``i``.
    """
    summary: dict[str, Any] = {
        "items": len(pca.rows),
        "variance_share": [float(v) for v in pca.variance_share],
    }
    components = []
    for component in range(pca.projections.shape[1]):
        high, low = pca.ends(component, ends)
        components.append(
            {
                "component": component + 1,
                "variance_share": float(pca.variance_share[component]),
                "high": [_entry(item, labels, item_ids) for item in high],
                "low": [_entry(item, labels, item_ids) for item in low],
            }
        )
    summary["components"] = components
    return summary


def _entry(item_idx: int, labels: dict[int, str], item_ids: np.ndarray) -> dict[str, Any]:
    raw = item_ids[int(item_idx)]
    return {
        "item_id": raw.item() if hasattr(raw, "item") else raw,
        "title": labels.get(int(item_idx)),
    }


def write_exploration(
    layout: Layout,
    run_date: object,
    factors: np.ndarray,
    eligible: np.ndarray,
    labels: dict[int, str],
    item_ids: np.ndarray,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Publish ``exploration/D`` (``item_pca.png``, ``item_pca.json``); return (paths, summary)."""
    pca = item_pca(factors, np.flatnonzero(eligible), components=3)
    summary = pca_summary(pca, labels, item_ids)
    final = layout.root / "exploration" / str(run_date)
    with staged(layout, final, f"exploration-{run_date}") as staging:
        pca_plot(pca, labels, staging / "item_pca.png")
        write_json(staging / "item_pca.json", summary)
    return {
        "pca_plot": str(final / "item_pca.png"),
        "pca_summary": str(final / "item_pca.json"),
    }, summary
