"""R1 in closed form and the EMA limits."""

import pytest
import torch
from torch import nn

from uotlib.ema import EMA
from uotlib.penalty import r1_penalty


def test_r1_of_a_linear_potential_is_half_lambda_norm_squared():
    a = torch.tensor([0.5, -2.0, 1.5, 3.0], dtype=torch.float64)

    def potential(y):
        return y.flatten(1) @ a

    y = torch.randn(16, 1, 2, 2, dtype=torch.float64)
    lam = 0.3
    assert r1_penalty(potential, y, lam).item() == pytest.approx(
        lam / 2 * a.pow(2).sum().item()
    )


def test_r1_of_a_quadratic_potential_depends_on_the_points():
    # v(y) = ||y||^2 / 2 has gradient y, so R1 = lam/2 * E||y||^2
    y = torch.randn(32, 5, dtype=torch.float64)
    got = r1_penalty(lambda p: 0.5 * p.pow(2).sum(1), y, 2.0)
    assert got.item() == pytest.approx(y.pow(2).sum(1).mean().item())


def test_r1_backpropagates_into_the_potential():
    net = nn.Linear(3, 1)
    r1_penalty(lambda p: net(p).squeeze(1), torch.randn(8, 3), 1.0).backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))


def _perturb(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()
    net(torch.randn(16, 4) * 3 + 2)  # moves BatchNorm's running statistics


def test_ema_decay_zero_copies_parameters_and_buffers():
    net = _net()
    ema = EMA(net, decay=0.0)
    _perturb(net)
    ema.update(net)
    for a, b in zip(
        ema.module.state_dict().values(), net.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_ema_decay_one_freezes_parameters_and_float_buffers():
    net = _net()
    ema = EMA(net, decay=1.0)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    _perturb(net)
    ema.update(net)
    after = ema.module.state_dict()
    for key, value in before.items():
        if key.endswith("num_batches_tracked"):
            # integer counters are copied, never averaged
            assert torch.equal(after[key], net.state_dict()[key])
        else:
            assert torch.equal(after[key], value)


def test_ema_averages_with_the_given_decay():
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(3):
        ema.update(net)
    assert ema.module.weight.item() == pytest.approx(1 - 0.9**3)


def test_ema_warmup_schedule_and_state_dict_round_trip():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.9999, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)
    for _ in range(5):
        ema.update(net)
    assert ema.current_decay() == pytest.approx(6 / 15)
    clone = EMA(nn.Linear(2, 2), decay=0.9999, warmup=True)
    clone.load_state_dict(ema.state_dict())
    assert int(clone.step) == 5
    assert torch.equal(clone.module.weight, ema.module.weight)


def test_ema_rejects_decay_outside_unit_interval():
    with pytest.raises(ValueError, match="1.5"):
        EMA(nn.Linear(1, 1), decay=1.5)
