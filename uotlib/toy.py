"""A two-dimensional toy of the semi-dual generative model (OTM and UOTM).

The source is a standard Gaussian in the plane; the target is a ring of
Gaussian modes plus a small cluster of outliers far away. Training the
potential ``v`` and the map ``T`` with the losses of :mod:`uotlib.losses`
shows in seconds what the chapter "From the semi-dual to a generative
model" claims: with ``linear`` Psi* on both sides (balanced OT, OTM) the
generator must send mass to the outliers, while a relaxed target marginal
(UOTM, e.g. ``softplus`` or ``kl``) lets it leave them out.

Everything here runs on the CPU and is deterministic for a given seed: the
samplers draw from a :class:`torch.Generator` and the networks are
initialised inside a forked RNG, so the global torch seed is left alone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
from torch import nn

from uotlib.losses import (
    PSI_STAR,
    get_psi_star,
    transport_cost,
    uot_generator_loss,
    uot_potential_loss,
)
from uotlib.penalty import r1_penalty

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyConfig:
    """Everything that defines one toy run; every default has its reason.

    The defaults give a UOTM run; :meth:`otm` returns the balanced twin.
    """

    # the problem
    n_modes: int = 8  # enough modes on the ring to see mode dropping
    ring_radius: float = 2.0  # modes about two source standard deviations out
    mode_std: float = 0.15  # modes well separated: gap 2 sin(pi/8) r = 1.5 >> std
    outlier_fraction: float = 0.03  # "a few percent": visible, yet a minority
    outlier_center: tuple[float, float] = (5.0, 5.0)  # 7 units out: far from all
    outlier_std: float = 0.2  # a tight cluster, so "near the outliers" is clear

    # the semi-dual UOT objective
    tau: float = 0.2  # random pairs then cost 1.5 on average, as 1e-3 gives on MNIST
    psi1: str = "softplus"  # the official UOTM choice for the source side
    psi2: str = "softplus"  # a relaxed target marginal: outliers may be dropped
    r1_lambda: float = 0.2  # the official UOTM weight; biases the cost by 2 lam tau

    # the optimiser
    hidden: int = 64  # two hidden layers of this width: ample for 2-D maps
    lr_t: float = 2e-3  # twice Adam's usual 1e-3: sharper modes within `steps`
    lr_v: float = 2e-3  # equal to lr_t, as in the MNIST runs
    betas: tuple[float, float] = (0.5, 0.9)  # the official UOTM (CIFAR-10) values
    steps: int = 2000  # the cost curves have levelled off well before
    batch_size: int = 256  # about 8 outliers per batch at 3 %
    n_eval: int = 4000  # held-out samples for the metrics: 0.025 % resolution
    seed: int = 0  # one seed drives data, initialisation and evaluation

    def __post_init__(self) -> None:
        for name in ("n_modes", "hidden", "steps", "batch_size", "n_eval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("ring_radius", "mode_std", "outlier_std", "lr_t", "lr_v"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        for name in ("tau", "r1_lambda"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, got {value!r}")
        if not 0.0 <= self.outlier_fraction < 1.0:
            raise ValueError(
                f"outlier_fraction must lie in [0, 1), got {self.outlier_fraction!r}"
            )
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if len(self.outlier_center) != 2:
            raise ValueError(
                f"outlier_center must be a point (x, y), got {self.outlier_center!r}"
            )
        for name in ("psi1", "psi2"):
            # get_psi_star's message already lists the valid names
            try:
                get_psi_star(getattr(self, name))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None

    def otm(self) -> ToyConfig:
        """The same run with ``linear`` Psi* on both sides: balanced OT (OTM)."""
        return self.replace(psi1="linear", psi2="linear")

    def replace(self, **changes: object) -> ToyConfig:
        """A copy with ``changes`` applied; unknown field names are an error."""
        known = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(
                f"unknown ToyConfig field(s) {unknown}; expected some of: "
                f"{', '.join(known)}"
            )
        return dataclasses.replace(self, **changes)


def mode_centers(config: ToyConfig) -> torch.Tensor:
    """Centres of the ring's modes, shape (n_modes, 2), the first on the x-axis."""
    angle = 2.0 * math.pi * torch.arange(config.n_modes) / config.n_modes
    return config.ring_radius * torch.stack([angle.cos(), angle.sin()], dim=1)


def sample_source(n: int, generator: torch.Generator) -> torch.Tensor:
    """x ~ mu = N(0, I_2), shape (n, 2)."""
    return torch.randn(n, 2, generator=generator)


