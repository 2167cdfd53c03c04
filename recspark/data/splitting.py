"""Train/validation/test splits that depend only on the data and a seed.

Spark's ``rand(seed)`` depends on how rows are partitioned, so a re-run on another cluster could
move rows between splits. Here each row's draw is a hash of (user, item, seed) instead: the same
input and seed give the same split anywhere. Callers hash the raw ids, so the split of a rating
does not change when the id maps grow.

Methods (``split.method``): ``random`` sends each rating to validation with probability
``validation_fraction``; ``user_stratified`` sends ``round(n * fraction)`` of each user's ``n``
ratings, chosen by the draw; ``chronological`` sends each user's latest ``round(n * fraction)``
ratings by timestamp. The per-user methods always leave a user at least one rating in train.
``given`` is not a split of one table: ``prepare`` reads ``input.validation_path`` and
``input.test_path`` instead (and carves validation, user_stratified, from the input when only the
test table is given).

With a ``test_fraction`` (``split.test_fraction``) the same draw or order also holds out a test
split, disjoint from validation: ``random`` sends draws below ``test_fraction`` to test and the
next ``validation_fraction`` to validation; the per-user methods take each user's first
``round(n * test_fraction)`` rows of the order to test and the next ``round(n *
validation_fraction)`` to validation (chronological: the latest to test, the ones before them to
validation). At ``test_fraction`` 0 the validation rows are exactly those without a test split.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from recspark.core.constants import ITEM_IDX, TIMESTAMP, USER_IDX
from recspark.data.indexing import fits_broadcast

METHODS = ("random", "user_stratified", "chronological")
VALIDATION_FLAG = "_validation"
TEST_FLAG = "_test"
COLD_START_FLAG = "_cold_start"
_SCALE = 1 << 30


def row_draw(seed: int, user_col: str = USER_IDX, item_col: str = ITEM_IDX) -> Column:
    """A uniform draw in [0, 1) fixed by the row's (user, item) and ``seed``."""
    hashed = F.xxhash64(F.col(user_col), F.col(item_col), F.lit(seed))
    return F.pmod(hashed, F.lit(_SCALE)) / F.lit(float(_SCALE))


def flag_validation(
    ratings: DataFrame,
    method: str,
    validation_fraction: float,
    seed: int,
    *,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    timestamp_col: str = TIMESTAMP,
    flag_col: str = VALIDATION_FLAG,
) -> DataFrame:
    """Add a boolean ``flag_col``: True for the rows that go to validation.

    :func:`flag_holdouts` with no test split.

    Raises
    ------
    ValueError
        For an unknown method, a fraction outside (0, 1), or a missing column.
    """
    flagged = flag_holdouts(
        ratings,
        method,
        validation_fraction,
        seed,
        user_col=user_col,
        item_col=item_col,
        timestamp_col=timestamp_col,
        flag_col=flag_col,
    )
    return flagged.drop(TEST_FLAG)


def flag_holdouts(
    ratings: DataFrame,
    method: str,
    validation_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    *,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    timestamp_col: str = TIMESTAMP,
    flag_col: str = VALIDATION_FLAG,
    test_col: str = TEST_FLAG,
) -> DataFrame:
    """Add booleans ``flag_col`` and ``test_col``: True for the rows that go to validation and to
    test (never both).

    Parameters
    ----------
    ratings
        One row per (user, item); ``user_col`` and ``item_col`` are hashed for the draw.
    method
        ``random``, ``user_stratified`` or ``chronological`` (see the module docstring).
    validation_fraction
        In (0, 1).
    seed
        Same seed and rows, same split.
    test_fraction
        In [0, 1), with ``validation_fraction + test_fraction`` below 1; 0: no test rows.

    Raises
    ------
    ValueError
        For an unknown method, fractions out of range, or a missing column.
    """
    needed = [user_col, item_col] + ([timestamp_col] if method == "chronological" else [])
    _check_holdouts(ratings, method, validation_fraction, test_fraction, needed)
    draw = row_draw(seed, user_col, item_col)
    if method == "random":
        return ratings.withColumn(test_col, draw < test_fraction).withColumn(
            flag_col, (draw >= test_fraction) & (draw < test_fraction + validation_fraction)
        )
    if method == "user_stratified":
        order = [draw, F.col(item_col)]
    else:
        order = [F.col(timestamp_col).desc(), draw, F.col(item_col)]
    per_user = Window.partitionBy(user_col)
    count = F.count(F.lit(1)).over(per_user)
    # Each user keeps at least one rating in train: test is held out first, validation from
    # what is left.
    held_test = F.least(F.round(count * test_fraction), count - 1)
    held_out = held_test + F.least(F.round(count * validation_fraction), count - 1 - held_test)
    position = F.row_number().over(per_user.orderBy(*order))
    return ratings.withColumn(test_col, position <= held_test).withColumn(
        flag_col, (position > held_test) & (position <= held_out)
    )


