"""One training loop for the GAN baseline and for UOTM.

The loop holds the whole training split as one tensor on the device, draws
every random number from one ``torch.Generator`` whose state goes into the
checkpoint, and writes an atomic checkpoint (write to a temporary file, then
rename) after every epoch. A killed run therefore resumes from its last
epoch and, on CPU with the same seed and thread count, ends bit-identical to
an uninterrupted run.

Files written to ``out_dir``:

* ``checkpoint.pt``: models, optimisers, EMAs, RNG state, config, epoch.
* ``metrics.json``: the config, losses per epoch and every evaluation.
* ``samples.png`` (and ``samples_<ema>.png``): 8x8 grids from fixed noise.
* ``generator_e<E>.pt``: half-precision generator snapshots (raw and EMA) at
  the configured snapshot epochs; small enough to commit.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import TrainConfig, from_dict
from .data import ImageSet, training_set
from .ema import EMA
from .losses import (
    gan_discriminator_loss,
    gan_generator_loss,
    get_psi_star,
    transport_cost,
    uot_generator_loss,
    uot_potential_loss,
)
from .models import ConvCritic, ConvGenerator, MLPCritic, MLPGenerator
from .penalty import r1_penalty

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"

# (generator, sample_source) -> metrics of that generator
Evaluator = Callable[[nn.Module, Callable[[int, torch.Generator], torch.Tensor]], dict]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Source:
    """The source distribution mu of the transport problem.

    ``"upsample"`` draws ``z_side x z_side`` standard normal values and, for
    the cost, upsamples them bicubically to 28x28 (as OTM does); ``"image"``
    draws a 28x28 standard normal image directly (as the official UOTM code
    does), so x and T(x) share a space without any embedding.
    """

    kind: str
    z_side: int

    @property
    def z_dim(self) -> int:
        return 28 * 28 if self.kind == "image" else self.z_side**2

    def sample(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """n source points, shape (n, z_dim), on ``rng``'s device."""
        return torch.randn(n, self.z_dim, generator=rng, device=rng.device)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """Source points in image space (n, 1, 28, 28), where the cost is taken."""
        if self.kind == "image":
            return z.view(-1, 1, 28, 28)
        grid = z.view(-1, 1, self.z_side, self.z_side)
        return F.interpolate(grid, size=(28, 28), mode="bicubic", align_corners=False)


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present and asked for ("auto" or "cuda"), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device = 'cuda' was asked for but CUDA is not available")
    return torch.device(name)


def build_generator(config: TrainConfig) -> nn.Module:
    """T of the architecture ``config.g_arch``: an MLP or a conv generator.

    :class:`MLPGenerator` is sized by ``g_hidden``, :class:`ConvGenerator` by
    ``g_channels``. Used both to train and to load a checkpoint back, so a
    checkpoint's stored config rebuilds the class its weights came from;
    configs saved before ``g_arch`` existed default to "mlp", which they were.
    """
    if config.g_arch == "conv":
        return ConvGenerator(config.z_dim, config.g_channels)
    return MLPGenerator(config.z_dim, config.g_hidden)


def build_critic(config: TrainConfig) -> nn.Module:
    """v (potential or discriminator) of the architecture ``config.d_arch``.

    :class:`MLPCritic` is sized by ``d_hidden``, :class:`ConvCritic` by
    ``d_channels``; both use ``d_activation``.
    """
    if config.d_arch == "conv":
        return ConvCritic(config.d_channels, config.d_activation)
    return MLPCritic(config.d_hidden, config.d_activation)


