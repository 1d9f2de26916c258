"""Gradient penalties on the potential (or discriminator).

R1 (Mescheder et al., 2018) penalises the squared norm of the potential's
gradient at real data, lambda/2 * E_y ||grad_y v(y)||^2, exactly as the
official UOTM code does [eq. uot-r1]. Taking it at generated points instead
(the "fake" variant) smooths v where the generator currently puts mass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def r1_penalty(
    potential: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, lam: float
) -> torch.Tensor:
    """lam / 2 * E ||grad_y v(y)||^2 at the points ``y`` of shape (B, ...).

    ``y`` is detached and made a leaf here, so the caller may pass real images
    or generated ones (the variant at generated points). The graph is kept
    (``create_graph=True``) so the penalty can be back-propagated into v's
    parameters.
    """
    y = y.detach().requires_grad_(True)
    v = potential(y)
    (grad,) = torch.autograd.grad(v.sum(), y, create_graph=True)
    return 0.5 * lam * grad.pow(2).flatten(1).sum(dim=1).mean()
