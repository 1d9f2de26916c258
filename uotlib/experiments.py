"""The course report's table as named runs and rows.

A *run* is one training job; a *row* is a number of the report's table read
from a run at one epoch, from its raw generator or from an EMA. Rows that
differ only by epoch count or EMA share a run and are never trained twice:

| row                               | run      | epoch | generator    |
|-----------------------------------|----------|-------|--------------|
| GAN baseline                      | gan      | 100   | raw          |
| UOT baseline, 60 epochs           | uot      | 60    | raw          |
| UOT baseline, 100 epochs          | uot      | 100   | raw          |
| UOT, 100 epochs, Ψ* = exp         | uot-exp  | 100   | raw          |
| UOT + Ψ* = exp + EMA, 50 epochs   | uot-exp  | 50    | EMA 0.9999   |
| UOT + Ψ* = exp + EMA, 90 epochs   | uot-exp  | 90    | EMA 0.9999   |

The report does not give the GAN's epoch count; 100 gives it the same budget
as the longest UOT run. Its "UOT baseline" is read here as the official
UOTM default, ``softplus`` on both sides.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, EMASpec, TrainConfig, load_config
from .train import METRICS

# the EMA of the report first (its rows read it), then the two that the EMA
# chapter compares it with
EMA_STUDY = [EMASpec(0.9999), EMASpec(0.999), EMASpec(0.9999, warmup=True)]

# the table's settings with the sweep's best learning rate and the sweep's EMA
_LR5E4 = TrainConfig(
    lr_g=5e-4, lr_d=5e-4, epochs=100, ema=[EMASpec(0.999)], snapshot_epochs=[100]
)

RUNS: dict[str, TrainConfig] = {
    # the GAN keeps one average too, so that the tuned-UOT comparison can ask
    # whether EMA helps the GAN as much; an average never feeds back into
    # training, so the raw generator's trajectory is the same with or without
    "gan": TrainConfig(
        method="gan", epochs=100, ema=[EMASpec(0.999)], snapshot_epochs=[100]
    ),
    "uot": TrainConfig(method="uot", epochs=100, snapshot_epochs=[60, 100]),
    "uot-exp": TrainConfig(
        method="uot",
        psi1="exp",
        psi2="exp",
        epochs=100,
        ema=EMA_STUDY,
        snapshot_epochs=[50, 90, 100],
    ),
    # the full-length check of the sweep's best setting, a learning rate of
    # 5e-4 for both networks, and the GAN given the same rate, since the
    # sweep found that it helps the GAN as much (uotlib.sweep, chapter 10)
    "uot-lr5e-4": _LR5E4.replace(method="uot"),
    "gan-lr5e-4": _LR5E4.replace(method="gan"),
}


@dataclass(frozen=True)
class Row:
    """One line of the report's table and where this project reads it."""

    label: str
    # None for the rows this project adds to the report's table
    report_fid: float | None
    run: str
    epoch: int
    generator: str = "raw"


ROWS = [
    Row("GAN baseline", 29.78, "gan", 100),
    Row("UOT baseline, 60 epochs", 35.6, "uot", 60),
    Row("UOT baseline, 100 epochs", 46.8, "uot", 100),
    Row("UOT, 100 epochs, Ψ* = exp", 37.1, "uot-exp", 100),
    Row("UOT + Ψ* = exp + EMA, 50 epochs", 143.0, "uot-exp", 50, "ema0.9999"),
    Row("UOT + Ψ* = exp + EMA, 90 epochs", 136.0, "uot-exp", 90, "ema0.9999"),
]

# rows this project adds: the GAN given the same average as the tuned UOT, so
# that the comparison asks what UOT adds beyond EMA, and the tuned UOT
# settings: the EMA chapter's decay 0.999 on the exp run, and the learning
# rate that the sweep of uotlib.sweep ranked first
GAN_EMA_ROW = Row("GAN + EMA 0.999", None, "gan", 100, "ema0.999")
TUNED_ROW = Row("Tuned UOT: Ψ* = exp + EMA 0.999", None, "uot-exp", 100, "ema0.999")
# the sweep's best setting at full length, and the GAN trained the same way
LR_GAN_ROW = Row("GAN: lr 5e-4 + EMA 0.999", None, "gan-lr5e-4", 100, "ema0.999")
LR_TUNED_ROW = Row(
    "Tuned UOT: lr 5e-4 + EMA 0.999", None, "uot-lr5e-4", 100, "ema0.999"
)
EXTRA_ROWS = [GAN_EMA_ROW, TUNED_ROW, LR_GAN_ROW, LR_TUNED_ROW]
# the tuned UOT rows, each with the GAN given the same training and average:
# the comparison that asks what UOT adds beyond the tuning itself
TUNED_ROWS = [TUNED_ROW, LR_TUNED_ROW]
MATCHED_GAN = {TUNED_ROW: GAN_EMA_ROW, LR_TUNED_ROW: LR_GAN_ROW}
# the tuned row must reach this fraction of the GAN baseline's FID
TUNED_TARGET = 0.85