def build_models(config: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """The generator T and the critic v that ``config`` asks for."""
    return build_generator(config), build_critic(config)


def seed_all(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_json(data: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, path)


class Trainer:
    """State of one run: models, optimisers, EMAs and the noise stream."""

    def __init__(self, config: TrainConfig, device: torch.device | None = None):
        self.config = config
        self.device = device or pick_device(config.device)
        seed_all(config.seed)
        self.source = Source(config.source, config.z_side)
        self.generator, self.critic = build_models(config)
        self.generator.to(self.device)
        self.critic.to(self.device)
        self.opt_g = torch.optim.Adam(
            self.generator.parameters(), lr=config.lr_g, betas=config.betas
        )
        self.opt_d = torch.optim.Adam(
            self.critic.parameters(), lr=config.lr_d, betas=config.betas
        )
        self.emas = {
            spec.label: EMA(self.generator, spec.decay, spec.warmup)
            for spec in config.ema
        }
        self.rng = torch.Generator(device=self.device).manual_seed(config.seed)
        self.psi1 = get_psi_star(config.psi1)
        self.psi2 = get_psi_star(config.psi2)
        self.epoch = 0
        self.step = 0

    def autocast(self):
        if not self.config.bf16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def sample_source(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return self.source.sample(n, rng)

    # --- one step of each method -------------------------------------------------

    def critic_loss(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of v (or D) on a batch y of real images; returns (loss, penalty)."""
        cfg = self.config
        z = self.source.sample(y.shape[0], self.rng)
        with torch.no_grad(), self.autocast():
            fake = self.generator(z)
        with self.autocast():
            v_fake = self.critic(fake).float()
            v_real = self.critic(y).float()
            if cfg.method == "uot":
                cost = transport_cost(self.source.embed(z), fake.float(), cfg.tau)
                loss = uot_potential_loss(v_fake, v_real, cost, self.psi1, self.psi2)
            else:
                loss = gan_discriminator_loss(v_fake, v_real)

        penalty = torch.zeros((), device=y.device)
        if cfg.r1_lambda > 0:
            points = y if cfg.r1_at == "real" else fake
            with self.autocast():
                penalty = r1_penalty(self.critic, points, cfg.r1_lambda).float()
        return loss, penalty

    def generator_loss(self, n: int) -> torch.Tensor:
        cfg = self.config
        z = self.source.sample(n, self.rng)
        with self.autocast():
            fake = self.generator(z)
            v_fake = self.critic(fake).float()
            if cfg.method == "uot":
                cost = transport_cost(self.source.embed(z), fake.float(), cfg.tau)
                return uot_generator_loss(v_fake, cost)
            return gan_generator_loss(v_fake)

    def train_step(self, y: torch.Tensor) -> dict[str, float]:
        """d_steps updates of the critic on ``y``, then one generator update."""
        for _ in range(self.config.d_steps):
            loss_d, penalty = self.critic_loss(y)
            self.opt_d.zero_grad(set_to_none=True)
            (loss_d + penalty).backward()
            self.opt_d.step()

        self.critic.requires_grad_(False)
        loss_g = self.generator_loss(y.shape[0])
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.critic.requires_grad_(True)

        for ema in self.emas.values():
            ema.update(self.generator)
        self.step += 1

        # one host sync per step: on CPU it costs nothing, and a NaN is caught
        # at the step where it appears instead of at the end of the epoch
        values = {
            "loss_d": loss_d.item(),
            "penalty": penalty.item(),
            "loss_g": loss_g.item(),
        }
        for name, value in values.items():
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"{name} = {value} at epoch {self.epoch + 1}, step {self.step}"
                )
        return values

    def train_epoch(self, data: ImageSet, progress: bool = False) -> dict[str, float]:
        """One pass over a random permutation of ``data``, dropping the last
        partial batch."""
        self.generator.train()
        self.critic.train()
        n, bs = len(data), self.config.batch_size
        perm = torch.randperm(n, generator=self.rng, device=self.rng.device)
        sums = {"loss_d": 0.0, "penalty": 0.0, "loss_g": 0.0}
        batches = range(n // bs)
        bar = tqdm(
            batches, desc=f"epoch {self.epoch + 1}", leave=False, disable=not progress
        )
        for b in bar:
            values = self.train_step(data.images[perm[b * bs : (b + 1) * bs]])
            for key in sums:
                sums[key] += values[key]
        self.epoch += 1
        return {key: total / len(batches) for key, total in sums.items()}

    # --- state ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "emas": {label: ema.state_dict() for label, ema in self.emas.items()},
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = from_dict(state["config"])
        if saved != self.config:
            raise ValueError(
                "checkpoint was written by a different config; delete it or use "
                f"another output folder (saved {saved}, asked {self.config})"
            )
        self.epoch = state["epoch"]
        self.step = state["step"]
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for label, ema in self.emas.items():
            ema.load_state_dict(state["emas"][label])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])

    def generators(self) -> dict[str, nn.Module]:
        """The raw generator and each EMA, by label ("raw", "ema0.9999", ...)."""
        return {"raw": self.generator, **{k: e.module for k, e in self.emas.items()}}

    def snapshot(self) -> dict[str, Any]:
        """Half-precision generator weights (raw and EMA) with the config."""
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "generators": {
                label: {k: v.half() for k, v in g.state_dict().items()}
                for label, g in self.generators().items()
            },
        }


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> None:
    """Save images in [-1, 1] of shape (n, 1, 28, 28) as one PNG grid."""
    from torchvision.utils import save_image

    save_image(
        images.float().add(1).div(2).clamp(0, 1), str(path), nrow=nrow, padding=2
    )


@torch.no_grad()
def generate(
    generator: nn.Module,
    sample_source: Callable[[int, torch.Generator], torch.Tensor],
    n: int,
    seed: int,
    device: torch.device | str = "cpu",
    batch_size: int = 1000,
) -> torch.Tensor:
    """n images in [-1, 1] from a fixed noise seed, shape (n, 1, 28, 28)."""
    rng = torch.Generator(device=device).manual_seed(seed)
    was_training = generator.training
    generator.eval()
    out = [
        generator(sample_source(min(batch_size, n - i), rng)).float().cpu()
        for i in range(0, n, batch_size)
    ]
    generator.train(was_training)
    return torch.cat(out)


def default_evaluator(
    n: int,
    device: torch.device,
    with_outlier_share: bool = False,
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Evaluator:
    """FID, precision, recall and class coverage of n samples (uotlib.fid).

    ``with_outlier_share`` adds the share of samples that look like
    Fashion-MNIST; :func:`train` asks for it when the run trains with outliers.
    ``embed`` (the run's ``Source.embed``) adds the mean squared distance
    between the noise and its image, tau times which is the transport cost.
    """
    from .fid import evaluate_generator

    def evaluate(generator, sample_source):
        return evaluate_generator(
            generator,
            sample_source=sample_source,
            n=n,
            device=device,
            with_outlier_share=with_outlier_share,
            embed=embed,
        )

    return evaluate


def train(
    config: TrainConfig,
    out_dir: str | Path,
    evaluator: Evaluator | None = None,
    data: ImageSet | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run in ``out_dir``; return its metrics.

    ``evaluator`` maps (generator, sample_source) to a dict of metrics; the
    default computes FID and friends with :mod:`uotlib.fid`. Pass ``lambda
    g, s: {}`` to skip evaluation. ``stop_after`` ends the call after that
    many epochs of this call (used to test resuming); the run stays resumable.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(out_dir):
        return _train_locked(config, out_dir, evaluator, data, progress, stop_after)


@contextmanager
def run_lock(out_dir: Path):
    """Hold an exclusive lock on ``out_dir`` for the duration of training.

    Two processes resuming the same run would overwrite each other's
    checkpoints; the second one fails here instead. The lock is released by
    the operating system when the process dies, so a killed run never leaves
    a stale lock behind.
    """
    handle = open(out_dir / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(
            f"{out_dir} is being trained by another process; wait for it or stop it"
        ) from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _train_locked(config, out_dir, evaluator, data, progress, stop_after):
    trainer = Trainer(config)
    device = trainer.device
    if data is None:
        data = training_set(config, device=device)
    else:
        data = data.to(device)
    if evaluator is None:
        evaluator = default_evaluator(
            config.n_eval,
            device,
            with_outlier_share=config.outlier_fraction > 0,
            embed=trainer.source.embed,
        )

    # the config as JSON will read it back (tuples become lists)
    plain_config = json.loads(json.dumps(config.to_dict()))
    metrics: dict[str, Any] = {"config": plain_config, "epochs": [], "evals": []}
    checkpoint = out_dir / CHECKPOINT
    if checkpoint.exists():
        trainer.load_state_dict(
            torch.load(checkpoint, map_location=device, weights_only=False)
        )
        metrics = json.loads((out_dir / METRICS).read_text())
        metrics["epochs"] = metrics["epochs"][: trainer.epoch]
        metrics["evals"] = [e for e in metrics["evals"] if e["epoch"] <= trainer.epoch]
        log.info("resuming %s at epoch %d", out_dir, trainer.epoch)

    grid_rng_seed = 1234
    epochs_this_call = 0
    while trainer.epoch < config.epochs:
        start = time.perf_counter()
        losses = trainer.train_epoch(data, progress=progress)
        epoch = trainer.epoch
        metrics["epochs"].append(
            {"epoch": epoch, "seconds": time.perf_counter() - start, **losses}
        )
        log.info("%s epoch %d: %s", out_dir.name, epoch, losses)

        if epoch % config.eval_every == 0 or epoch == config.epochs:
            record = {"epoch": epoch}
            for label, g in trainer.generators().items():
                record[label] = evaluator(g, trainer.sample_source)
                grid = generate(g, trainer.sample_source, 64, grid_rng_seed, device)
                suffix = "" if label == "raw" else f"_{label}"
                save_grid(grid, out_dir / f"samples{suffix}.png")
            metrics["evals"].append(record)
            log.info("%s epoch %d eval: %s", out_dir.name, epoch, record)

        if epoch in config.snapshot_epochs or epoch == config.epochs:
            atomic_save(trainer.snapshot(), out_dir / f"generator_e{epoch}.pt")
        atomic_write_json(metrics, out_dir / METRICS)
        atomic_save(trainer.state_dict(), checkpoint)

        epochs_this_call += 1
        if stop_after is not None and epochs_this_call >= stop_after:
            break
    return metrics


def load_generator_from_checkpoint(
    path: str | Path, ema: bool | str = False, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Callable[[int, torch.Generator], torch.Tensor]]:
    """A generator and its noise sampler from a checkpoint or snapshot file.

    ``ema`` is False for the raw generator, True for the first EMA of the
    config, or an EMA label such as ``"ema0.999w"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = from_dict(state["config"])
    if "generators" in state:
        weights = state["generators"]
    else:
        weights = {"raw": state["generator"]}
        for label, ema_state in state["emas"].items():
            weights[label] = {
                k.removeprefix("module."): v
                for k, v in ema_state.items()
                if k != "step"
            }
    if ema is False:
        label = "raw"
    elif ema is True:
        if not config.ema:
            raise ValueError(f"{path} was trained without an EMA; drop --ema")
        label = config.ema[0].label
    else:
        label = ema
    if label not in weights:
        raise ValueError(f"{path} holds generators {sorted(weights)}, not {label!r}")
    generator = build_generator(config)
    generator.load_state_dict({k: v.float() for k, v in weights[label].items()})
    generator.to(device).eval()
    source = Source(config.source, config.z_side)
    return generator, source.sample
