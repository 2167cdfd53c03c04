"""``train.precision`` and the full-catalogue softmax in chunks.

Training in bf16 on the CPU (torch's CPU autocast supports bfloat16) must land where fp32 does on
planted ratings, and its reported figures must stay float32. The chunked softmax over the whole
catalogue must give the unchunked loss and gradients while scoring at most one chunk at a time.
CUDA-only behaviour (TF32 matmuls, bf16 autocast on a GPU) is skipped on machines without one.
"""

from __future__ import annotations

import pytest
import torch

from recspark.core.config import load_config
from recspark.core.errors import ConfigError
from recspark.model.registry import build_model
from recspark.model.spec import DotSpec, spec_from_dict
from recspark.train.artifacts import SUMMARY_METRICS, TrainedModel, training_metrics
from recspark.train.loop import fit, init_model
from recspark.train.objectives.base import RunContext
from recspark.train.objectives.losses import catalogue_softmax_loss, softmax_loss
from recspark.train.objectives.ranking import RankingObjective, RankingSettings, ranking_loss
from recspark.train.objectives.rating import RatingObjective
from recspark.train.objectives.sampling import NegativeSampler
from recspark.train.optim import Optimizers
from recspark.train.precision import autocast, matmul_precision, resolve_precision
from recspark.train.publication_gate import ValidationScores
from recspark.train.records import FitResult
from recspark.train.spec import train_settings
from recspark.train.steps import train_epoch
from recspark.train.warm import Carried
from tests.unit.train.test_training import SPEC, planted_ratings, quick, write_prepared

CPU = torch.device("cpu")
MLP_SPEC = {
    "kind": "mlp",
    "n_users": 300,
    "n_items": 120,
    "user_factors": 8,
    "item_factors": 8,
    "hidden": [16],
    "dropouts": [0.0],
    "y_range": [0.5, 5.5],
}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("precision") / "2026-01-15")


# --- the setting -----------------------------------------------------------------------------


def test_the_key_defaults_to_auto_reaches_the_loop_and_rejects_other_values():
    assert load_config().train.precision == "auto"
    config = load_config(None, ["train.precision=bf16"])
    assert config.train.precision == "bf16"
    assert train_settings(config.train).precision == "bf16"
    with pytest.raises(ConfigError, match=r"train\.precision"):
        load_config(None, ["train.precision=fp16"])


@pytest.mark.parametrize(
    ("setting", "devices", "used"),
    [("auto", ["cpu"], "fp32"), ("bf16", ["cpu"], "bf16"), ("auto", ["cuda:0", "cuda:1"], "tf32")],
)
def test_the_summary_says_which_precision_the_training_processes_used(setting, devices, used):
    config = load_config(None, [f"train.precision={setting}"])
    spec = DotSpec(n_users=1, n_items=1)
    trained = TrainedModel(
        model=build_model(spec),
        spec=spec,
        result=FitResult(devices=devices),
        best=ValidationScores(validation_loss=1.0),
        carried=Carried(),
        device=CPU,
        seconds=1.0,
        loss_name="mse",
    )
    metrics = training_metrics(config.train, trained, "v1")
    assert "precision" in SUMMARY_METRICS
    assert metrics["precision"] == used


@pytest.mark.parametrize(
    ("setting", "device", "used"),
    [
        ("auto", "cpu", "fp32"),
        ("fp32", "cpu", "fp32"),
        ("tf32", "cpu", "fp32"),  # a CPU has no TF32
        ("bf16", "cpu", "bf16"),
        ("auto", "cuda", "tf32"),
        ("fp32", "cuda:0", "fp32"),
        ("tf32", "cuda", "tf32"),
    ],
)
def test_each_setting_means_one_precision_per_device(setting, device, used):
    assert resolve_precision(setting, torch.device(device)) == used


def test_an_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match=r"train\.precision"):
        resolve_precision("fp16", CPU)


def test_matmul_precision_is_set_for_the_scope_and_restored():
    before = torch.get_float32_matmul_precision()
    with matmul_precision("tf32"):
        assert torch.get_float32_matmul_precision() == "high"
    with matmul_precision("fp32"):
        assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.get_float32_matmul_precision() == before


def test_bf16_autocasts_matrix_products_and_fp32_does_not():
    left, right = torch.randn(4, 3), torch.randn(3, 5)
    with autocast("bf16", CPU):
        assert (left @ right).dtype == torch.bfloat16
    with autocast("fp32", CPU):
        assert (left @ right).dtype == torch.float32


# --- training in bf16 ------------------------------------------------------------------------


def validation_rmse(prepared, spec, precision):
    model = init_model(spec, 11)
    result = fit(
        model,
        str(prepared / "train"),
        str(prepared / "validation"),
        quick(precision=precision),
        CPU,
    )
    return result.history[result.best_epoch - 1].validation_rmse, result


def test_dot_bias_in_bf16_reaches_the_rmse_of_fp32(prepared):
    fp32, _ = validation_rmse(prepared, SPEC, "fp32")
    bf16, result = validation_rmse(prepared, SPEC, "bf16")
    assert fp32 < 0.3  # it learned the planted factors (the ratings spread over ~1)
    assert abs(bf16 - fp32) < 0.002, (fp32, bf16)
    assert all(isinstance(r.train_loss, float) for r in result.history)


