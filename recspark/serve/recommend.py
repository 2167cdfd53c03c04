"""One user's list, on the driver: an existing user's or a new user's folded in from a few ratings.

Ids are raw ids as the input had them; the model's item index maps them to rows. What a person
reads (a table with titles) and what a script reads (the summary's ``recommendations``) come from
the same rows."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.core.config import RankingConfig
from recspark.core.constants import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.core.errors import BadInputError
from recspark.data.titles import read_titles
from recspark.model.base import EmbeddingModel
from recspark.serve.foldin import RankingFoldIn, fold_in, score_user
from recspark.serve.ranking_keys import table
from recspark.serve.topk import top_k

log = logging.getLogger(__name__)

# Ridge weight of a fold-in when the model was trained without an embedding penalty.
FALLBACK_REGULARIZATION = 0.01


def item_ids_by_index(item_index: pd.DataFrame, n_items: int) -> np.ndarray:
    """Raw item id of every model item index, as an array of length ``n_items``."""
    if item_index[ITEM_IDX].max() >= n_items or item_index[ITEM_IDX].min() < 0:
        raise BadInputError(
            f"the item index has indices outside the model's {n_items} items: the model and the "
            "prepared run disagree; re-run train on this prepared run"
        )
    ordered = item_index.sort_values(ITEM_IDX)
    if len(ordered) != n_items or not ordered[ITEM_IDX].is_unique:
        raise BadInputError(
            f"the item index has {len(ordered)} rows for a model of {n_items} items: re-run train "
            "on this prepared run"
        )
    return ordered[ITEM_ID].to_numpy()


def to_raw_id(text: str, kind: T.DataType, what: str) -> Any:
    """A raw id given as text, in the type of the id column (``long`` ids need integer text)."""
    text = str(text).strip()
    if isinstance(kind, T.IntegralType):
        try:
            return int(text)
        except ValueError:
            raise BadInputError(
                f"{what} {text!r} is not an integer, and this model's ids are"
            ) from None
    if isinstance(kind, T.StringType):
        return text
    raise BadInputError(f"{what}: ids of type {kind.simpleString()} are not supported here")


def lookup_items(raw_ids: list, item_ids: np.ndarray) -> np.ndarray:
    """Model indices of raw item ids; every unknown id is named in one error."""
    position = {
        value.item() if hasattr(value, "item") else value: i for i, value in enumerate(item_ids)
    }
    unknown = [raw for raw in raw_ids if raw not in position]
    if unknown:
        raise BadInputError(
            f"item ids {unknown} are not in the model's item index ({len(item_ids)} items): check "
            "the ids (raw ids of the ratings input, e.g. u.data's item column)"
        )
    return np.array([position[raw] for raw in raw_ids], dtype=np.int64)


def lookup_user(user_index: DataFrame, raw_id: Any) -> int:
    """The index of one raw user id (a filter in Spark; one row comes back)."""
    rows = user_index.where(F.col(USER_ID) == F.lit(raw_id)).select(USER_IDX).limit(2).collect()
    if not rows:
        raise BadInputError(
            f"user {raw_id!r} is not in the model's user index: check recommend.user, or give the "
            "user's ratings as recommend.ratings to fold them in"
        )
    return int(rows[0][USER_IDX])


def fold_in_regularization(setting: float | None, model_metrics: Mapping[str, Any]) -> float:
    """``recommend.regularization``, else the ``train.weight_decay`` the model was trained with."""
    if setting is not None:
        return float(setting)
    trained = float((model_metrics.get("train") or {}).get("weight_decay") or 0.0)
    return trained if trained > 0 else FALLBACK_REGULARIZATION


def ranking_settings(
    ranking: RankingConfig,
    model_metrics: Mapping[str, Any],
    objective: str,
    train: DataFrame,
    n_items: int,
    *,
    every_row_positive: bool = False,
) -> RankingFoldIn | None:
    """How the model was ranked in training (None for a rating model).

    The settings recorded with the model win; a model that did not record them is assumed to
    have been trained with ``ranking`` (this config's ``ranking.*``). ``every_row_positive``: a
    rating model's ranking head, which took every train row as a positive, unweighted.
    """
    if objective != "ranking":
        return None
    recorded = model_metrics.get("ranking") or ranking.model_dump()
    if every_row_positive:
        recorded = {**recorded, "positive_threshold": 0.0, "confidence": "none"}
    settings = RankingFoldIn(
        loss=recorded.get("loss", "softmax"),
        positive_threshold=float(recorded.get("positive_threshold", 0.0)),
        sampling_alpha=float(recorded.get("sampling_alpha", 0.0)),
        confidence=recorded.get("confidence", "none"),
        confidence_alpha=float(recorded.get("confidence_alpha", 1.0)),
    )
    if settings.loss == "bpr" and settings.sampling_alpha > 0:
        from recspark.train.objectives.sampling import item_popularity

        counts = item_popularity(train, n_items, settings.positive_threshold)
        settings = dataclasses.replace(settings, item_counts=counts)
    return settings


def best_items(
    scores: np.ndarray, excluded: np.ndarray, top_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N (indices, scores) of one row of scores, ``excluded`` items masked, ties to the lower
    index."""
    masked = torch.as_tensor(np.asarray(scores, dtype=np.float32)).clone()
    masked[torch.as_tensor(excluded)] = -torch.inf
    index, value, valid = top_k(masked[None, :], top_n)
    keep = valid[0].numpy()
    return index[0].numpy()[keep], value[0].numpy()[keep]


class ListedItem(TypedDict):
    """One row of the summary's ``recommendations``: the raw item id, its score (rounded to six
    places) and its title (None when unknown)."""

    item_id: Any
    score: float
    title: str | None


def listing(
    index: np.ndarray, scores: np.ndarray, item_ids: np.ndarray, labels: dict[int, str]
) -> list[ListedItem]:
    """The summary's ``recommendations``: ``{item_id, score, title}``, in the given order."""
    out: list[ListedItem] = []
    for item, score in zip(index, scores, strict=True):
        raw = item_ids[int(item)]
        out.append(
            {
                "item_id": raw.item() if hasattr(raw, "item") else raw,
                "score": round(float(score), 6),
                "title": labels.get(int(item)),
            }
        )
    return out


def format_table(rows: list[ListedItem], heading: str, score_name: str = "score") -> str:
    """A fixed-width table of :func:`listing` rows for people (stderr)."""
    lines = [heading, f"{'rank':>4}  {'item_id':>10}  {score_name:>10}  title"]
    for rank, row in enumerate(rows, start=1):
        lines.append(
            f"{rank:>4}  {row['item_id']!s:>10}  {row['score']:>10.4f}  {row['title'] or ''}"
        )
    if not rows:
        lines.append("  (no eligible items)")
    return "\n".join(lines)


def title_labels(item_ids: np.ndarray, titles_path: str | None) -> dict[int, str]:
    """The title of each model item index found in ``titles_path`` (u.item, movies.dat or
    movies.csv); empty without a path, with a warning when no id matches."""
    if not titles_path:
        return {}
    titles = read_titles(titles_path)
    by_id = dict(zip(titles[ITEM_ID].tolist(), titles["title"].tolist(), strict=True))
    labels = {}
    for index, raw in enumerate(item_ids):
        key = raw.item() if hasattr(raw, "item") else raw
        if key in by_id:
            labels[index] = by_id[key]
    if not labels:
        log.warning("no item id of the model is in %s: titles left empty", titles_path)
    return labels


@dataclass
class UserList:
    """One user's top-N: item indices and scores, best first, and facts for the summary."""

    index: np.ndarray
    scores: np.ndarray
    heading: str
    facts: dict[str, Any] = field(default_factory=dict)


def new_user_list(
    model: EmbeddingModel,
    rated_idx: np.ndarray,
    ratings: np.ndarray,
    eligible: np.ndarray,
    *,
    top_n: int,
    regularization: float,
    ranking: RankingFoldIn | None,
) -> UserList:
    """The list of a user who is not in the model, folded in from ``ratings`` of ``rated_idx``:
    eligible items only, the rated ones left out."""
    user = fold_in(model, rated_idx, ratings, regularization, ranking)
    excluded = ~eligible
    excluded[rated_idx] = True
    index, scores = best_items(score_user(model, user.vector, user.bias), excluded, top_n)
    facts = {
        "mode": "new_user",
        "rated_items": len(rated_idx),
        "regularization": regularization,
        "fold_in_rmse": user.rmse,
        "fold_in_rank_share": user.rank_share,
        "fold_in_iterations": user.iterations,
        "fold_in_bias": user.bias,
        "fold_in_norm": float(np.linalg.norm(user.vector)),
    }
    heading = f"top {top_n} for a new user folded in from {len(rated_idx)} ratings"
    return UserList(index, scores, heading, facts)


def known_user_list(
    model: EmbeddingModel,
    user_idx: int,
    seen: np.ndarray,
    eligible: np.ndarray,
    *,
    top_n: int,
    raw_user: Any,
) -> UserList:
    """The list of user ``user_idx`` of the model: eligible items it has not rated (``seen``)."""
    vector = table(model, "user_factors").weight[user_idx].detach().cpu().numpy()
    bias = (
        float(table(model, "user_bias").weight[user_idx, 0].detach())
        if hasattr(model, "user_bias")
        else 0.0
    )
    excluded = ~eligible
    excluded[np.asarray(seen, dtype=np.int64)] = True
    index, scores = best_items(score_user(model, vector, bias), excluded, top_n)
    facts = {"mode": "user", "user_idx": user_idx, "rated_items": len(seen)}
    heading = f"top {top_n} for user {raw_user} ({len(seen)} items rated)"
    return UserList(index, scores, heading, facts)
