"""MovieLens: the side-information readers (known answers on tiny tables) and issue 4's accuracy.
The tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_movielens.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recspark.core.config import load_config
from recspark.core.errors import BadInputError
from recspark.data.side_info import (
    YEAR_NAMES,
    ZIP_REGIONS,
    load_side_features,
    read_movielens_1m,
    read_movielens_100k,
)
from tests.conftest import REPO


def _write_index(folder: Path, name: str, id_col: str, idx_col: str, pairs: list[tuple]) -> None:
    (folder / name).mkdir(parents=True)
    table = pa.table(
        {
            id_col: pa.array([p[0] for p in pairs], pa.int64()),
            idx_col: pa.array([p[1] for p in pairs], pa.int32()),
        }
    )
    pq.write_table(table, folder / name / "part-0.parquet")


@pytest.fixture
def tiny_100k(tmp_path: Path) -> Path:
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "u.user").write_text(
        "1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|writer|T8H1N\n"
    )
    (folder / "u.occupation").write_text("other\ntechnician\nwriter\n")
    (folder / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n")
    (folder / "u.item").write_text(
        "10|A (1995)|01-Jan-1995||http://x|0|1|1\n"  # Action and Comedy, 1995
        "11|B (1958)|01-Jan-1958||http://x|0|0|1\n"  # Comedy, before 1960
        "12|C|||http://x|1|0|0\n",  # unknown genre, no date
        encoding="latin-1",
    )
    return folder


def test_movielens_100k_side_tables_become_known_feature_weights(tiny_100k):
    users, items = read_movielens_100k(tiny_100k)
    assert users.ids == ["1", "2", "3"]
    row = dict(zip(users.names, users.weights[0], strict=True))  # 24, M, technician, zip 8...
    assert {name for name, value in row.items() if value} == {
        "age 18-24",
        "gender M",
        "occupation technician",
        "zip 8",
    }
    third = {n for n, v in zip(users.names, users.weights[2], strict=True) if v}
    assert third == {"age under 18", "gender M", "occupation writer", "zip other"}
    assert len(users.names) == 7 + 2 + 3 + len(ZIP_REGIONS)
    first = dict(zip(items.names, items.weights[0], strict=True))
    assert first["genre Action"] == first["genre Comedy"] == 0.5 and first["year 1995"] == 1.0
    second = dict(zip(items.names, items.weights[1], strict=True))
    assert second["genre Comedy"] == 1.0 and second["year before 1960"] == 1.0
    unknown_date = dict(zip(items.names, items.weights[2], strict=True))
    assert unknown_date["genre unknown"] == 1.0
    assert sum(unknown_date[f"year {y}"] for y in YEAR_NAMES) == 0.0


def test_features_follow_the_id_maps_and_unknown_ids_get_zero_rows(tiny_100k, tmp_path):
    prepared = tmp_path / "prepared"
    # The id map's order is not the file's; user 99 and item 77 are not in the side tables.
    _write_index(prepared, "user_index", "user_id", "user_idx", [(3, 0), (99, 1), (1, 2), (2, 3)])
    _write_index(prepared, "item_index", "item_id", "item_idx", [(11, 0), (77, 1), (10, 2)])
    features = load_side_features("movielens-100k", tiny_100k, prepared, n_users=4, n_items=3)
    users, items = read_movielens_100k(tiny_100k)
    np.testing.assert_array_equal(features.user[0], users.weights[2])
    np.testing.assert_array_equal(features.user[1], 0.0)
    np.testing.assert_array_equal(features.user[2], users.weights[0])
    np.testing.assert_array_equal(features.item[[0, 2]], items.weights[[1, 0]])
    np.testing.assert_array_equal(features.item[1], 0.0)
    assert features.spec() == {"user_features": len(users.names), "item_features": len(items.names)}
    only_items = load_side_features(
        "movielens-100k", tiny_100k, prepared, n_users=4, n_items=3, users=False
    )
    assert only_items.user is None and only_items.spec()["user_features"] == 0


def test_movielens_1m_side_tables(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "movies.dat").write_text(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure\n",
        encoding="latin-1",
    )
    users, items = read_movielens_1m(folder)
    first = {n for n, v in zip(users.names, users.weights[0], strict=True) if v}
    assert first == {"age under 18", "gender F", "occupation 10", "zip 4"}
    toy = dict(zip(items.names, items.weights[0], strict=True))
    assert toy["genre Animation"] == pytest.approx(1 / 3) and toy["year 1995"] == 1.0


def test_a_missing_side_table_says_where_to_point(tmp_path):
    with pytest.raises(BadInputError, match=r"model\.side_info\.path"):
        read_movielens_100k(tmp_path)


def test_the_shipped_config_is_valid_and_uses_side_information():
    config = load_config(REPO / "conf" / "movielens-100k.yaml")
    assert config.split.method == "given" and config.input.format == "movielens-100k"
    assert config.model.side_info is not None and config.model.side_info.users
    assert config.model.blend is not None and config.model.blend.kind == "autorec"
    for name in ("movielens-100k-dot-bias.yaml", "movielens-100k-mlp.yaml"):
        assert load_config(REPO / "conf" / name).model.side_info is None