def _check_holdouts(
    ratings: DataFrame,
    method: str,
    validation_fraction: float,
    test_fraction: float,
    needed: list[str],
) -> None:
    """Raise a ``ValueError`` for an unknown method, fractions out of range or missing columns."""
    if method not in METHODS:
        raise ValueError(
            f"unknown split method {method!r}: use one of {list(METHODS)}; "
            "'given' reads input.validation_path"
        )
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if not 0.0 <= test_fraction < 1.0 - validation_fraction:
        raise ValueError(
            f"test_fraction must be in [0, 1 - validation_fraction), got {test_fraction}"
        )
    missing = [c for c in needed if c not in ratings.columns]
    if missing:
        raise ValueError(f"split needs column(s) {missing}; the table has {ratings.columns}")


def split_ratings(
    ratings: DataFrame,
    method: str,
    validation_fraction: float,
    seed: int,
    *,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    timestamp_col: str = TIMESTAMP,
) -> tuple[DataFrame, DataFrame]:
    """Split ratings into (train, validation) with :func:`flag_validation`.

    Returns
    -------
    tuple of DataFrame
        Train and validation, each with the columns of ``ratings``.
    """
    flagged = flag_validation(
        ratings,
        method,
        validation_fraction,
        seed,
        user_col=user_col,
        item_col=item_col,
        timestamp_col=timestamp_col,
    )
    return (
        flagged.where(~F.col(VALIDATION_FLAG)).drop(VALIDATION_FLAG),
        flagged.where(F.col(VALIDATION_FLAG)).drop(VALIDATION_FLAG),
    )


def flag_cold_start(
    flagged: DataFrame,
    user_col: str = USER_IDX,
    item_col: str = ITEM_IDX,
    flag_col: str = VALIDATION_FLAG,
    cold_col: str = COLD_START_FLAG,
    test_col: str = TEST_FLAG,
) -> DataFrame:
    """Add a boolean ``cold_col``: True for held-out rows whose user or item is not in train.

    ``flagged`` is :func:`flag_validation`'s or :func:`flag_holdouts`' output: train rows have
    ``flag_col`` (and ``test_col``, when the table has it) False; validation and test rows are
    both held out. Doing this on the flagged table lets a caller persist it once and write train,
    validation, test and the cold-start slice as filters of it.
    """
    held_out = F.col(flag_col)
    if test_col in flagged.columns:
        held_out = held_out | F.col(test_col)
    train = flagged.where(~held_out)
    # Spark cannot size the distinct ids before it computes them, so it would shuffle every row
    # by id to join a few thousand ids back; one approximate count (a single pass, no shuffle)
    # tells whether they fit its broadcast limit.
    counted = train.agg(
        F.approx_count_distinct(user_col), F.approx_count_distinct(item_col)
    ).first()
    assert counted is not None  # a global aggregate has one row
    users = _known(train, user_col, "_known_user", counted[0])
    items = _known(train, item_col, "_known_item", counted[1])
    marked = flagged.join(users, user_col, "left").join(items, item_col, "left")
    unknown = F.col("_known_user").isNull() | F.col("_known_item").isNull()
    return marked.select(*flagged.columns, (held_out & unknown).alias(cold_col))


def _known(train: DataFrame, id_col: str, known_col: str, about: int) -> DataFrame:
    """``(id_col, known_col)``: the distinct ids of ``train``, broadcast when ``about`` (their
    approximate count) fits Spark's broadcast limit."""
    ids = train.select(id_col).distinct().withColumn(known_col, F.lit(True))
    # approx_count_distinct errs by a few percent: allow for it.
    if fits_broadcast(train.sparkSession, int(about * 1.1), train.schema[id_col].dataType):
        ids = F.broadcast(ids)
    return ids


def set_apart_cold_start(
    train: DataFrame, validation: DataFrame, user_col: str = USER_IDX, item_col: str = ITEM_IDX
) -> tuple[DataFrame, DataFrame]:
    """Separate validation rows whose user or item never appears in train.

    Returns
    -------
    tuple of DataFrame
        (validation rows whose user and item both appear in train, the rest: the cold-start
        slice), both with the columns of ``validation``.
    """
    users = train.select(user_col).distinct().withColumn("_known_user", F.lit(True))
    items = train.select(item_col).distinct().withColumn("_known_item", F.lit(True))
    marked = validation.join(users, user_col, "left").join(items, item_col, "left")
    warm = F.col("_known_user").isNotNull() & F.col("_known_item").isNotNull()
    columns = validation.columns
    return marked.where(warm).select(columns), marked.where(~warm).select(columns)
