"""When prepare broadcasts an id map: Spark's broadcast limit read as Spark writes it (no JVM)."""

from types import SimpleNamespace

import pytest
from pyspark.sql import types as T

from recspark.data.indexing import fits_broadcast


def _session(threshold: str | None) -> SimpleNamespace:
    return SimpleNamespace(conf=SimpleNamespace(get=lambda key: threshold))


@pytest.mark.parametrize(
    ("threshold", "rows", "fits"),
    [
        ("10MB", 100_000, True),  # the 10M bar's users: 2.4 MB
        ("10MB", 1_000_000, False),
        ("10485760b", 100_000, True),
        ("1g", 1_000_000, True),
        ("-1", 10, False),  # broadcasting turned off
        (None, 20_000, True),  # unset: Spark's default 10 MB
    ],
)
def test_an_id_map_is_broadcast_only_within_sparks_limit(threshold, rows, fits):
    assert fits_broadcast(_session(threshold), rows, T.LongType()) is fits


def test_text_ids_count_as_wider_than_numbers():
    session = _session("10MB")
    assert fits_broadcast(session, 200_000, T.LongType())
    assert not fits_broadcast(session, 200_000, T.StringType())
