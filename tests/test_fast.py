"""train/fast.py: the closed-form full-batch SGD path gives the seed's eager loop's weights and losses."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from torchport.train import Regressor, load_dataset
from torchport.train import TrainingDiverged
from torchport.train.fast import fit_full_batch_sgd


def eager_sgd(module: nn.Module, X: torch.Tensor, y: torch.Tensor, lr: float, epochs: int) -> np.ndarray:
    """The seed's loop: forward, MSE, zero_grad, backward, SGD step; the loss of every epoch."""
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        loss = nn.functional.mse_loss(module(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.fixture(scope="module")
def seed_tensors():
    d = load_dataset("plant_richness_lr")
    return torch.tensor(d.X, dtype=torch.float32), torch.tensor(d.y, dtype=torch.float32)


@pytest.fixture(scope="module")
def seed_eager(seed_tensors):
    """The tutorial's run (seed 0, lr 0.002, 6000 epochs) through the eager float32 loop."""
    torch.manual_seed(0)
    module = nn.Linear(1, 1)
    losses = eager_sgd(module, *seed_tensors, 0.002, 6000)
    return module, losses


def test_seed_problem_matches_the_eager_loop_within_1e_5(seed_tensors, seed_eager):
    torch.manual_seed(0)
    module = nn.Linear(1, 1)
    losses = fit_full_batch_sgd(module, *seed_tensors, 0.002, 6000)
    eager, eager_losses = seed_eager
    assert losses.dtype == torch.float32 and losses.shape == (6000,)
    with torch.no_grad():
        assert float((module.weight - eager.weight).abs().max()) <= 1e-5
        assert float((module.bias - eager.bias).abs().max()) <= 1e-5
    np.testing.assert_allclose(losses.numpy(), eager_losses, rtol=1e-5)
    assert abs(module.weight.item() - 0.35739) < 0.01  # and it is the tutorial's fit, not a stand-still


def test_regressor_fit_uses_it_and_lands_on_the_eager_weights(seed_eager):
    d = load_dataset("plant_richness_lr")
    reg = Regressor(device="cpu", optimizer="sgd").fit(d.X, d.y)
    eager, eager_losses = seed_eager
    np.testing.assert_allclose(reg.coef_, eager.weight.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(reg.intercept_, eager.bias.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(reg.loss_history_, eager_losses, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_several_features_and_targets_equal_float64_eager(bias):
    """In float64 both paths are exact up to rounding: the closed form must agree to 1e-10."""
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(40, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.2], dtype=torch.float64)
    y = X @ torch.tensor([[1.0, -2.0], [0.3, 0.1], [4.0, 0.0]], dtype=torch.float64) + 0.5
    torch.manual_seed(3)
    init = nn.Linear(3, 2, bias=bias).double()
    eager, fast = copy.deepcopy(init), copy.deepcopy(init)
    eager_losses = eager_sgd(eager, X, y, 0.01, 300)
    losses = fit_full_batch_sgd(fast, X, y, 0.01, 300, check_every=64)
    assert losses.dtype == torch.float64
    np.testing.assert_allclose(losses.numpy(), eager_losses, rtol=1e-10)
    for a, b in zip(fast.parameters(), eager.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert eager_losses[-1] < eager_losses[0] / 10


def test_on_check_sees_each_interval_and_the_end(seed_tensors):
    seen = []
    losses = fit_full_batch_sgd(nn.Linear(1, 1), *seed_tensors, 0.002, 250, check_every=100,
                                on_check=lambda done, loss: seen.append((done, loss)))
    assert [done for done, _ in seen] == [100, 200, 250]
    assert [loss for _, loss in seen] == [float(losses[99]), float(losses[199]), float(losses[249])]


def test_divergence_is_reported_through_the_regressor(seed_tensors):
    X, y = seed_tensors
    seen = []
    losses = fit_full_batch_sgd(nn.Linear(1, 1), X, y, 5.0, 300, check_every=50,
                                on_check=lambda done, loss: seen.append(loss))
    assert not np.isfinite(seen[-1]) and not torch.isfinite(losses[-1])
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch \d+: the loss is (inf|nan); full-batch SGD on "
                                               r"these features is stable only for lr below 0.127"):
        Regressor(device="cpu", lr=5.0).fit(X.numpy(), y.numpy())


def test_progress_bar_reaches_the_end(capsys):
    d = load_dataset("plant_richness_lr")
    Regressor(device="cpu", epochs=500, progress=True).fit(d.X, d.y)
    err = capsys.readouterr().err
    assert "500/500" in err and "loss 0." in err


def test_refuses_what_it_cannot_train(seed_tensors):
    with pytest.raises(TypeError, match="trains an nn.Linear"):
        fit_full_batch_sgd(nn.Sequential(nn.Linear(1, 1)), *seed_tensors, 0.002, 10)
    with pytest.raises(ValueError, match=r"expected X \(rows, 2\)"):
        fit_full_batch_sgd(nn.Linear(2, 1), *seed_tensors, 0.002, 10)
