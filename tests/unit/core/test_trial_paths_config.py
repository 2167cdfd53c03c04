"""Defects of a new-user trial: an alias-bomb config, ``#`` in ``paths.root``, ``~`` in ``--set``.
The tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_trial_paths_config.py.
"""

from __future__ import annotations

import json

import pytest

from recspark.cli import main
from recspark.core.config import load_config
from recspark.core.errors import ConfigError

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
