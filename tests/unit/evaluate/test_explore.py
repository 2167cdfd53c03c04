"""PCA of item embeddings against a planted answer, and the PNG it draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from recspark.core.errors import BadInputError
from recspark.evaluate.explore import item_pca, pca_plot, pca_summary


def _planted(items: int = 200, seed: int = 0):
    """Rows = a * u + b * v + small noise, with var(a) = 9, var(b) = 1: PC1 is u, PC2 is v."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    u, v = basis[:, 0], basis[:, 1]
    a = rng.normal(0, 3.0, size=items)
    b = rng.normal(0, 1.0, size=items)
    rows = 0.5 + a[:, None] * u + b[:, None] * v + rng.normal(0, 0.05, size=(items, 6))
    return rows.astype(np.float32), a, b, u, v


def test_pca_recovers_the_planted_directions_and_their_shares():
    rows, a, b, u, v = _planted()
    pca = item_pca(rows, components=3)
    assert abs(pca.components[0] @ u) == pytest.approx(1.0, abs=1e-3)
    assert abs(pca.components[1] @ v) == pytest.approx(1.0, abs=1e-2)
    expected = np.array([a.var(), b.var()]) / (a.var() + b.var() + 6 * 0.05**2)
    np.testing.assert_allclose(pca.variance_share[:2], expected, atol=0.01)
    assert pca.variance_share.sum() == pytest.approx(1.0)
    # The ends of PC1 are the items with the most extreme planted a (up to the sign convention).
    high, low = pca.ends(0, 5)
    sign = np.sign(pca.components[0] @ u)
    extreme = np.argsort(-sign * a)
    assert set(high) == set(extreme[:5]) and set(low) == set(extreme[::-1][:5])
    # Sign convention: the largest-magnitude projection of each component is positive.
    for component in range(3):
        column = pca.projections[:, component]
        assert column[np.abs(column).argmax()] > 0


def test_pca_on_a_subset_reports_item_indices():
    rows, *_ = _planted()
    subset = np.arange(10, 200, 2)
    pca = item_pca(rows, subset, components=2)
    high, low = pca.ends(0, 3)
    assert set(high) | set(low) <= set(subset)
    with pytest.raises(BadInputError, match="at least 3 items"):
        item_pca(rows, np.array([1, 2]))


def test_pca_plot_writes_a_png_and_the_summary_names_both_ends(tmp_path):
    rows, *_ = _planted(items=60)
    pca = item_pca(rows, components=3)
    labels = {i: f"Film number {i}" for i in range(60)}
    path = pca_plot(pca, labels, tmp_path / "plots" / "item_pca.png", ends=6)
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 800 and height > 600
    ids = np.arange(1000, 1060)
    summary = pca_summary(pca, labels, ids, ends=4)
    json.dumps(summary)  # JSON-ready
    first = summary["components"][0]
    high, low = pca.ends(0, 4)
    assert [e["item_id"] for e in first["high"]] == (ids[high]).tolist()
    assert [e["title"] for e in first["low"]] == [labels[i] for i in low]
    assert summary["items"] == 60 and len(summary["components"]) == 3
