"""tracking.*: off by default, a URI from the config or MLFLOW_TRACKING_URI, a server that does not
answer stops a command before Spark starts with one line naming it (or, with
``tracking.required: false``, a warning and no logging). No server and no JVM here: the end-to-end
runs against a real ``mlflow server`` are tests/e2e/test_mlflow.py."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest

from recspark.cli import main
from recspark.core.config import Config, TrackingConfig, load_config
from recspark.core.errors import ConfigError
from recspark.ops import tracking
from recspark.ops.history import HistoryRecord
from recspark.ops.tracking import TrackingUnavailableError, check_tracking, tracked_run
from tests.conftest import REPO


@pytest.fixture
def dead_uri() -> str:
    """An http URI on a loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def no_env_uri(monkeypatch):
    monkeypatch.delenv(tracking.ENV_URI, raising=False)


def test_tracking_is_off_by_default_and_the_section_refuses_unknown_keys():
    config = Config()
    assert config.tracking.uri is None and tracking.tracking_uri(config.tracking) is None
    assert check_tracking(config.tracking) is None
    with tracked_run(config.tracking, "train") as run:
        assert run is None
    with pytest.raises(ConfigError, match=r"tracking\.url"):
        load_config(None, ["tracking.url=http://x"])


def test_the_environment_gives_the_uri_when_the_config_does_not(monkeypatch):
    monkeypatch.setenv(tracking.ENV_URI, "sqlite:///somewhere.db")
    assert tracking.tracking_uri(TrackingConfig()) == "sqlite:///somewhere.db"
    assert tracking.tracking_uri(TrackingConfig(uri="http://a:5000")) == "http://a:5000"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("models:/recspark@champion", True),
        ("models:/recspark/3", True),
        ("models:/recspark", False),
        ("recspark@champion", False),
        ("models:/a/b@c", False),
    ],
)
def test_score_model_takes_a_registry_uri(value, valid):
    if valid:
        assert load_config(None, [f"score.model={value}"]).score.model == value
    else:
        with pytest.raises(ConfigError, match=r"score\.model"):
            load_config(None, [f"score.model={value}"])


def test_a_server_that_does_not_answer_stops_the_command_before_spark(dead_uri, no_spark, capsys):
    with pytest.raises(TrackingUnavailableError) as raised:
        check_tracking(TrackingConfig(uri=dead_uri))
    assert dead_uri in str(raised.value) and "\n" not in str(raised.value)
    for command in ("train", "evaluate", "nightly"):
        status = main([command, "--set", f"tracking.uri={dead_uri}"])
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert status == 1 and summary["status"] == "error", summary
        assert summary["error"].startswith(f"the MLflow tracking server at {dead_uri} does not")
        assert "tracking.required=false" in summary["error"]


def test_score_of_a_registered_model_needs_tracking(no_spark, capsys):
    status = main(["score", "--set", "score.model=models:/recspark@champion"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 2 and "tracking.uri" in summary["error"]


def test_not_required_warns_once_and_logs_nothing(dead_uri, caplog):
    settings = TrackingConfig(uri=dead_uri, required=False)
    with caplog.at_level(logging.WARNING, logger="recspark.ops.tracking"):
        assert check_tracking(settings) is None
        with tracked_run(settings, "train") as run:
            assert run is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and dead_uri in warnings[0] and "without logging" in warnings[0]


def test_a_history_record_names_its_mlflow_run_only_when_tracked():
    plain = HistoryRecord(run_id="r1", run_date="2026-03-01", status="published")
    assert "mlflow_run_id" not in plain.model_dump()
    tracked = plain.model_copy(update={"mlflow_run_id": "abc"})
    assert HistoryRecord.model_validate_json(tracked.model_dump_json()).mlflow_run_id == "abc"


def test_flattened_params_and_figures():
    values = {"train": {"lr": 0.1, "device": "cpu"}, "ok": True, "nan": float("nan"), "n": 3}
    assert tracking.flat(values)["train.lr"] == 0.1
    assert tracking.figures(values) == {"train.lr": 0.1, "n": 3.0}


def test_the_pipeline_without_tracking_imports_no_mlflow():
    """The commands' modules leave mlflow unimported: only tracking's calls import it."""
    code = (
        "import sys\nimport recspark.cli, recspark.commands.nightly, recspark.commands.score\n"
        "import recspark.commands.train, recspark.commands.evaluate\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
