"""The relaxed marginals that a trained potential implies.

At the optimum of the semi-dual problem [eq. uot-marginals], the plan's
second marginal is the data distribution ν reweighted by

    w(y) = (Ψ2*)'(-v(y)),

so a trained potential v says, image by image, how much of the data the
unbalanced model keeps (w > 1 means more than the data has, w < 1 less). The
generator is trained to push the source onto that reweighted target, after
normalisation, so the share of a group of images (a digit class, the
Fashion-MNIST outliers) in the normalised reweighted target predicts its share
among generated images.

Two special cases check the reading:

- with ``linear`` (OTM, balanced) Ψ2*' = 1 and w = 1 everywhere: the target is
  the data itself;
- the GAN's logistic loss is UOTM with ``softplus`` on both sides and τ = 0
  [eq. uot-gan], its discriminator logit playing v, so its weights are
  sigmoid(-v(y)).

A study run keeps its last potential as ``potential_e<epoch>.pt`` (half
precision) next to its generator snapshot, so that a chapter can compute these
weights without the training checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import TrainConfig, from_dict
from .losses import get_psi_star
from .train import CHECKPOINT, atomic_save, build_critic

POTENTIAL_PREFIX = "potential_e"


def potential_path(out: Path, epoch: int) -> Path:
    return Path(out) / f"{POTENTIAL_PREFIX}{epoch}.pt"


def save_potential_snapshot(out: Path) -> Path | None:
    """Write the potential of ``out``'s checkpoint in half precision.

    Returns the snapshot's path, or None when ``out`` has no checkpoint (a run
    trained elsewhere whose checkpoint was not kept).
    """
    checkpoint = Path(out) / CHECKPOINT
    if not checkpoint.is_file():
        return None
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    path = potential_path(out, state["epoch"])
    atomic_save(
        {
            "config": state["config"],
            "epoch": state["epoch"],
            "critic": {k: v.half() for k, v in state["critic"].items()},
        },
        path,
    )
    return path


def load_potential(path: Path | str) -> tuple[nn.Module, TrainConfig]:
    """The potential (critic) of a snapshot or checkpoint file, and its config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"potential snapshot {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "critic" not in state:
        raise ValueError(f"{path} holds no potential (keys: {sorted(state)})")
    config = from_dict(state["config"])
    critic = build_critic(config)
    critic.load_state_dict({k: v.float() for k, v in state["critic"].items()})
    return critic.eval(), config


def target_psi(config: TrainConfig) -> str:
    """The Ψ2* that turns this run's critic into target weights.

    The GAN's discriminator loss is the semi-dual loss with ``softplus`` on
    both sides, so a GAN's weights use ``softplus`` whatever ``psi2`` says.
    """
    return "softplus" if config.method == "gan" else config.psi2


@torch.no_grad()
def potential_values(
    critic: nn.Module, images: torch.Tensor, batch_size: int = 2000
) -> torch.Tensor:
    """v(y) for ``images`` (N, 1, 28, 28) in [-1, 1], as a float tensor (N,)."""
    values = [
        critic(images[i : i + batch_size]).float().reshape(-1)
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(values) if values else torch.empty(0)


def target_weights(values: torch.Tensor, psi2: str) -> torch.Tensor:
    """w(y) = (Ψ2*)'(-v(y)) for potential ``values`` v(y) (N,)."""
    psi_star = get_psi_star(psi2)
    s = (-values.detach().double()).requires_grad_(True)
    (grad,) = torch.autograd.grad(psi_star(s).sum(), s)
    return grad.float()


def weighted_shares(
    weights: torch.Tensor, groups: torch.Tensor, n_groups: int
) -> np.ndarray:
    """Share of the total weight that falls on each group 0..n_groups-1.

    ``groups`` (N,) holds each image's group index; the shares sum to 1.
    """
    if weights.shape != groups.shape:
        raise ValueError(
            f"weights have shape {tuple(weights.shape)} and groups "
            f"{tuple(groups.shape)}; expected the same shape"
        )
    if len(groups) and (groups.min() < 0 or groups.max() >= n_groups):
        raise ValueError(
            f"group indices span {int(groups.min())}..{int(groups.max())}; "
            f"expected 0..{n_groups - 1}"
        )
    if torch.any(weights < 0):
        raise ValueError("weights must be non-negative; a Ψ2* that decreases?")
    totals = torch.zeros(n_groups, dtype=torch.float64)
    totals.index_add_(0, groups.long(), weights.double())
    total = totals.sum()
    if total <= 0:
        raise ValueError("every weight is zero: the target keeps no mass")
    return (totals / total).numpy()


def implied_shares(
    path: Path | str, images: torch.Tensor, groups: torch.Tensor, n_groups: int
) -> dict[str, object]:
    """What the potential stored at ``path`` does to the groups of ``images``.

    Returns the normalised reweighted target's share of each group
    (``shares``), the data's own shares (``data_shares``), and the mean weight
    (``mass``: the reweighted target's total mass, 1 for the data).
    """
    critic, config = load_potential(path)
    weights = target_weights(potential_values(critic, images), target_psi(config))
    ones = torch.ones_like(weights)
    return {
        "shares": weighted_shares(weights, groups, n_groups),
        "data_shares": weighted_shares(ones, groups, n_groups),
        "mass": float(weights.mean()),
        "psi2": target_psi(config),
    }
