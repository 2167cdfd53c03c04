"""The contract every model kind keeps, run over every kind the registry builds.

As implicit's ``RecommenderBase`` tests are inherited by every model, each case here goes through
the same checks: it builds from its :class:`~recspark.model.spec.ModelSpec`, ``forward`` gives one
prediction per pair, a save/load round trip through :mod:`recspark.model.saving` predicts the
same, the scoring kernel's block (:class:`~recspark.serve.kernel.ScoringKernel`, fed the user rows
as scoring feeds them) equals ``forward``, and a fold-in (:mod:`recspark.serve.foldin`), where
the kind has one, gives a user row whose scores fit as it reports. The cases are generated from
:data:`~recspark.model.registry.BUILDERS`: a kind added there without a case fails here. No JVM.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recspark.core.choices import BUILT_MODEL_KINDS, MODEL_KINDS
from recspark.model.autorec import AutoRec
from recspark.model.base import EmbeddingModel
from recspark.model.ease import EaseModel
from recspark.model.registry import BUILDERS, build_model
from recspark.model.saving import model_bytes, model_from_bytes
from recspark.model.spec import (
    AutoRecSpec,
    BlendSpec,
    DotBiasSpec,
    DotSpec,
    EaseSpec,
    MlpSpec,
    ModelSpec,
    spec_classes,
)
from recspark.serve.foldin import fold_in, score_user
from recspark.serve.kernel import ScoringKernel

USERS, ITEMS = 7, 12
META = {"index_date": "2026-01-01", "objective": "rating"}
PAIRS = torch.cartesian_prod(torch.arange(USERS), torch.arange(ITEMS))
# Train ratings for the kinds that need them (an autoencoder's codes, EASE's positives).
_RNG = np.random.default_rng(0)
_RATED = _RNG.random((USERS, ITEMS)) < 0.5
RATED_USERS, RATED_ITEMS = np.nonzero(_RATED)
RATINGS = _RNG.integers(1, 6, len(RATED_USERS)).astype(np.float32)


def _sizes() -> dict[str, int]:
    return {"n_users": USERS, "n_items": ITEMS}


def _main(lists_head: bool = False) -> DotBiasSpec:
    return DotBiasSpec(**_sizes(), factors=3, y_range=None, lists_head=lists_head)


#: Kind -> (case name, spec) of every variant the contract runs: heads and members included.
VARIANTS: dict[str, list[tuple[str, ModelSpec]]] = {
    "dot": [
        ("plain", DotSpec(**_sizes(), factors=3)),
        ("lists_head", DotSpec(**_sizes(), factors=3, lists_head=True)),
        ("members", DotSpec(**_sizes(), factors=2, members=3)),
        ("members_lists_head", DotSpec(**_sizes(), factors=2, members=2, lists_head=True)),
    ],
    "dot_bias": [
        ("plain", DotBiasSpec(**_sizes(), factors=3)),
        ("lists_head", DotBiasSpec(**_sizes(), factors=3, lists_head=True)),
        ("featured", DotBiasSpec(**_sizes(), factors=3, user_features=2, item_features=3)),
        ("members", DotBiasSpec(**_sizes(), factors=2, members=3)),
        ("members_lists_head", DotBiasSpec(**_sizes(), factors=2, members=2, lists_head=True)),
    ],
    "mlp": [
        (
            "plain",
            MlpSpec(**_sizes(), hidden=(5, 4), dropouts=(0.0, 0.0), user_factors=3, item_factors=2),
        ),
        ("lists_head", MlpSpec(**_sizes(), hidden=(4,), lists_head=True, item_factors=3)),
    ],
    "autorec": [("plain", AutoRecSpec(**_sizes(), factors=4, rating_mean=3.0))],
    "ease": [("plain", EaseSpec(**_sizes()))],
    "blend": [
        (
            "autorec",
            BlendSpec(
                **_sizes(),
                factors=3,
                weights=(0.7, 0.3),
                parts=(_main(), AutoRecSpec(**_sizes(), factors=4)),
            ),
        ),
        (
            "ease",
            BlendSpec(
                **_sizes(),
                factors=3,
                weights=(0.4, 0.6),
                lists_head=True,
                parts=(_main(lists_head=True), EaseSpec(**_sizes())),
            ),
        ),
    ],
}
CASES = [
    pytest.param(spec, id=f"{kind}-{name}") for kind in BUILDERS for name, spec in VARIANTS[kind]
]
#: Kinds whose users fold in from ratings (EASE alone has no rating scale to fit).
FOLDS_IN = {"dot", "dot_bias", "mlp", "blend"}


def test_every_kind_the_registry_builds_has_a_case_and_a_spec():
    assert set(VARIANTS) == set(BUILDERS) == set(BUILT_MODEL_KINDS) == set(spec_classes())
    assert set(MODEL_KINDS) <= set(BUILDERS)


def _fill(model: torch.nn.Module, seed: int = 1) -> None:
    """Trained-looking weights: every parameter random, side features and train ratings set."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    for part in getattr(model, "members", [model]):
        _prepare(part)


