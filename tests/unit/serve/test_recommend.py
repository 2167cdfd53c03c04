"""recommend end to end on a small synthetic run whose planted factors are the known answer. The
tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_recommend.py.
"""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest
import torch

from recspark.cli import main
from recspark.core.errors import BadInputError, MissingInputError
from recspark.data.titles import read_titles


def _run(command: str, overrides: list[str]) -> tuple[int, dict]:
    buffer = StringIO()
    with redirect_stdout(buffer):
        status = main([command, *[part for item in overrides for part in ("--set", item)]])
    return status, json.loads(buffer.getvalue().strip().splitlines()[-1])


def test_two_queries_at_once_are_a_config_error(tmp_path):
    status, summary = _run(
        "recommend", [f"paths.root={tmp_path}", "recommend.user=1", "recommend.similar_to=2"]
    )
    assert status == 2 and "only one of" in summary["error"]


def test_titles_tables_of_three_layouts(tmp_path):
    item = tmp_path / "u.item"
    flags = "|".join(["0"] * 3 + ["1", "1"] + ["0"] * 14)
    item.write_bytes(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n".encode("latin-1")
        + "2|Caf\u00e9 (1990)|01-Jan-1990||http://y|".encode("latin-1")
        + "|".join(["0"] * 8 + ["1"] + ["0"] * 10).encode()
        + b"\n"
    )
    frame = read_titles(str(item))
    assert frame["item_id"].tolist() == [1, 2]
    assert frame["title"].tolist() == ["Toy Story (1995)", "Caf\u00e9 (1990)"]
    assert frame["genres"].tolist() == ["Animation|Children's", "Drama"]
    dat = tmp_path / "movies.dat"
    dat.write_bytes("10::Heat (1995)::Action|Crime\n".encode("latin-1"))
    assert read_titles(str(dat)).iloc[0].tolist() == [10, "Heat (1995)", "Action|Crime"]
    csv = tmp_path / "movies.csv"
    csv.write_text(
        'movieId,title,genres\n5,"American President, The (1995)",Comedy|Drama|Romance\n'
    )
    assert read_titles(str(csv)).iloc[0]["title"] == "American President, The (1995)"
    with pytest.raises(MissingInputError):
        read_titles(str(tmp_path / "absent.csv"))
    bad = tmp_path / "bad.txt"
    bad.write_text("just words\n")
    with pytest.raises(BadInputError, match="cannot tell the layout"):
        read_titles(str(bad))


def test_a_known_users_list_leaves_out_what_it_rated_and_rare_items():
    """The list is the model's ranking of the eligible items the user has not rated."""
    from recspark.model.registry import build_model
    from recspark.model.spec import make_spec
    from recspark.serve.recommend import known_user_list

    model = build_model(make_spec("dot", n_users=1, n_items=6, factors=1))
    with torch.no_grad():
        model.user_factors.weight.fill_(1.0)
        model.item_factors.weight.copy_(torch.tensor([[6.0], [5.0], [4.0], [3.0], [2.0], [1.0]]))
    eligible = np.array([True, True, False, True, True, True])
    chosen = known_user_list(model, 0, np.array([0]), eligible, top_n=3, raw_user="u0")
    # Item 0 is rated, item 2 too rare: the best of the rest, in order.
    assert chosen.index.tolist() == [1, 3, 4]
    assert chosen.scores.tolist() == pytest.approx([5.0, 3.0, 2.0])
    assert chosen.facts == {"mode": "user", "user_idx": 0, "rated_items": 1}