def test_an_mlp_in_bf16_runs_its_layers_in_bf16_and_reaches_the_rmse_of_fp32(prepared):
    """dot_bias's forward is products and sums, which autocast leaves in float32; an MLP's
    linear layers run in bfloat16, so its figures move, but no further than 0.002."""
    fp32, _ = validation_rmse(prepared, MLP_SPEC, "fp32")
    bf16, _ = validation_rmse(prepared, MLP_SPEC, "bf16")
    assert bf16 != fp32  # autocast reached the layers
    assert abs(bf16 - fp32) < 0.002, (fp32, bf16)


def test_losses_and_figures_stay_float32_under_bf16():
    users, items, ratings = planted_ratings(300, 120, 2048, seed=3)
    batch = {
        "user_idx": torch.as_tensor(users),
        "item_idx": torch.as_tensor(items),
        "rating": torch.as_tensor(ratings),
    }
    model = init_model(MLP_SPEC, 5)
    with autocast("bf16", CPU):
        step = RatingObjective().batch_loss(model, batch, CPU)
        ranking = RankingObjective(RankingSettings(negatives=500, validation_items=50))
        ranking.start_epoch(model, CPU, RunContext(n_items=120))
        ranked = ranking.batch_loss(model, batch, CPU)
    assert step.loss.dtype == torch.float32
    assert ranked.loss.dtype == torch.float32
    optimizer = Optimizers([torch.optim.Adam(model.parameters(), lr=0.01)])
    loss, rows = train_epoch(model, [batch], optimizer, None, CPU, precision="bf16")
    assert rows == 2048 and loss == pytest.approx(float(step.loss.detach()), rel=1e-5)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


@needs_cuda
def test_tf32_and_bf16_on_a_gpu():
    device = torch.device("cuda")
    left, right = torch.randn(64, 64, device=device), torch.randn(64, 64, device=device)
    with matmul_precision(resolve_precision("auto", device)):
        assert torch.get_float32_matmul_precision() == "high"
    if torch.cuda.is_bf16_supported():
        with autocast("bf16", device):
            assert (left @ right).dtype == torch.bfloat16


# --- the full-catalogue softmax in chunks ----------------------------------------------------


def small_model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = {"kind": kind, "n_users": 40, "n_items": 50, "factors": 5, "y_range": None}
    if kind == "mlp":
        spec = {**MLP_SPEC, "n_users": 40, "n_items": 50, "y_range": None}
    model = build_model(spec_from_dict(spec))
    for parameter in model.parameters():  # biases start at zero: give every weight a gradient
        torch.nn.init.normal_(parameter, std=0.5)
    return model


def loss_and_gradients(model, compute):
    model.zero_grad(set_to_none=True)
    loss = compute()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("kind", ["dot", "dot_bias", "mlp"])
@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_the_chunked_catalogue_softmax_has_the_unchunked_loss_and_gradients(kind, chunk):
    model = small_model(kind)
    generator = torch.Generator().manual_seed(1)
    users = torch.randint(40, (16,), generator=generator)
    positives = torch.randint(50, (16,), generator=generator)
    weights = torch.rand(16, generator=generator) + 0.5
    everything = torch.arange(50)

    def unchunked():
        scores = model.score_items(users, everything)
        valid = everything[None, :] != positives[:, None]
        return softmax_loss(model(users, positives), scores, weights, valid)

    def chunked():
        return catalogue_softmax_loss(model, users, positives, weights, block=16 * chunk)

    expected_loss, expected = loss_and_gradients(model, unchunked)
    got_loss, got = loss_and_gradients(model, chunked)
    torch.testing.assert_close(got_loss, expected_loss, atol=1e-5, rtol=1e-5)
    for name, gradient in expected.items():
        torch.testing.assert_close(got[name], gradient, atol=1e-5, rtol=1e-5, msg=name)


def test_ranking_loss_scores_the_catalogue_a_chunk_at_a_time(monkeypatch):
    """Over the whole catalogue with a block smaller than batch x items, no call scores more
    than a chunk of items, and the loss is the one-block loss."""
    from recspark.train.objectives import ranking

    model = small_model("dot_bias")
    settings = RankingSettings(negatives=50)
    sampler = NegativeSampler(50)
    users, positives = torch.arange(20), torch.arange(20) % 7

    def loss():
        return ranking_loss(
            model,
            users,
            positives,
            None,
            settings=settings,
            sampler=sampler,
            generator=torch.Generator().manual_seed(0),
        )

    whole, whole_gradients = loss_and_gradients(model, loss)
    widths = []
    score_items = model.score_items

    def spying(user_idx, item_idx):
        widths.append(len(item_idx))
        return score_items(user_idx, item_idx)

    monkeypatch.setattr(model, "score_items", spying)
    monkeypatch.setattr(ranking, "SOFTMAX_BLOCK", 20 * 8)
    chunked, chunked_gradients = loss_and_gradients(model, loss)
    assert max(widths) == 8 and sum(widths) >= 50  # chunks of 8 items (recomputed in backward)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    for name, gradient in whole_gradients.items():
        torch.testing.assert_close(chunked_gradients[name], gradient, atol=1e-5, rtol=1e-5)