def _prepare(model: torch.nn.Module) -> None:
    if isinstance(model, AutoRec):
        model.set_ratings(RATED_USERS, RATED_ITEMS, RATINGS)
    elif isinstance(model, EaseModel):
        model.fit(RATED_USERS, RATED_ITEMS, regularization=5.0)


def built(spec: ModelSpec) -> EmbeddingModel:
    torch.manual_seed(0)
    model = build_model(spec)
    _fill(model)
    if getattr(spec, "user_features", 0):
        features = np.random.default_rng(2)
        model.set_side_features(
            user=features.random((USERS, spec.user_features)),  # type: ignore[attr-defined]
            item=features.random((ITEMS, spec.item_features)),  # type: ignore[attr-defined]
        )
    return model.eval()


def predictions(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(PAIRS[:, 0], PAIRS[:, 1])


def user_rows(model: EmbeddingModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The user vectors and biases scoring feeds the kernel (the factor tables' columns)."""
    with torch.no_grad():
        vectors = model.user_factors.weight.detach()
        bias = getattr(model, "user_bias", None)
        biases = bias.weight.detach()[:, 0] if bias is not None else torch.zeros(USERS)
    return vectors, biases


@pytest.mark.parametrize("spec", CASES)
class TestContract:
    def test_builds_from_its_spec(self, spec: ModelSpec):
        model = built(spec)
        assert isinstance(model, EmbeddingModel)
        assert (model.n_users, model.n_items) == (USERS, ITEMS)
        assert ModelSpec.from_stored(spec.as_dict()) == spec

    def test_forward_gives_one_prediction_per_pair(self, spec: ModelSpec):
        values = predictions(built(spec))
        assert values.shape == (len(PAIRS),)
        assert torch.isfinite(values).all()

    def test_a_saved_model_loads_and_predicts_the_same(self, spec: ModelSpec):
        model = built(spec)
        loaded, stored, meta = model_from_bytes(model_bytes(model, spec.as_dict(), META))
        assert stored == spec.as_dict() and meta == META
        torch.testing.assert_close(predictions(loaded), predictions(model), rtol=0, atol=0)

    def test_the_scoring_kernel_scores_as_forward_does(self, spec: ModelSpec):
        model = built(spec)
        loaded, _, _ = model_from_bytes(model_bytes(model, spec.as_dict(), META))
        kernel = ScoringKernel(loaded, torch.device("cpu"))
        block = kernel.scores(*user_rows(model))
        expected = predictions(model).view(USERS, ITEMS)
        torch.testing.assert_close(block, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            model.score_items(torch.arange(USERS), torch.arange(ITEMS)),
            expected,
            rtol=1e-5,
            atol=1e-5,
        )

    def test_a_folded_in_user_scores_as_the_fold_in_reports(self, spec: ModelSpec):
        if spec.kind not in FOLDS_IN:
            pytest.skip(f"{spec.kind} has no fold-in of its own")
        model = built(spec)
        items = np.arange(0, ITEMS, 2)
        ratings = predictions(model).view(USERS, ITEMS)[0, items].numpy()
        folded = fold_in(model, items, ratings, regularization=1e-4)
        assert folded.vector.shape == (model.user_factors.embedding_dim,)
        scores = score_user(model, folded.vector, folded.bias)
        assert scores.shape == (ITEMS,) and np.isfinite(scores).all()
        if isinstance(folded.rmse, float) and not _ease_partner(spec):
            fit = float(np.sqrt(np.mean((scores[items] - ratings) ** 2)))
            assert fit == pytest.approx(folded.rmse, abs=1e-3)


def _ease_partner(spec: ModelSpec) -> bool:
    return isinstance(spec, BlendSpec) and any(isinstance(p, EaseSpec) for p in spec.parts)
