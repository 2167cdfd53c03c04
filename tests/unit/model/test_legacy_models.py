"""Models saved by an older recspark (commit ``ceee0a7``, before the typed spec and the registry)
load with today's code and score the same predictions and the same top-5 lists.

The fixtures are ``tests/fixtures/legacy_models/<case>/``, written by
``tests/fixtures/make_legacy_models.py`` run with that commit's code: ``model.pt`` as the trainer
saved it, and ``expected.json`` with what that code predicted and listed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recspark.model.lists import lists_model
from recspark.model.saving import load_model, model_bytes, model_from_bytes
from recspark.model.spec import ModelSpec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "legacy_models"
CASES = sorted(path.name for path in FIXTURES.iterdir() if (path / "model.pt").exists())


def test_the_fixtures_are_there():
    assert set(CASES) >= {"dot", "dot_bias", "mlp", "lists_head", "ensemble", "featured"}


@pytest.mark.parametrize("case", CASES)
def test_a_legacy_model_loads_and_scores_the_same_lists(case):
    expected = json.loads((FIXTURES / case / "expected.json").read_text())
    model, spec, meta = load_model(FIXTURES / case)
    n_users, n_items = len(expected["users"]), len(expected["predictions"][0])
    users = torch.arange(n_users).repeat_interleave(n_items)
    items = torch.arange(n_items).repeat(n_users)
    with torch.no_grad():
        predictions = model(users, items).view(n_users, n_items)
        if spec.get("lists_head"):
            lists, _ = lists_model(model, meta["lists_rating_weight"])
        else:
            lists = model
        scores = lists.score_items(torch.arange(n_users), torch.arange(n_items)).numpy()
    np.testing.assert_allclose(predictions.numpy(), expected["predictions"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scores, expected["list_scores"], rtol=1e-6, atol=1e-6)
    top = [np.argsort(-row, kind="stable")[:5].tolist() for row in scores]
    assert top == expected["top"]


@pytest.mark.parametrize("case", CASES)
def test_a_legacy_spec_is_saved_back_as_it_was_stored(case):
    """The typed spec gives back the very dict the older code stored, so a re-saved model holds
    what an older reader expects."""
    _, spec, meta = load_model(FIXTURES / case)
    assert ModelSpec.from_stored(spec).as_dict() == spec
    model, _, _ = load_model(FIXTURES / case)
    _, again, _ = model_from_bytes(model_bytes(model, ModelSpec.from_stored(spec).as_dict(), meta))
    assert again == spec
