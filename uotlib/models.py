"""Networks: the generators T and the critics v (GAN discriminator, UOT potential).

The MLP generator is the one network that the course report kept fixed
across every experiment: linear layers with pointwise activations and a tanh
output. The MLP critic has its activation selectable because the report
changed it. The same critic class serves both roles; only the loss applied
to its scalar output differs (a logit for the GAN, a potential for UOT).

Next to them sit a small convolutional (DCGAN-like) generator and critic,
chosen with ``g_arch = "conv"`` and ``d_arch = "conv"``. Neither uses batch
normalisation: the critic must be twice differentiable per sample for the R1
penalty (a batch statistic would couple the images of a batch), and a
generator without it behaves the same in training and evaluation mode, so an
EMA copy needs no buffer bookkeeping.
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


class ConvGenerator(nn.Module):
    """T: noise of ``z_dim`` values -> an image in [-1, 1]^(1x28x28), by convolutions.

    A linear layer maps the noise to ``channels[0]`` maps of 7x7; two
    transposed convolutions (kernel 4, stride 2, padding 1) double the side
    to 14x14 with ``channels[1]`` maps, then to 28x28 with one, and a tanh
    bounds the pixels. LeakyReLU(0.2) follows every layer but the last, and
    there is no batch normalisation (see the module docstring).

    Shapes, with c0, c1 = ``channels``::

        (B, z_dim) or (B, 1, 28, 28)  -> flatten -> (B, z_dim)
        Linear                        -> (B, c0 * 49) -> (B, c0, 7, 7)
        ConvTranspose2d(c0, c1)       -> (B, c1, 14, 14)
        ConvTranspose2d(c1, 1), tanh  -> (B, 1, 28, 28)

    With the default channels (32, 16) it has 1,239,345 parameters for
    z_dim = 784 (source "image"), 1,230,880 of them in the first linear
    layer, and 166,833 for z_dim = 100 (source "upsample"); the MLP
    generator has 1,661,456 and 1,486,352. Wider maps cost more time than
    parameters suggest: with (64, 32) a CPU training step took about twice
    as long.
    """

    def __init__(self, z_dim: int = 100, channels: Sequence[int] = (32, 16)):
        super().__init__()
        c0, c1 = channels
        self.z_dim = z_dim
        self.channels = (c0, c1)
        self.project = nn.Sequential(nn.Linear(z_dim, c0 * 7 * 7), nn.LeakyReLU(0.2))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c0, c1, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (B, z_dim) or (B, 1, h, w) -> (B, c0, 7, 7)
        h = self.project(z.flatten(1)).view(-1, self.channels[0], 7, 7)
        # (B, c0, 7, 7) -> (B, c1, 14, 14) -> (B, 1, 28, 28)
        return self.net(h)


class ConvCritic(nn.Module):
    """v: an image -> one scalar per image, by convolutions, no final activation.

    Two strided convolutions (kernel 4, stride 2, padding 1) halve the side
    to 14x14 with ``channels[0]`` maps and to 7x7 with ``channels[1]``, each
    followed by ``activation`` (LeakyReLU(0.2) by default, as in DCGAN's
    discriminator); a linear layer reads the scalar off the flattened maps.
    There is no batch normalisation, so each image's value depends on that
    image only and the R1 penalty's double backward is per image.

    Shapes, with c0, c1 = ``channels``::

        (B, 1, 28, 28)
        Conv2d(1, c0)   -> (B, c0, 14, 14)
        Conv2d(c0, c1)  -> (B, c1, 7, 7) -> flatten -> (B, c1 * 49)
        Linear          -> (B,)

    With the default channels (16, 32) it has 10,065 parameters, against
    533,505 for the MLP critic with hidden widths 512-256: far fewer weights,
    but more arithmetic per image, since every weight of a convolution is
    used at every position.
    """

    def __init__(
        self, channels: Sequence[int] = (16, 32), activation: str = "leaky_relu"
    ):
        super().__init__()
        c0, c1 = channels
        self.channels = (c0, c1)
        self.net = nn.Sequential(
            nn.Conv2d(1, c0, 4, stride=2, padding=1),
            make_activation(activation),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1),
            make_activation(activation),
            nn.Flatten(),
            nn.Linear(c1 * 7 * 7, 1),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # (B, 1, 28, 28), or (B, 784) flattened -> (B,)
        return self.net(y.reshape(-1, *IMAGE_SHAPE)).squeeze(1)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
