"""Models that cannot hurt: files that run code are refused, stale models are not used. The tests
that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_model_safety.py.
"""

from __future__ import annotations

import io
import json
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from recspark.core.errors import BadInputError
from recspark.core.storage import Layout
from recspark.model.published import load_published_model, save_model
from recspark.model.registry import build_model
from recspark.model.saving import load_model, load_plain, model_bytes
from recspark.model.spec import make_spec, spec_from_dict
from recspark.train.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from recspark.train.optim import OPTIMIZERS, SCHEDULES, Schedule, make_optimizer
from tests.e2e.test_score_job import RUN_DATE

PACKAGE = Path(__file__).resolve().parents[3] / "recspark"


REFUSED = "holds code/objects that are not plain data: refusing to load it"


class TouchHook:
    """Unpickles as ``Path(marker).touch()``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class ShellHook:
    """Unpickles as ``os.system("touch marker")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


HOOKS = [TouchHook, ShellHook]


def small_model():
    spec = {"kind": "dot_bias", "n_users": 4, "n_items": 3, "factors": 2}
    return build_model(spec_from_dict(spec)), spec


@pytest.mark.parametrize("hook", HOOKS)
def test_the_planted_hooks_do_run_when_unpickled_unguarded(tmp_path, hook):
    """The payloads below are live: an unguarded load runs them (which recspark never does)."""
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"meta": hook(marker)}, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("hook", HOOKS)
def test_a_model_file_with_a_reduce_hook_is_refused_before_it_runs(tmp_path, hook):
    model, spec = small_model()
    layout = Layout(tmp_path / "root")
    folder = layout.model(RUN_DATE)
    folder.mkdir(parents=True)
    save_model(folder / "model.pt", model, spec, {"index_date": RUN_DATE, "run_date": RUN_DATE})
    (folder / "metrics.json").write_text(json.dumps({"model_version": "v", "history": []}))
    marker = tmp_path / "ran"
    payload = torch.load(folder / "model.pt", weights_only=True)
    payload["meta"]["note"] = hook(marker)
    torch.save(payload, folder / "model.pt")

    with pytest.raises(BadInputError, match=REFUSED) as raised:
        load_model(folder)
    assert "is not a recspark model" in str(raised.value)
    assert str(folder / "model.pt") in str(raised.value)
    with pytest.raises(BadInputError, match=REFUSED):
        load_published_model(layout, RUN_DATE)
    assert not marker.exists()


@pytest.mark.parametrize("hook", HOOKS)
def test_a_checkpoint_with_a_reduce_hook_is_refused_before_it_runs(tmp_path, hook):
    model, _ = small_model()
    folder = tmp_path / "_checkpoints" / RUN_DATE
    save_checkpoint(folder, Checkpoint(fingerprint="f", epoch=1, model=model.state_dict()))
    marker = tmp_path / "ran"
    payload = torch.load(folder / "last.pt", weights_only=True)
    payload["history"] = [{"epoch": 1, "note": hook(marker)}]
    torch.save(payload, folder / "last.pt")

    with pytest.raises(BadInputError, match=REFUSED) as raised:
        load_checkpoint(folder, "f")
    assert "is not a recspark checkpoint" in str(raised.value)
    assert "train.resume=false" in str(raised.value)
    assert not marker.exists()


def test_a_file_torch_cannot_read_as_plain_data_is_a_clear_error(tmp_path):
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(BadInputError, match="is not a recspark model"):
        load_model(garbage)
    # Plain data, but not a model: no spec, meta and state_dict.
    torch.save({"weights": torch.zeros(2)}, garbage)
    with pytest.raises(BadInputError, match="holds no spec, meta and state_dict"):
        load_model(garbage)
    with pytest.raises(BadInputError, match="training result"):
        load_plain(b"", "result.pt", "training result", "run it again")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_optimizer_and_schedule_checkpoints_as_plain_data(tmp_path, optimizer, schedule):
    """What a checkpoint keeps (model, optimizer and schedule state, history) loads back with
    weights_only=True, equal to what was saved."""
    sparse = optimizer.startswith("sparse")
    model = build_model(
        make_spec(kind="mlp", n_users=6, n_items=5, hidden=[4], dropouts=[0.0], sparse=sparse)
    )
    optimizers = make_optimizer(model, optimizer, 0.01)
    steps = Schedule(optimizers, schedule, 0.01, epochs=2, steps_per_epoch=3)
    for _ in range(2):
        loss = model(torch.tensor([0, 1, 5]), torch.tensor([1, 2, 4])).pow(2).mean()
        optimizers.zero_grad()
        loss.backward()
        optimizers.step()
        steps.step()
    history = [{"epoch": 1, "train_loss": np.float64(0.5), "validation_auc": None}]
    saved = Checkpoint(
        fingerprint="f",
        epoch=1,
        model=model.state_dict(),
        optimizer=optimizers.state_dict(),
        schedule=steps.state_dict(),
        best_state=model.state_dict(),
        history=history,
    )
    save_checkpoint(tmp_path, saved)
    loaded = load_checkpoint(tmp_path, "f")
    assert loaded.history == [{"epoch": 1, "train_loss": 0.5, "validation_auc": None}]
    assert type(loaded.history[0]["train_loss"]) is float  # numpy scalars become plain numbers
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model[key], value)
    again = make_optimizer(model, optimizer, 0.01)  # in the order the loop resumes them
    resumed = Schedule(again, schedule, 0.01, epochs=2, steps_per_epoch=3)
    again.load_state_dict(loaded.optimizer)
    resumed.load_state_dict(loaded.schedule)
    assert resumed.last_epoch == steps.last_epoch == 2
    assert again.param_groups[0]["lr"] == pytest.approx(optimizers.param_groups[0]["lr"])


def test_saving_refuses_what_is_not_plain_data(tmp_path):
    model, spec = small_model()
    with pytest.raises(TypeError, match=r"meta.*not plain data"):
        model_bytes(model, spec, {"index_date": RUN_DATE, "note": object()})
    with pytest.raises(TypeError, match="not plain data"):
        save_model(tmp_path / "model.pt", model, spec, {"index_date": RUN_DATE, "note": {1, 2}})
    assert not (tmp_path / "model.pt").exists()
    # Numpy numbers are plain numbers once saved.
    save_model(
        tmp_path / "model.pt", model, spec, {"index_date": RUN_DATE, "best_epoch": np.int64(2)}
    )
    _, _, meta = load_model(tmp_path / "model.pt")
    assert meta["best_epoch"] == 2 and type(meta["best_epoch"]) is int


def test_no_torch_load_in_recspark_can_run_pickled_code():
    """Every ``torch.load`` call in the package says ``weights_only=True``."""
    unsafe = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "weights_only=False" in text:
            unsafe.append(f"{path.name}: weights_only=False")
        for call in text.split("torch.load(")[1:]:
            if "weights_only=True" not in call.split(")")[0]:
                unsafe.append(f"{path.name}: torch.load({call[:60]}")
    assert unsafe == []
