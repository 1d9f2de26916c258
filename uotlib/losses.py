"""Losses of the GAN baseline and of the semi-dual UOT model (UOTM).

Each function implements one equation of the book; the label in brackets
refers to the chapter "From the semi-dual to a generative model".

Notation used throughout:

* ``x``: a source point (noise), ``T(x)``: its image under the generator.
* ``y``: a target point (a real image).
* ``v``: the potential (the discriminator of a GAN).
* ``c(x, y) = tau * ||x - y||^2``: the transport cost, summed over pixels.
* ``Psi1*``, ``Psi2*``: convex conjugates of the entropy functions that
  relax the source and the target marginal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

PsiStar = Callable[[torch.Tensor], torch.Tensor]


def psi_star_linear(s: torch.Tensor) -> torch.Tensor:
    """Psi*(s) = s: the marginal is matched exactly (balanced OT, as in OTM)."""
    return s


def psi_star_softplus(s: torch.Tensor) -> torch.Tensor:
    """Psi*(s) = log(1 + exp(s)).

    This is the conjugate of Psi(t) = t log t + (1 - t) log(1 - t) on [0, 1].
    With tau = 0 on both sides it turns the potential loss into the GAN
    discriminator's binary cross-entropy [eq. uot-gan]. The official UOTM code
    uses the rescaled ``2 * softplus(s) - 2 log 2``, which has the same
    minimisers up to a factor 2 in the potential's learning rate.
    """
    return F.softplus(s)


def psi_star_exp(s: torch.Tensor) -> torch.Tensor:
    """Psi*(s) = exp(s): the ``exp`` choice of the course report.

    It differs from ``kl`` by the constant 1, so both give the same gradients
    and therefore the same training run.
    """
    return torch.exp(s)


def psi_star_kl(s: torch.Tensor) -> torch.Tensor:
    """Psi*(s) = exp(s) - 1, the conjugate of Psi(t) = t log t - t + 1 (KL)."""
    return torch.expm1(s)


def psi_star_chi2(s: torch.Tensor) -> torch.Tensor:
    """Psi*(s) = s + s^2 / 4 for s >= -2, else -1.

    The conjugate of the Pearson chi^2 entropy Psi(t) = (t - 1)^2 for t >= 0;
    the constant branch comes from the constraint t >= 0 and keeps Psi*
    non-decreasing.
    """
    return torch.where(s >= -2.0, s + 0.25 * s * s, torch.full_like(s, -1.0))


PSI_STAR: dict[str, PsiStar] = {
    "linear": psi_star_linear,
    "softplus": psi_star_softplus,
    "exp": psi_star_exp,
    "kl": psi_star_kl,
    "chi2": psi_star_chi2,
}


def get_psi_star(name: str) -> PsiStar:
    """Return the conjugate entropy function registered under ``name``."""
    try:
        return PSI_STAR[name]
    except KeyError:
        valid = ", ".join(sorted(PSI_STAR))
        raise ValueError(f"unknown Psi* {name!r}; expected one of: {valid}") from None


def transport_cost(x: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """Quadratic cost c(x, y) = tau * ||x - y||^2 [eq. uot-cost].

    ``x`` and ``y`` have the same shape (B, ...); the squared distance is
    summed over every non-batch dimension. Returns shape (B,).
    """
    if x.shape != y.shape:
        raise ValueError(
            f"cost needs x and y of the same shape, got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    return tau * (x - y).pow(2).flatten(1).sum(dim=1)


def uot_potential_loss(
    v_fake: torch.Tensor,
    v_real: torch.Tensor,
    cost: torch.Tensor,
    psi1: PsiStar,
    psi2: PsiStar,
) -> torch.Tensor:
    """Potential loss of the semi-dual UOT problem [eq. uot-potential-loss].

    L_v = E_x Psi1*(v(T(x)) - c(x, T(x))) + E_y Psi2*(-v(y)),

    where ``v_fake`` = v(T(x)) and ``cost`` = c(x, T(x)) have shape (B,) and
    ``v_real`` = v(y) has shape (B',). Minimising L_v over v maximises the
    semi-dual objective.
    """
    return psi1(v_fake - cost).mean() + psi2(-v_real).mean()


def uot_generator_loss(v_fake: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
    """Generator loss L_T = E_x [c(x, T(x)) - v(T(x))] [eq. uot-generator-loss].

    T approximates the c-transform: for each x it looks for the point that
    minimises cost minus potential.
    """
    return (cost - v_fake).mean()


def ot_semi_dual_loss(
    v_fake: torch.Tensor, v_real: torch.Tensor, cost: torch.Tensor
) -> torch.Tensor:
    """Negative balanced OT semi-dual [eq. ot-semi-dual].

    The balanced semi-dual is sup_v E_x[v^c(x)] + E_y[v(y)] with
    v^c(x) = inf_y c(x, y) - v(y) approximated by c(x, T(x)) - v(T(x)). Its
    negative, E_x[v(T(x)) - c(x, T(x))] - E_y[v(y)], is what the potential
    minimises; UOTM with ``linear`` on both sides reduces to it.
    """
    return (v_fake - cost).mean() - v_real.mean()


def gan_discriminator_loss(
    logit_fake: torch.Tensor, logit_real: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of the discriminator [eq. gan-d-loss].

    L_D = E_y[-log sigmoid(D(y))] + E_x[-log(1 - sigmoid(D(G(x))))],
    written with logits so that it stays finite for saturated outputs.
    """
    real = F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
    fake = F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake))
    return real + fake


def gan_generator_loss(logit_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss E_x[-log sigmoid(D(G(x)))] [eq. gan-g-loss]."""
    return F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
