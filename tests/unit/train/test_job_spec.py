"""The trainer's model spec (:func:`recspark.train.spec.model_spec`): what ``model.pt`` stores for
a config is what older versions stored, and the config's shape defaults are the spec's. No JVM."""

from __future__ import annotations

import pytest

from recspark.core.config import load_config
from recspark.core.config_model import ModelConfig
from recspark.core.model_shape import DEFAULT_SHAPE
from recspark.data.prepared import PreparedRun
from recspark.model.spec import DotBiasSpec, MlpSpec, ModelSpec
from recspark.train.spec import model_spec, train_settings

MANIFEST = PreparedRun.model_validate(
    {
        "run_date": "2026-01-15",
        "users": 7,
        "items": 5,
        "rating_range": [1.0, 5.0],
        "input": {"fingerprint": "x"},
    }
)


def _spec(overrides: list[str]) -> ModelSpec:
    config = load_config(None, overrides)
    return model_spec(config.model, config.train, config.lists, MANIFEST)


def test_the_stored_spec_of_the_default_config_is_what_older_versions_stored():
    spec = _spec([])
    assert isinstance(spec, DotBiasSpec)
    assert spec.as_dict() == {
        "kind": "dot_bias",
        "n_users": 7,
        "n_items": 5,
        "factors": 8,
        "y_range": [1.0, 5.5],
        "hidden": [64],
        "dropouts": [0.2],
        "embedding_dropout": 0.0,
        "user_factors": None,
        "item_factors": None,
        "sparse": True,
        "bias_penalty": 0.0,  # conf/default.yaml's (the field's default is 1.0)
        "members": 1,
        "user_features": 0,
        "item_features": 0,
        "lists_head": True,
    }


def test_an_mlp_spec_carries_its_layers_and_no_head_for_ranking():
    spec = _spec(
        [
            "model.kind=mlp",
            "model.objective=ranking",
            "model.hidden=[8, 4]",
            "model.dropouts=[0.1, 0.0]",
        ]
    )
    assert isinstance(spec, MlpSpec)
    stored = spec.as_dict()
    assert stored["y_range"] is None and stored["hidden"] == [8, 4]
    assert "lists_head" not in stored and not spec.carries_lists_head


def test_the_configs_shape_defaults_are_the_specs():
    model = load_config(None, ["model.factors=32"]).model
    bare = load_config(None, []).model.model_copy(update={"factors": DEFAULT_SHAPE.factors})
    assert model.factors == DEFAULT_SHAPE.factors == bare.factors
    assert model.hidden == list(DEFAULT_SHAPE.hidden)
    assert ModelConfig().bias_penalty == DEFAULT_SHAPE.bias_penalty  # default.yaml sets 0
    assert model.ensemble == DEFAULT_SHAPE.members


def test_train_settings_take_the_heads_learning_rate_only_when_given():
    config = load_config(None, ["train.lr=0.5"])
    assert train_settings(config.train).head_lr_scale == 1.0
    assert train_settings(config.train, 0.2).head_lr_scale == 0.2
    assert train_settings(config.train).lr == 0.5


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ({"kind": "svd", "n_users": 1, "n_items": 1}, "unknown model kind 'svd'"),
        ({"kind": "ease", "n_users": 1, "n_items": 1, "factors": 3}, "takes no factors"),
        ({"kind": "mlp", "n_users": 1, "n_items": 1, "members": 2}, "ensemble averages"),
        (
            {"kind": "mlp", "n_users": 1, "n_items": 1, "hidden": [4], "dropouts": [0.1, 0.1]},
            "dropouts has 2 entries",
        ),
    ],
)
def test_a_bad_stored_spec_is_refused_with_a_message(stored, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_stored(stored)
