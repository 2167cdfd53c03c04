"""Every command is a Stage, and the CLI wraps each once: precheck, writable root, Spark, result.

No JVM: the Spark session is a stand-in, and the stages run here are made for the test.
"""

from __future__ import annotations

import json

import pytest

from recspark import cli
from recspark.commands.stage import Stage, StageResult, as_result
from recspark.core.config import load_config


def test_every_command_has_a_stage_with_its_name_and_help_text():
    stages = cli.stages()
    assert tuple(stages) == cli.COMMAND_NAMES
    for name, stage in stages.items():
        assert isinstance(stage, Stage) and stage.name == name
        assert stage.purpose and stage.sections and stage.example.startswith(f"recspark {name}")


def test_converted_commands_define_their_own_stage():
    from recspark.commands import benchmark, evaluate, nightly

    for module in (evaluate, benchmark, nightly):
        assert cli.stage(module.STAGE.name) is module.STAGE
    assert nightly.STAGE.precheck is nightly.precheck


def test_a_dict_summary_and_its_stage_result_print_the_same_line():
    """The temporary reading of an unconverted command's dict keeps the line byte for byte."""
    summary = {
        "recommendations": [{"item_id": 1}],
        "outputs": {"report": "/r"},
        "counts": {"rows": 3},
        "metrics": {"rmse": 0.9},
        "nightly": {"decision": "published"},
    }
    result = as_result(summary)
    assert as_result(result) is result
    assert result.extra == {
        "recommendations": [{"item_id": 1}],
        "nightly": {"decision": "published"},
    }
    config = load_config(None, ["run_date=2026-11-02"])
    assert cli.summary_line("score", config, **result.summary()) == cli.summary_line(
        "score", config, **summary
    )
    keys = list(json.loads(cli.summary_line("score", config, **result.summary())))
    assert keys == [
        "command", "status", "run_date", "outputs", "counts", "metrics", "recommendations",
        "nightly",
    ]  # fmt: skip


def test_run_command_wraps_a_stage_once(tmp_path, monkeypatch):
    calls: list[str] = []

    class FakeSpark:
        pass

    def precheck(config):
        calls.append("precheck")

    def run(config, spark):
        calls.append("run")
        assert isinstance(spark, FakeSpark)
        return StageResult(
            outputs={"report": (tmp_path / "x.json").as_uri()}, counts={"rows": 1}, extra={"a": 1}
        )

    fake = Stage("evaluate", "p", ("paths",), "recspark evaluate", run, precheck)
    monkeypatch.setattr(cli, "stage", lambda name: fake)
    monkeypatch.setattr("recspark.core.spark.get_spark", lambda *a, **k: FakeSpark())
    monkeypatch.setattr("recspark.core.location.configure_from_spark", lambda spark: None)
    monkeypatch.setattr(
        "recspark.core.output_root.check_writable", lambda root: calls.append("writable")
    )
    config = load_config(None, [f"paths.root={tmp_path / 'root'}"])
    clock: dict[str, float] = {}
    fields = cli.run_command("evaluate", config, clock)
    assert calls == ["precheck", "writable", "run"] and "started" in clock
    # A file:// output is shown as a plain path; the extra field rides along.
    assert fields == {
        "a": 1,
        "outputs": {"report": str(tmp_path / "x.json")},
        "counts": {"rows": 1},
        "metrics": {},
    }


def test_a_precheck_refusal_starts_no_spark(tmp_path, monkeypatch):
    from recspark.core.errors import BadInputError

    def precheck(config):
        raise BadInputError("no input")

    def refuse(*args, **kwargs):
        pytest.fail("Spark started after a refused precheck")

    fake = Stage(
        "evaluate", "p", ("paths",), "recspark evaluate", lambda c, s: StageResult(), precheck
    )
    monkeypatch.setattr(cli, "stage", lambda name: fake)
    monkeypatch.setattr("recspark.core.spark.get_spark", refuse)
    config = load_config(None, [f"paths.root={tmp_path}"])
    with pytest.raises(BadInputError, match="no input"):
        cli.run_command("evaluate", config)
