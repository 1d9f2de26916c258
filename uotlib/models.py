"""Networks: the fixed MLP generator, the GAN discriminator, the UOT potential.

The generator is the one network that the course report kept fixed across
every experiment: linear layers with pointwise activations and a tanh output.
The critic (GAN discriminator or UOT potential) is an MLP too, with the
activation selectable because the report changed it. The same
:class:`MLPCritic` serves both roles; only the loss applied to its scalar
output differs (a logit for the GAN, a potential for UOT).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
IMAGE_DIM = 28 * 28

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name; the error lists the valid names."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        valid = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(
            f"unknown activation {name!r}; expected one of: {valid}"
        ) from None


def _mlp(dims: Sequence[int], activation: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(make_activation(activation))
    return layers


class MLPGenerator(nn.Module):
    """T: noise of ``z_dim`` values -> an image in [-1, 1]^(1x28x28).

    Hidden widths 256-512-1024 with LeakyReLU(0.2) and a tanh output, the
    classic MLP generator for MNIST (about 1.5 M parameters for z_dim = 100).
    """

    def __init__(self, z_dim: int = 100, hidden: Sequence[int] = (256, 512, 1024)):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(
            *_mlp([z_dim, *hidden, IMAGE_DIM], "leaky_relu"), nn.Tanh()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (B, z_dim) or (B, 1, h, w) -> (B, 1, 28, 28)
        return self.net(z.flatten(1)).view(-1, *IMAGE_SHAPE)


class MLPCritic(nn.Module):
    """v: an image -> one scalar per image, with no final activation.

    Used as the GAN discriminator (the scalar is a logit) and as the UOT
    potential. Hidden widths 512-256 by default.
    """

    def __init__(
        self, hidden: Sequence[int] = (512, 256), activation: str = "leaky_relu"
    ):
        super().__init__()
        self.net = nn.Sequential(*_mlp([IMAGE_DIM, *hidden, 1], activation))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # (B, 1, 28, 28) -> (B,)
        return self.net(y.flatten(1)).squeeze(1)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
