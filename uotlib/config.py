"""The typed training configuration and its TOML loader.

Every hyperparameter has a one-line reason next to its default. Loading
rejects unknown keys and wrong types with a message naming the key, so a
typo in a TOML file fails before any training starts.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .losses import PSI_STAR
from .models import ACTIVATIONS

METHODS = ("gan", "uot")
ARCHS = ("mlp", "conv")
SOURCES = ("upsample", "image")
R1_POINTS = ("real", "fake")


class ConfigError(ValueError):
    """A configuration value or key is not valid."""


@dataclass
class EMASpec:
    """One moving average of the generator kept during training."""

    # 0.9999 is the official UOTM setting and the report's
    decay: float = 0.9999
    # off by default, as in the official code; see uotlib.ema for the schedule
    warmup: bool = False

    @property
    def label(self) -> str:
        return f"ema{self.decay:g}" + ("w" if self.warmup else "")


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (GAN or UOT)."""

    # "gan" (non-saturating logistic loss) or "uot" (semi-dual UOT, UOTM)
    method: str = "uot"
    # the report's longest run
    epochs: int = 100
    # the report's batch size and the official UOTM one for MNIST-sized data
    batch_size: int = 128
    # Adam for T; 2e-4 trains the fixed MLP, the CIFAR-10 1.6e-4 collapsed it
    lr_g: float = 2e-4
    # Adam for v (or D); same rate as T, measured to avoid mode collapse
    lr_d: float = 2e-4
    # (0.5, 0.999): with the CIFAR-10 (0.5, 0.9) UOTM collapsed to one digit
    betas: tuple[float, float] = (0.5, 0.999)
    # potential updates per generator update, 1 as in the official code
    d_steps: int = 1
    # noise: "image" draws a 28x28 Gaussian image, so x and T(x) share a
    # space, as in the official code; it gave a lower FID than "upsample" at
    # epochs 2, 4 and 6 of a probe (python -m uotlib probe-source)
    source: str = "image"
    # with source = "upsample": 10x10 = 100 noise values upsampled to 28x28
    z_side: int = 10
    # hidden widths of the fixed generator
    g_hidden: tuple[int, ...] = (256, 512, 1024)
    # hidden widths of the potential / discriminator
    d_hidden: tuple[int, ...] = (512, 256)
    # activation of the potential / discriminator
    d_activation: str = "leaky_relu"
    # generator: "mlp" (the report's fixed one) or "conv" (small, DCGAN-like)
    g_arch: str = "mlp"
    # potential / discriminator: "mlp" or "conv"
    d_arch: str = "mlp"
    # with g_arch = "conv": channels of its 7x7 and 14x14 feature maps; with
    # (64, 32) an epoch cost about 4x the MLP's on one CPU thread, with these
    # about 2x (measured on this project's 2-core machine)
    g_channels: tuple[int, ...] = (32, 16)
    # with d_arch = "conv": channels of its 14x14 and 7x7 feature maps
    d_channels: tuple[int, ...] = (16, 32)
    # share of the training set made of Fashion-MNIST images (outlier study)
    outlier_fraction: float = 0.0
    # digit kept at a share minority_keep of its images; -1 keeps all digits
    minority_digit: int = -1
    # share of minority_digit's training images kept (class imbalance study)
    minority_keep: float = 1.0
    # seed of the outlier and minority draws, separate from the training seed
    # so that every method and seed of a study trains on the same images
    data_seed: int = 0
    # cost weight: tau * ||x - T(x)||^2 summed over 784 pixels
    tau: float = 0.001
    # conjugate entropy relaxing the source marginal (official default)
    psi1: str = "softplus"
    # conjugate entropy relaxing the target marginal (official default)
    psi2: str = "softplus"
    # R1 weight lambda in lambda/2 E||grad v||^2; 0 switches it off
    r1_lambda: float = 0.2
    # where R1 is taken: "real" data (official) or "fake" generated points
    r1_at: str = "real"
    # generator averages; evaluated next to the raw generator
    ema: list[EMASpec] = field(default_factory=list)
    # evaluate FID and friends every k epochs (and at the last epoch)
    eval_every: int = 10
    # generated samples per evaluation, against the 10,000 test images
    n_eval: int = 10000
    # epochs whose generator (raw and EMA) is kept as a small snapshot file
    snapshot_epochs: list[int] = field(default_factory=list)
    # bf16 autocast; off because CPUs without AVX-512 BF16 (such as the AMD
    # EPYC that built this book) run bf16 matmuls about 13x slower, see bench
    bf16: bool = False
    # seed of torch, numpy and of the training generator's noise stream
    seed: int = 0
    # "auto" picks CUDA when present, else CPU
    device: str = "auto"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.g_hidden = tuple(self.g_hidden)
        self.d_hidden = tuple(self.d_hidden)
        self.g_channels = tuple(self.g_channels)
        self.d_channels = tuple(self.d_channels)
        self.ema = [
            e if isinstance(e, EMASpec) else _build(EMASpec, e) for e in self.ema
        ]
        self.snapshot_epochs = list(self.snapshot_epochs)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid value."""
        _choice("method", self.method, METHODS)
        _choice("source", self.source, SOURCES)
        _choice("r1_at", self.r1_at, R1_POINTS)
        _choice("psi1", self.psi1, tuple(PSI_STAR))
        _choice("psi2", self.psi2, tuple(PSI_STAR))
        _choice("d_activation", self.d_activation, tuple(ACTIVATIONS))
        _choice("g_arch", self.g_arch, ARCHS)
        _choice("d_arch", self.d_arch, ARCHS)
        for name in ("g_channels", "d_channels"):
            value = getattr(self, name)
            if len(value) != 2 or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in value
            ):
                raise ConfigError(
                    f"{name} must be two positive integers, got {value!r}"
                )
        if not 0 <= self.outlier_fraction < 0.5:
            raise ConfigError(
                f"outlier_fraction must lie in [0, 0.5), got {self.outlier_fraction!r}"
            )
        if self.minority_digit not in range(-1, 10):
            raise ConfigError(
                "minority_digit must be a digit 0-9, or -1 for none, got "
                f"{self.minority_digit!r}"
            )
        if not 0 < self.minority_keep <= 1:
            raise ConfigError(
                f"minority_keep must lie in (0, 1], got {self.minority_keep!r}"
            )
        if not isinstance(self.data_seed, int) or self.data_seed < 0:
            raise ConfigError(
                f"data_seed must be a non-negative integer, got {self.data_seed!r}"
            )
        for name in (
            "epochs",
            "batch_size",
            "d_steps",
            "z_side",
            "eval_every",
            "n_eval",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"{name} must be positive, got {getattr(self, name)!r}"
                )
        if self.tau < 0 or self.r1_lambda < 0:
            raise ConfigError(
                f"tau and r1_lambda must be >= 0, got tau = {self.tau!r} and "
                f"r1_lambda = {self.r1_lambda!r}"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(
                f"betas must be two numbers in [0, 1), got {self.betas!r}"
            )
        for spec in self.ema:
            if not 0 <= spec.decay <= 1:
                raise ConfigError(f"ema decay must lie in [0, 1], got {spec.decay!r}")
        for epoch in self.snapshot_epochs:
            if not 1 <= epoch <= self.epochs:
                raise ConfigError(
                    f"snapshot epoch {epoch!r} is outside 1..{self.epochs} (epochs)"
                )

    @property
    def z_dim(self) -> int:
        """Length of the generator's input vector."""
        return 28 * 28 if self.source == "image" else self.z_side**2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(
            f"{name} = {value!r} is not valid; expected one of: {', '.join(valid)}"
        )


def _build(cls, data: dict[str, Any]):
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} needs a table of keys, got {data!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {', '.join(unknown)}; "
            f"valid keys: {', '.join(known)}"
        )
    for key, value in data.items():
        default = known[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        if isinstance(default, float) and isinstance(value, bool | str):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
    return cls(**data)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a plain dict, rejecting unknown keys."""
    return _build(TrainConfig, dict(data))


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML file whose top-level keys are :class:`TrainConfig` fields."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from error
    try:
        return from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