def sample_target(
    n: int, config: ToyConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """y ~ nu, the ring of modes with outliers; shape (n, 2).

    Each point is an outlier with probability ``outlier_fraction`` and
    otherwise belongs to a mode chosen uniformly. Returns the points and a
    boolean mask of shape (n,) that is True for the outliers.
    """
    is_outlier = torch.rand(n, generator=generator) < config.outlier_fraction
    mode = torch.randint(config.n_modes, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator)

    inlier = mode_centers(config)[mode] + config.mode_std * noise
    center = torch.tensor(config.outlier_center)
    outlier = center + config.outlier_std * noise
    return torch.where(is_outlier[:, None], outlier, inlier), is_outlier


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden),
        nn.SiLU(),
        nn.Linear(hidden, hidden),
        nn.SiLU(),
        nn.Linear(hidden, d_out),
    )


class ToyMap(nn.Module):
    """T: R^2 -> R^2, an MLP with two hidden SiLU layers."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = _mlp(2, hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 2) -> (B, 2)
        return self.net(x)


class ToyPotential(nn.Module):
    """v: R^2 -> R, an MLP with two hidden SiLU layers and no output activation.

    SiLU rather than ReLU makes grad v smooth, and grad v is what R1 penalises.
    """

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = _mlp(2, hidden, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # (B, 2) -> (B,)
        return self.net(y).squeeze(1)


def cell_shares(samples: torch.Tensor, config: ToyConfig) -> torch.Tensor:
    """Share of the points (n, 2) in each nearest-centre cell, shape (n_modes + 1,).

    The plane is cut into the cells of the mode centres and of the outlier
    centre (the last entry): a point belongs to the centre nearest to it.
    On target samples the last entry estimates the outlier fraction and each
    mode's entry is about (1 - outlier_fraction) / n_modes.
    """
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape (n, 2), got {tuple(samples.shape)}")
    center = torch.tensor([config.outlier_center], dtype=samples.dtype)
    centers = torch.cat([mode_centers(config).to(samples.dtype), center])
    nearest = torch.cdist(samples, centers).argmin(dim=1)
    counts = torch.bincount(nearest, minlength=config.n_modes + 1)
    return counts.to(samples.dtype) / samples.shape[0]


def outlier_share(samples: torch.Tensor, config: ToyConfig) -> float:
    """Share of the points (n, 2) that land near the outliers.

    "Near" means in the outlier centre's cell of :func:`cell_shares`: closer
    to the outlier centre than to any mode centre.
    """
    return cell_shares(samples, config)[-1].item()


def off_support_share(
    samples: torch.Tensor, config: ToyConfig, k: float = 3.0
) -> float:
    """Share of the points (n, 2) farther than ``k`` standard deviations from
    the centre of their cell (a mode, or the outliers' centre).

    On target samples this is about exp(-k^2 / 2), 1.1 % for k = 3; a map
    that has not reached the target, such as one held near its source by a
    large cost weight, leaves many more points between the modes.
    """
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape (n, 2), got {tuple(samples.shape)}")
    center = torch.tensor([config.outlier_center], dtype=samples.dtype)
    centers = torch.cat([mode_centers(config).to(samples.dtype), center])
    stds = torch.full((config.n_modes + 1,), config.mode_std, dtype=samples.dtype)
    stds[-1] = config.outlier_std
    distance, nearest = torch.cdist(samples, centers).min(dim=1)
    return (distance > k * stds[nearest]).to(samples.dtype).mean().item()


def cell_total_variation(samples: torch.Tensor, config: ToyConfig) -> float:
    """Half the L1 distance between the cell shares of the points and the target's.

    0 when every mode and the outlier cluster get the mass the target gives
    them, whatever the points look like inside the cells; 1 at most.
    """
    target = torch.full(
        (config.n_modes + 1,), (1 - config.outlier_fraction) / config.n_modes
    )
    target[-1] = config.outlier_fraction
    return (
        0.5
        * (cell_shares(samples, config) - target.to(samples.dtype)).abs().sum().item()
    )


def mean_squared_displacement(x: torch.Tensor, tx: torch.Tensor) -> float:
    """E ||x - T(x)||^2 over a batch (B, 2): the cost [eq. uot-cost] at tau = 1."""
    return transport_cost(x, tx, 1.0).mean().item()


@dataclass
class ToyResult:
    """What :func:`train_toy` returns.

    Attributes:
        config: the run's configuration.
        T: the trained map, in eval mode.
        v: the trained potential, in eval mode.
        source: ``n_eval`` held-out source points x, shape (n_eval, 2).
        samples: their images T(x), shape (n_eval, 2).
        target: ``n_eval`` target points y drawn for comparison, (n_eval, 2).
        history: one value per step under ``"potential_loss"`` (L_v without
            R1), ``"r1"``, ``"generator_loss"`` (L_T) and ``"cost"`` (the
            batch mean of c(x, T(x)), tau included).
    """

    config: ToyConfig
    T: ToyMap
    v: ToyPotential
    source: torch.Tensor
    samples: torch.Tensor
    target: torch.Tensor
    history: dict[str, list[float]]

    def outlier_share(self) -> float:
        """Share of the generated samples that land near the outliers."""
        return outlier_share(self.samples, self.config)

    def mean_cost(self) -> float:
        """E ||x - T(x)||^2 over the held-out source points (tau left out)."""
        return mean_squared_displacement(self.source, self.samples)


def build_networks(config: ToyConfig) -> tuple[ToyMap, ToyPotential]:
    """T and v initialised from ``config.seed``, leaving the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        T = ToyMap(config.hidden)
        v = ToyPotential(config.hidden)
    return T, v


@contextmanager
def _one_thread() -> Iterator[None]:
    # Networks this small run fastest on one thread: on a shared two-core
    # machine, waking a second thread for each tiny matmul can cost more
    # than the matmul itself.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_toy(config: ToyConfig | None = None) -> ToyResult:
    """Train T and v on the toy with the semi-dual UOT losses (the UOTM steps).

    Each step first lowers the potential loss [eq. uot-potential-loss] plus
    R1 [eq. uot-r1] in v with T frozen, then lowers the generator loss
    [eq. uot-generator-loss] in T with v frozen, each on a fresh batch. With
    ``config.otm()`` (``linear`` on both sides) this is OTM's balanced
    semi-dual. The run uses one CPU thread and is deterministic for
    ``config.seed``; the global torch RNG is not touched.
    """
    config = ToyConfig() if config is None else config
    if not isinstance(config, ToyConfig):
        raise TypeError(f"train_toy needs a ToyConfig, got {type(config).__name__}")
    psi1 = get_psi_star(config.psi1)
    psi2 = get_psi_star(config.psi2)
    data = torch.Generator().manual_seed(config.seed)
    T, v = build_networks(config)
    opt_t = torch.optim.Adam(T.parameters(), lr=config.lr_t, betas=config.betas)
    opt_v = torch.optim.Adam(v.parameters(), lr=config.lr_v, betas=config.betas)
    history: dict[str, list[float]] = {
        "potential_loss": [],
        "r1": [],
        "generator_loss": [],
        "cost": [],
    }

    with _one_thread():
        for step in range(config.steps):
            # potential step: T(x) enters as data, so no graph through T
            x = sample_source(config.batch_size, data)
            y, _ = sample_target(config.batch_size, config, data)
            with torch.no_grad():
                tx = T(x)
            cost = transport_cost(x, tx, config.tau)
            loss_v = uot_potential_loss(v(tx), v(y), cost, psi1, psi2)
            r1 = r1_penalty(v, y, config.r1_lambda)
            opt_v.zero_grad(set_to_none=True)
            (loss_v + r1).backward()
            opt_v.step()

            # generator step: v is frozen, so no gradient is kept for it
            v.requires_grad_(False)
            x = sample_source(config.batch_size, data)
            tx = T(x)
            cost = transport_cost(x, tx, config.tau)
            loss_t = uot_generator_loss(v(tx), cost)
            opt_t.zero_grad(set_to_none=True)
            loss_t.backward()
            opt_t.step()
            v.requires_grad_(True)

            values = (loss_v.item(), r1.item(), loss_t.item(), cost.mean().item())
            if not all(math.isfinite(value) for value in values):
                raise FloatingPointError(
                    f"toy training diverged at step {step}: L_v = {values[0]}, "
                    f"L_T = {values[2]}; lower lr_v and lr_t or raise r1_lambda"
                )
            for key, value in zip(history, values, strict=True):
                history[key].append(value)

        T.eval()
        v.eval()
        evaluation = torch.Generator().manual_seed(config.seed + 1)
        source = sample_source(config.n_eval, evaluation)
        target, _ = sample_target(config.n_eval, config, evaluation)
        with torch.no_grad():
            samples = T(source)

    log.info(
        "toy %s/%s, tau %g: outlier share %.4f, E||x - T(x)||^2 %.3f",
        config.psi1,
        config.psi2,
        config.tau,
        outlier_share(samples, config),
        mean_squared_displacement(source, samples),
    )
    return ToyResult(config, T, v, source, samples, target, history)


def valid_psi_star_names() -> list[str]:
    """The names that ``ToyConfig.psi1`` and ``ToyConfig.psi2`` accept."""
    return sorted(PSI_STAR)