DEFAULT_SEEDS = (0, 1, 2)

# generators the book reads from snapshots beyond the rows: the EMA chapter
# mixes the raw generator of epoch 50 with its initial weights
EXTRA_SNAPSHOT_NEEDS = {("uot-exp", 50, "raw")}


def snapshot_needs() -> set[tuple[str, int, str]]:
    """(run, epoch, generator) triples kept in the committed snapshots.

    What the rows and chapters load, and the final generators of each run:
    the raw one and, where the run keeps averages, its first EMA.
    """
    rows = ROWS + EXTRA_ROWS
    needs = {(r.run, r.epoch, r.generator) for r in rows} | EXTRA_SNAPSHOT_NEEDS
    for name, config in RUNS.items():
        needs.add((name, config.epochs, "raw"))
        if config.ema:
            needs.add((name, config.epochs, config.ema[0].label))
    return needs


def prune_snapshots(results: Path, run: str, seed: int) -> None:
    """Keep in each snapshot of a run only the generators the book reads.

    A snapshot holds every generator of its epoch (raw and each EMA), 3.3 MB
    each in half precision; the committed ones keep only what a row or a
    chapter loads. Snapshots of seeds other than 0 are not read at all and
    are deleted; their numbers live in ``metrics.json``.
    """
    import torch

    from .train import atomic_save

    needs = snapshot_needs()
    for path in sorted(run_dir(results, run, seed).glob("generator_e*.pt")):
        epoch = int(path.stem.removeprefix("generator_e"))
        keep = {g for r, e, g in needs if r == run and e == epoch}
        if seed != 0 or not keep:
            path.unlink()
            continue
        state = torch.load(path, map_location="cpu", weights_only=False)
        # a run trained before an average was added to its config lacks it
        keep &= set(state["generators"])
        if set(state["generators"]) != keep:
            state["generators"] = {g: state["generators"][g] for g in sorted(keep)}
            atomic_save(state, path)


def resolve(name_or_path: str) -> tuple[str, TrainConfig]:
    """A run's name and config from a run name or a TOML file path."""
    if name_or_path in RUNS:
        return name_or_path, RUNS[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path.stem, load_config(path)
    raise ConfigError(
        f"{name_or_path!r} is neither a run name ({', '.join(RUNS)}) nor a TOML file"
    )


def run_dir(results: Path, run: str, seed: int) -> Path:
    return Path(results) / run / f"seed{seed}"


def read_metrics(results: Path, run: str, seed: int) -> dict[str, Any] | None:
    path = run_dir(results, run, seed) / METRICS
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def is_finished(metrics: dict[str, Any] | None) -> bool:
    return metrics is not None and len(metrics["epochs"]) >= metrics["config"]["epochs"]


def row_value(metrics: dict[str, Any], row: Row, key: str = "fid") -> float | None:
    """The metric ``key`` of ``row``'s generator at ``row``'s epoch, if evaluated."""
    for record in metrics["evals"]:
        if record["epoch"] == row.epoch and row.generator in record:
            return record[row.generator].get(key)
    return None


def summarise(results: Path, seeds=DEFAULT_SEEDS) -> list[dict[str, Any]]:
    """One entry per row: the report's FID next to ours (mean, std over seeds).

    The report's rows come first, then the rows this project adds (their
    ``report_fid`` is None).
    """
    summary = []
    for row in ROWS + EXTRA_ROWS:
        entry: dict[str, Any] = {
            "row": row.label,
            "report_fid": row.report_fid,
            "run": row.run,
            "epoch": row.epoch,
            "generator": row.generator,
            "command": "python -m uotlib reproduce --runs "
            + row.run
            + " --seeds "
            + " ".join(map(str, seeds)),
            "seeds": [],
        }
        values: dict[str, list[float]] = {}
        for seed in seeds:
            metrics = read_metrics(results, row.run, seed)
            if metrics is None or row_value(metrics, row) is None:
                continue
            entry["seeds"].append(seed)
            for key in ("fid", "precision", "recall", "class_kl"):
                value = row_value(metrics, row, key)
                if value is not None:
                    values.setdefault(key, []).append(value)
        for key, vals in values.items():
            entry[f"{key}_mean"] = statistics.fmean(vals)
            entry[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
            entry[f"{key}_per_seed"] = vals
        summary.append(entry)
    return summary
