"""Config loading: defaults, typed --set overrides, and rejections that name the key."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from recspark.cli import main
from recspark.core.config import DEFAULT_CONFIG, load_config
from recspark.core.errors import ConfigError


def test_default_config_is_the_synthetic_data_set():
    config = load_config()
    assert config.input.format == "synthetic"
    assert DEFAULT_CONFIG.name == "default.yaml"
    assert config.model.kind == "dot_bias"


def test_overrides_are_typed_and_nested():
    config = load_config(
        None,
        [
            "train.lr=0.05",
            "model.hidden=[32, 16]",
            "model.dropouts=[0.1, 0.1]",
            "run_date=2026-02-03",
            "score.exclude_seen=false",
        ],
    )
    assert config.train.lr == pytest.approx(0.05)
    assert config.model.hidden == [32, 16]
    assert config.run_date == dt.date(2026, 2, 3)
    assert config.score.exclude_seen is False


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lrate=0.1", "train.lrate"),
        ("trian.lr=0.1", "trian"),
        ("train.lr=-1", "train.lr"),
        ("train.epochs=many", "train.epochs"),
        ("model.kind=svd", "model.kind"),
        ("split.validation_fraction=1.5", "split.validation_fraction"),
        ("run_date=yesterday", "run_date"),
    ],
)
def test_bad_keys_and_values_are_rejected_by_name(override, key):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert key in str(error.value)


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="dropout"):
        load_config(None, ["model.hidden=[8, 8]", "model.dropouts=[0.1]"])
    with pytest.raises(ConfigError, match="rating_min"):
        load_config(None, ["input.rating_min=5", "input.rating_max=1"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_rejects_bad_config_before_spark_with_a_json_line(capsys, monkeypatch):
    def no_spark(*args, **kwargs):
        raise AssertionError("Spark must not start for a bad config")

    monkeypatch.setattr("recspark.core.spark.get_spark", no_spark)
    status = main(["train", "--set", "train.optimiser=adam"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(line)
    assert status == 2
    assert summary["status"] == "error" and summary["command"] == "train"
    assert "train.optimiser" in summary["error"]


def test_the_default_config_is_found_from_any_folder(tmp_path, monkeypatch):
    """The shipped conf/default.yaml is found from the package, not from the current folder."""
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_CONFIG.is_file() and DEFAULT_CONFIG.parent.name == "conf"
    assert load_config(None).input.format == "synthetic"
