"""The command line as a person and a scheduler meet it: help, bad arguments, dates, paths.

None of these start Spark: every failure here is caught while reading the command line or the
config, and still ends in one JSON line with a non-zero status.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recspark.cli import main, stages
from recspark.core import errors
from recspark.core.config import load_config

REPO = Path(__file__).resolve().parents[3]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bare_recspark_lists_the_commands_and_exits_0(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name, text in stages().items():
        assert f"  {name:<10} {text.purpose}" in out


@pytest.mark.parametrize("command", sorted(stages()))
def test_each_command_has_its_own_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    text = stages()[command]
    assert f"usage: recspark {command}" in out
    assert text.purpose in out and text.example in out
    assert "config sections read: " + ", ".join(text.sections) in out
    others = [t.purpose for name, t in stages().items() if name != command]
    assert not any(purpose in out for purpose in others)


@pytest.mark.parametrize(
    "argv, command, words",
    [
        (["frobnicate"], None, "invalid choice: 'frobnicate'"),
        (["score", "--bogus"], "score", "unrecognized arguments: --bogus"),
    ],
)
def test_a_bad_command_line_still_ends_in_a_json_line(argv, command, words, capsys, no_spark):
    assert main(argv) == 2
    summary = last_json(capsys)
    assert summary["status"] == "error" and summary["command"] == command
    assert words in summary["error"]


@pytest.mark.parametrize("date", ["2026-13-45", "2026-02-30", "yesterday"])
def test_an_impossible_run_date_is_a_config_error_naming_the_key(date, capsys, no_spark):
    assert main(["score", "--set", f"run_date={date}"]) == 2
    summary = last_json(capsys)
    assert summary["status"] == "error"
    assert summary["error"].startswith("invalid config: run_date:")
    assert date in summary["error"]


def test_an_impossible_run_date_in_a_file_is_a_config_error(tmp_path, capsys, no_spark):
    config = tmp_path / "bad.yaml"
    config.write_text("run_date: 2026-02-30\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "run_date" in last_json(capsys)["error"]


def test_a_valid_run_date_still_parses():
    assert str(load_config(None, ["run_date=2026-11-02"]).run_date) == "2026-11-02"


def test_relative_paths_in_a_config_file_resolve_against_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "etc" / "recspark"
    folder.mkdir(parents=True)
    (folder / "prod.yaml").write_text(
        "paths:\n  root: ../../runs/prod\n"
        "input:\n  path: data/ratings.csv\n  format: csv\n  validation_path: s3a://bucket/v.csv\n"
        "recommend:\n  titles_path: /abs/u.item\n"
    )
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    config = load_config(folder / "prod.yaml", ["model.factors=8"])
    assert config.paths.root == str(tmp_path / "runs" / "prod")
    assert config.input.path == str(folder / "data" / "ratings.csv")
    assert config.input.validation_path == "s3a://bucket/v.csv"  # URIs are left alone
    assert config.recommend.titles_path == "/abs/u.item"


def test_paths_given_with_set_stay_relative_to_the_working_folder(tmp_path):
    config = load_config(REPO / "conf" / "movielens-100k.yaml", ["paths.root=runs/mine"])
    assert config.paths.root == "runs/mine"


def test_shipped_configs_mean_the_same_from_any_folder(tmp_path, monkeypatch):
    """The ML-100K configs find ../shared/data from the repo, wherever the command runs."""
    at_repo = load_config(REPO / "conf" / "movielens-100k.yaml")
    monkeypatch.chdir(tmp_path)
    from_elsewhere = load_config(REPO / "conf" / "movielens-100k.yaml")
    assert at_repo == from_elsewhere
    assert from_elsewhere.input.path == str(REPO.parent / "shared" / "data" / "ml-100k" / "u1.base")
    assert from_elsewhere.paths.root == str(REPO / "runs" / "movielens-100k")


@pytest.mark.parametrize(
    "name",
    ["movielens-100k", "movielens-100k-dot-bias", "movielens-100k-mlp", "movielens-100k-ranking"],
)
def test_shipped_movielens_configs_name_the_titles_beside_their_ratings(name):
    """recommend shows titles with every shipped ML-100K config, not null."""
    config = load_config(REPO / "conf" / f"{name}.yaml")
    titles = Path(config.recommend.titles_path)
    assert titles.name == "u.item"
    assert titles.parent == Path(config.input.path).parent


def test_a_config_file_cannot_run_code(tmp_path):
    """The loader is YAML's safe one (minus timestamps): a python tag is refused, not run."""
    from recspark.core.errors import ConfigError

    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"run_date: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config)
    assert not marker.exists()


# -- exit statuses: what a scheduler retries -------------------------------------------------------


def every_error_class() -> list[type[errors.RecsparkError]]:
    found = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.RecsparkError)
    ]
    return sorted(found, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("error_class", every_error_class(), ids=lambda cls: cls.__name__)
def test_a_gate_rejection_has_its_own_exit_status(error_class):
    """3 for a rejection (retrying repeats the verdict), 2 for a bad config, 1 for the rest."""
    expected = {
        "QualityGateError": 3,
        "TrainingRejectedError": 3,
        "RejectedError": 3,
        "ConfigError": 2,
    }.get(error_class.__name__, 1)
    assert errors.exit_status(error_class("why")) == expected


def test_an_unexpected_failure_exits_1():
    assert errors.exit_status(RuntimeError("a bug")) == 1
    assert errors.exit_status(OSError("disk gone")) == 1


def test_the_help_names_every_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["nightly", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "0 on success, 2 for a bad config, 3 when a gate rejected the result" in out
