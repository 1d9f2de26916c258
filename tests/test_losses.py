"""The Psi* registry, the semi-dual losses and their identities."""

import math

import pytest
import torch
import torch.nn.functional as F

from uotlib.losses import (
    PSI_STAR,
    gan_discriminator_loss,
    gan_generator_loss,
    get_psi_star,
    ot_semi_dual_loss,
    transport_cost,
    uot_generator_loss,
    uot_potential_loss,
)

S = torch.tensor([-3.0, -2.0, -0.5, 0.0, 0.7, 2.0], dtype=torch.float64)

CLOSED_FORMS = {
    "linear": [-3.0, -2.0, -0.5, 0.0, 0.7, 2.0],
    "softplus": [math.log1p(math.exp(s)) for s in S.tolist()],
    "exp": [math.exp(s) for s in S.tolist()],
    "kl": [math.exp(s) - 1 for s in S.tolist()],
    "chi2": [-1.0, -1.0, -0.5 + 0.0625, 0.0, 0.7 + 0.1225, 3.0],
}


def test_registry_is_covered_by_closed_forms():
    assert set(CLOSED_FORMS) == set(PSI_STAR)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_psi_star_closed_form(name):
    got = get_psi_star(name)(S)
    assert torch.allclose(got, torch.tensor(CLOSED_FORMS[name], dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(PSI_STAR))
def test_psi_star_convex_and_non_decreasing(name):
    s = torch.linspace(-6, 4, 2001, dtype=torch.float64)
    f = get_psi_star(name)(s)
    assert (f[1:] - f[:-1] >= -1e-12).all()
    second = f[2:] - 2 * f[1:-1] + f[:-2]
    assert (second >= -1e-10).all()


@pytest.mark.parametrize("name", ["linear", "kl", "chi2"])
def test_psi_star_of_a_divergence_is_zero_with_unit_slope_at_zero(name):
    # Psi(1) = 0 = min Psi gives Psi*(0) = 0 and Psi*'(0) = 1
    s = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    value = get_psi_star(name)(s)
    (slope,) = torch.autograd.grad(value.sum(), s)
    assert value.item() == pytest.approx(0.0, abs=1e-12)
    assert slope.item() == pytest.approx(1.0)


def test_chi2_is_continuous_at_the_branch_point():
    psi = get_psi_star("chi2")
    left = psi(torch.tensor([-2.0 - 1e-9], dtype=torch.float64))
    right = psi(torch.tensor([-2.0 + 1e-9], dtype=torch.float64))
    assert left.item() == pytest.approx(right.item(), abs=1e-8)


def test_unknown_psi_star_lists_valid_names():
    with pytest.raises(ValueError, match="'hinge'.*chi2, exp, kl, linear, softplus"):
        get_psi_star("hinge")


def test_transport_cost_is_tau_times_squared_distance():
    x = torch.zeros(2, 1, 2, 2)
    y = torch.tensor([1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]).view(2, 1, 2, 2)
    assert torch.allclose(transport_cost(x, y, 0.5), torch.tensor([2.5, 2.0]))


def test_transport_cost_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4\) and \(2, 5\)"):
        transport_cost(torch.zeros(2, 4), torch.zeros(2, 5), 1.0)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    v_fake = torch.randn(64, generator=g, dtype=torch.float64)
    v_real = torch.randn(80, generator=g, dtype=torch.float64)
    cost = torch.rand(64, generator=g, dtype=torch.float64)
    return v_fake, v_real, cost


def test_linear_uot_equals_balanced_ot_semi_dual():
    v_fake, v_real, cost = _batch()
    lin = get_psi_star("linear")
    uot = uot_potential_loss(v_fake, v_real, cost, lin, lin)
    assert uot.item() == pytest.approx(ot_semi_dual_loss(v_fake, v_real, cost).item())


def test_softplus_uot_at_tau_zero_is_the_gan_discriminator_loss():
    v_fake, v_real, _ = _batch(1)
    zero_cost = transport_cost(torch.zeros(64, 3), torch.ones(64, 3), tau=0.0)
    sp = get_psi_star("softplus")
    uot = uot_potential_loss(v_fake, v_real, zero_cost, sp, sp)
    bce = F.binary_cross_entropy_with_logits(
        v_real, torch.ones_like(v_real)
    ) + F.binary_cross_entropy_with_logits(v_fake, torch.zeros_like(v_fake))
    assert uot.item() == pytest.approx(bce.item(), rel=1e-12)
    assert uot.item() == pytest.approx(gan_discriminator_loss(v_fake, v_real).item())


def test_exp_and_kl_give_the_same_gradient():
    v_fake, v_real, cost = _batch(2)
    grads = []
    for name in ("exp", "kl"):
        vf = v_fake.clone().requires_grad_(True)
        psi = get_psi_star(name)
        uot_potential_loss(vf, v_real, cost, psi, psi).backward()
        grads.append(vf.grad)
    assert torch.allclose(grads[0], grads[1])


def test_generator_losses():
    v_fake, _, cost = _batch(3)
    assert uot_generator_loss(v_fake, cost).item() == pytest.approx(
        (cost - v_fake).mean().item()
    )
    expected = -torch.log(torch.sigmoid(v_fake)).mean()
    assert gan_generator_loss(v_fake).item() == pytest.approx(expected.item())
