"""An exact top-k per row of a score block, ties to the lower column, in torch alone.

The scoring kernel (:mod:`recspark.serve.kernel`), evaluation's lists and the driver-side lists of
``recommend`` all rank with :func:`top_k`, so a user's list is the same wherever it is computed.
:func:`best_columns` is its first pass: ``torch.topk`` over a few candidate chunks instead of the
whole row. Nothing here imports pyspark.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: ``finish(values, rows) -> scores``: turns ranking keys taken from the given rows into scores.
Finish = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Columns per chunk of :func:`best_columns`' first pass.
CHUNK = 64


def best_columns(scores: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, count, dim=1)``'s values, and columns holding them, in two cheap passes.

    A full ``topk`` over every column of a wide block costs about as much as the matrix product
    that made it. Here the first :data:`CHUNK`-column chunks of each row are reduced to their
    maxima (one vectorised pass), the ``count`` chunks with the highest maxima are gathered with
    the leftover columns past the last whole chunk, and ``topk`` runs over those
    ``count * CHUNK`` candidates only. Exact: a column outside the chosen chunks is at most the
    lowest chosen maximum, so at least ``count`` candidates are at least as high; the values are
    ``topk``'s, and among equal values at the cut the column may differ, which :func:`top_k`
    resolves by index.
    """
    rows, columns = scores.shape
    whole = columns - columns % CHUNK
    chunks = whole // CHUNK
    if chunks <= count:
        return scores.topk(count, dim=1)
    maxima = scores[:, :whole].view(rows, chunks, CHUNK).amax(dim=2)
    chosen = maxima.topk(count, dim=1).indices
    offsets = torch.arange(CHUNK, device=scores.device)
    candidates = (chosen[:, :, None] * CHUNK + offsets).reshape(rows, -1)
    if whole < columns:
        rest = torch.arange(whole, columns, device=scores.device).expand(rows, -1)
        candidates = torch.cat([candidates, rest], dim=1)
    values, position = scores.gather(1, candidates).topk(count, dim=1)
    return values, candidates.gather(1, position)


def top_k(
    scores: torch.Tensor, k: int, finish: Finish | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best ``k`` columns of each row, ties broken by the lower column index.

    ``-inf`` marks excluded entries. One pass over the block (:func:`best_columns`) finds the
    candidates; only rows where equal scores straddle the cut (rare for continuous scores, and
    rows with fewer than ``k + 1`` eligible columns) are re-ranked exactly with a stable sort of
    the whole row.

    Parameters
    ----------
    scores
        ``rows x columns`` float tensor: the scores, or ranking keys that ``finish`` turns into
        the scores.
    k
        How many columns to keep per row; more than ``columns`` keeps them all.
    finish
        ``finish(values, rows) -> scores`` for values taken from the given rows of ``scores``: a
        transform that never decreases within a row and keeps ``-inf``, so it can be applied to
        the ``k + 1`` candidates only instead of to the whole block. Ties and order are decided on
        the finished scores, so the result is the same as ranking the finished block.

    Returns
    -------
    (indices, values, valid)
        Each ``rows x min(k, columns)``, best first. ``valid`` is False where a row had fewer than
        ``k`` eligible (finite) columns; those slots hold ``-inf``.

    Raises
    ------
    FloatingPointError
        When a row's best scores include NaN (the model produced NaN).
    """
    rows, columns = scores.shape
    k = min(k, columns)
    if k == 0 or rows == 0:
        empty = torch.zeros((rows, k), dtype=torch.long, device=scores.device)
        return empty, scores.new_zeros((rows, k)), empty.bool()
    every_row = torch.arange(rows, device=scores.device)
    values, index = best_columns(scores, k + 1 if k < columns else k)
    if finish is not None:
        values = finish(values, every_row)
    if k < columns:
        # If the (k+1)-th best equals the k-th, an equal score may have been cut arbitrarily.
        straddling = values[:, k - 1] == values[:, k]
        values, index = values[:, :k].contiguous(), index[:, :k].contiguous()
    else:
        straddling = torch.ones(rows, dtype=torch.bool, device=scores.device)
    if torch.isnan(values).any():
        raise FloatingPointError("the model produced NaN scores: retrain it (check train.lr)")
    redo = straddling.nonzero().squeeze(1)
    if len(redo):
        whole = scores[redo] if finish is None else finish(scores[redo], redo)
        exact_values, exact_index = torch.sort(whole, dim=1, descending=True, stable=True)
        values[redo], index[redo] = exact_values[:, :k], exact_index[:, :k]
    # Within the chosen k: descending score, then ascending item index (a stable sort of the
    # index-sorted candidates).
    index, order = index.sort(dim=1)
    values = values.gather(1, order)
    values, order = values.sort(dim=1, descending=True, stable=True)
    index = index.gather(1, order)
    return index, values, torch.isfinite(values)
