"""``python -m uotlib bench``: what a training step costs, and why.

For the GAN and the UOT step, in fp32 and (optionally) bf16 autocast, it
times

* the library's step (:meth:`uotlib.train.Trainer.train_epoch` over a
  subset of MNIST held in memory, so batch indexing and the EMA update are
  included), and
* a bare loop doing the same forward and backward passes on one batch
  tensor, with nothing else,

in alternating blocks (see :func:`time_case`),

and next to them the matmul throughput (GFLOP/s) of this process, so a slow
step can be told apart from a slow machine. Seconds per epoch are the step
time times the 468 full batches of 60,000 images at batch size 128.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

import torch

from .config import TrainConfig
from .data import ImageSet, load_mnist
from .losses import (
    gan_discriminator_loss,
    gan_generator_loss,
    get_psi_star,
    transport_cost,
    uot_generator_loss,
    uot_potential_loss,
)
from .penalty import r1_penalty
from .train import Trainer

STEPS_PER_EPOCH = 60000 // 128


def matmul_gflops(dtype: torch.dtype, size: int = 1024, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of square matmuls of ``size`` in ``dtype``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b  # warm-up: thread pool and kernel selection
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def bare_step(trainer: Trainer, y: torch.Tensor) -> None:
    """The passes of one training step written inline, without the library."""
    cfg, g, v = trainer.config, trainer.generator, trainer.critic
    psi1, psi2 = get_psi_star(cfg.psi1), get_psi_star(cfg.psi2)
    z = torch.randn(y.shape[0], cfg.z_dim)

    with torch.no_grad(), trainer.autocast():
        fake = g(z)
    with trainer.autocast():
        if cfg.method == "uot":
            cost = transport_cost(trainer.source.embed(z), fake.float(), cfg.tau)
            loss = uot_potential_loss(v(fake).float(), v(y).float(), cost, psi1, psi2)
        else:
            loss = gan_discriminator_loss(v(fake).float(), v(y).float())
        loss = loss + r1_penalty(v, y, cfg.r1_lambda).float()
    trainer.opt_d.zero_grad()
    loss.backward()
    trainer.opt_d.step()

    v.requires_grad_(False)
    z = torch.randn(y.shape[0], cfg.z_dim)
    with trainer.autocast():
        fake = g(z)
        if cfg.method == "uot":
            cost = transport_cost(trainer.source.embed(z), fake.float(), cfg.tau)
            loss = uot_generator_loss(v(fake).float(), cost)
        else:
            loss = gan_generator_loss(v(fake).float())
    trainer.opt_g.zero_grad()
    loss.backward()
    trainer.opt_g.step()
    v.requires_grad_(True)


def time_case(
    method: str, bf16: bool, data: ImageSet, steps: int, rounds: int = 5
) -> dict[str, float]:
    """Median ms per step of the library and of the bare loop, interleaved.

    The two are timed in alternating blocks of ``steps`` steps, ``rounds``
    times each, and the medians compared, so a change of load on the machine
    during the bench hits both alike instead of biasing the ratio.
    """
    config = TrainConfig(method=method, bf16=bf16, ema=[{"decay": 0.9999}])
    bs = config.batch_size
    subset = ImageSet(data.images[: bs * steps], data.labels[: bs * steps])
    library = Trainer(config, device=torch.device("cpu"))
    bare = Trainer(config, device=torch.device("cpu"))
    y = subset.images[:bs]

    # warm-up: allocator, thread pool and autograd graph caches
    library.train_epoch(ImageSet(subset.images[: 2 * bs], subset.labels[: 2 * bs]))
    for _ in range(2):
        bare_step(bare, y)

    library_times, bare_times = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        library.train_epoch(subset)
        library_times.append((time.perf_counter() - start) / steps * 1e3)
        start = time.perf_counter()
        for _ in range(steps):
            bare_step(bare, y)
        bare_times.append((time.perf_counter() - start) / steps * 1e3)

    library_ms = statistics.median(library_times)
    bare_ms = statistics.median(bare_times)
    return {
        "method": method,
        "bf16": bf16,
        "rounds": rounds,
        "library_ms_per_step": library_ms,
        "bare_ms_per_step": bare_ms,
        "overhead_ratio": library_ms / bare_ms,
        "library_s_per_epoch": library_ms * STEPS_PER_EPOCH / 1e3,
    }


def time_evaluation(data: ImageSet, n: int = 10000) -> float:
    """Seconds to evaluate n images: features, statistics, FID, precision, recall.

    The reference statistics are loaded (or computed and cached) first, as
    they are once per process in training; the timed call is what every
    further evaluation costs.
    """
    from .fid import evaluate_images, reference_statistics

    reference_statistics()
    start = time.perf_counter()
    evaluate_images(data.images[:n])
    return time.perf_counter() - start


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, or what platform knows."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_bench(steps: int = 10, bf16: bool = True) -> dict[str, Any]:
    """Time every case; bf16 cases run 3 steps a block (they are slow here)."""
    data = load_mnist(train=True)
    cases = [time_case(m, False, data, steps) for m in ("gan", "uot")]
    if bf16:
        cases += [time_case(m, True, data, 3, rounds=3) for m in ("gan", "uot")]
    report: dict[str, Any] = {
        "machine": cpu_name(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        # other work on the machine slows every case alike; recorded so that a
        # reader can tell a loaded machine's figures from an idle one's
        "load_average_1min": os.getloadavg()[0],
        "steps": steps,
        "matmul_gflops_fp32": matmul_gflops(torch.float32),
        "evaluate_10000_images_s": time_evaluation(data),
        "cases": cases,
    }
    if bf16:
        report["matmul_gflops_bf16"] = matmul_gflops(torch.bfloat16)
        by = {(c["method"], c["bf16"]): c for c in cases}
        report["bf16_epoch_speedup"] = {
            m: by[(m, False)]["library_s_per_epoch"]
            / by[(m, True)]["library_s_per_epoch"]
            for m in ("gan", "uot")
        }
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"torch {report['torch']}, {report['threads']} threads, "
        f"load average {report.get('load_average_1min', float('nan')):.1f}, "
        f"matmul fp32 {report['matmul_gflops_fp32']:.1f} GFLOP/s"
        + (
            f", bf16 {report['matmul_gflops_bf16']:.1f} GFLOP/s"
            if "matmul_gflops_bf16" in report
            else ""
        ),
        f"{'method':6} {'dtype':5} {'library ms':>10} {'bare ms':>8} "
        f"{'ratio':>6} {'s/epoch':>8}",
    ]
    for c in report["cases"]:
        lines.append(
            f"{c['method']:6} {'bf16' if c['bf16'] else 'fp32':5} "
            f"{c['library_ms_per_step']:10.1f} {c['bare_ms_per_step']:8.1f} "
            f"{c['overhead_ratio']:6.2f} {c['library_s_per_epoch']:8.1f}"
        )
    if "evaluate_10000_images_s" in report:
        lines.append(
            "evaluating 10,000 images (features, FID, precision, recall): "
            f"{report['evaluate_10000_images_s']:.1f} s"
        )
    for method, speedup in report.get("bf16_epoch_speedup", {}).items():
        lines.append(f"bf16 epoch speed-up for {method}: {speedup:.2f}x")
    return "\n".join(lines)
