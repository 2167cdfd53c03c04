"""Defects of a new-user trial: an alias-bomb config, ``#`` in ``paths.root``, ``~`` in ``--set``.

* A YAML config whose aliases expand to a billion values ("billion laughs") is refused with a
  short :class:`ConfigError` before anything expands it, from a file and from ``--set`` alike,
  and a bad value's message never carries its whole repr.
* ``--set paths.root=~/x`` expands ``~`` as a config file does.
* A ``paths.root`` holding ``#`` works through every stage: petastorm once read it as a URL and
  cut the path at ``#``.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from recspark.cli import main
from recspark.core.config import load_config
from recspark.core.errors import ConfigError
from tests.conftest import run_quietly, tiny_overrides

#: Nine nested lists of nine aliases each: 9^9 (387 million) strings once expanded.
BOMB = ", ".join(
    ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [
        f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]"
        for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
    ]
)
SHORT = 400  # characters: a message a person reads in one go


@pytest.fixture
def bomb_file(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(f"paths:\n  root: {{{BOMB}}}\n")
    return path


def test_an_alias_bomb_config_file_is_refused(bomb_file):
    with pytest.raises(ConfigError) as refused:
        load_config(bomb_file)
    message = str(refused.value)
    assert len(message) < SHORT
    assert str(bomb_file) in message and "aliases" in message and "write the values out" in message


def test_an_alias_bomb_set_value_is_refused():
    with pytest.raises(ConfigError) as refused:
        load_config(None, [f"paths.root={{{BOMB}}}"])
    message = str(refused.value)
    assert len(message) < SHORT
    assert message.startswith("--set paths.root ") and "aliases" in message


def test_an_alias_that_holds_itself_is_refused():
    with pytest.raises(ConfigError, match="refers to itself"):
        load_config(None, ["paths.root=&loop [1, *loop]"])


@pytest.mark.parametrize("where", ["file", "set"])
def test_an_alias_bomb_exits_2_with_one_error_line(where, bomb_file, no_spark, capsys):
    if where == "file":
        argv = ["prepare", "--config", str(bomb_file)]
    else:
        argv = ["prepare", "--set", f"paths.root={{{BOMB}}}"]
    assert main(argv) == 2
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "error" and summary["command"] == "prepare"
    assert "aliases" in summary["error"] and len(summary["error"]) < SHORT


def test_a_bad_values_message_shows_only_the_start_of_it():
    long_list = "[" + ", ".join([f"'{'x' * 60}'"] * 5000) + "]"
    with pytest.raises(ConfigError) as refused:
        load_config(None, [f"paths.root={long_list}", f"train.epochs={'y' * 10_000}"])
    message = str(refused.value)
    assert "paths.root: Input should be a valid string" in message
    assert "train.epochs" in message
    assert "x" * 60 in message and "..." in message  # recognisable, and visibly cut
    assert len(message) < 1000


def test_set_expands_a_leading_tilde_as_a_config_file_does(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["paths.root=~/x", "input.path=runs/~tmp/ratings.csv"])
    assert config.paths.root == str(home / "x")
    assert config.input.path == "runs/~tmp/ratings.csv"  # a ~ inside a name is a name
    config = load_config(None, ["paths={root: ~/y}", "recommend.titles_path=s3a://bucket/~z"])
    assert config.paths.root == str(home / "y")
    assert config.recommend.titles_path == "s3a://bucket/~z"
    written = tmp_path / "conf.yaml"
    written.write_text("paths:\n  root: ~/x\n")
    assert load_config(written).paths.root == load_config(None, ["paths.root=~/x"]).paths.root
    assert not (tmp_path / "~").exists()


def test_a_root_with_a_hash_works_through_every_stage(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path cut at "#" would land here or beside the root
    root = tmp_path / "team#1" / "runs"
    overrides = tiny_overrides(
        root,
        **{
            "synthetic.users": 200,
            "synthetic.items": 100,
            "synthetic.ratings": 5000,
            "train.epochs": 1,
            "train.allow_worse": "true",  # one epoch on little data: this test is about paths
            "evaluate.baselines": "[]",
        },
    )
    summaries = {}
    for command in ("generate", "prepare", "train", "score", "evaluate"):
        status, summary = run_quietly(command, overrides)
        assert status == 0, summary
        assert summary["status"] == "ok" and summary["command"] == command
        summaries[command] = summary
    day = "2026-01-15"
    for relative in (
        "data/ratings",
        f"prepared/{day}/train",
        f"models/{day}",
        f"recommendations/run_date={day}/_SUCCESS",
        f"evaluation/{day}",
    ):
        assert (root / relative).exists(), relative
    for summary in summaries.values():
        for output in summary["outputs"].values():
            if isinstance(output, str) and os.sep in output:
                assert "team#1" in output, (summary["command"], output)
    assert summaries["train"]["counts"]["train"] == summaries["prepare"]["counts"]["train"]
    users = pd.read_parquet(root / "prepared" / day / "user_index")
    status, summary = run_quietly("recommend", [*overrides, f"recommend.user={users.user_id[0]}"])
    assert status == 0, summary
    assert summary["recommendations"]
    assert sorted(os.listdir(tmp_path)) == ["team#1"]  # nothing at a truncated path ("team")
