"""A one-factor-at-a-time sweep of UOTM's settings on a shorter budget.

The course report concluded that UOT does not help the fixed MLP generator.
Before agreeing, each setting that the method leaves open is moved away from
the UOT baseline one at a time, with everything else held fixed: the
conjugate entropies Ψ1*/Ψ2*, the cost weight τ, the R1 weight λ, the two
learning rates and their ratio, the potential steps per generator step, the
cost embedding (the source) and the potential's architecture. The GAN runs at
the same budget, with the same learning-rate variants, so that a setting is
compared with a GAN that was given the same chance.

Every variant trains for :data:`SWEEP_EPOCHS` epochs with seed 0 and keeps an
EMA of decay 0.999 (an average never feeds back into training, so keeping one
costs an evaluation and nothing else). The budget is 40 epochs, not fewer,
because the full-length runs of seed 0 show that rankings made earlier are wrong: the
UOT baseline has the lower FID up to epoch 30 and the ``exp`` run from epoch
40 on (``results/uot`` and ``results/uot-exp``).

Four variants need no training of their own: ``gan``, ``psi-exp``, ``lr-5e-4``
and ``gan-lr-5e-4`` have the settings of the table's ``gan``, ``uot-exp``,
``uot-lr5e-4`` and ``gan-lr5e-4`` runs, and an epoch count does not change a
trajectory (no schedule reads it), so their first 40 epochs are the variant.
:func:`table_source` finds such a run by comparing the configs, and the sweep
copies its first :data:`SWEEP_EPOCHS` epochs when that run has them. Three
variants were trained anyway: ``uot`` matches the table's ``uot``, whose
epoch-40 generator the τ chapter cannot load, and the two learning-rate
variants came before their table runs. Each repeats its table run's losses
exactly over the first 40 epochs and its FIDs to seven significant digits,
which is what justifies the copy.

``python -m uotlib sweep`` trains the variants that are not finished yet (a
killed sweep resumes where it stopped) and writes ``results/sweep/summary.json``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .book import RESULTS_DIR
from .config import ConfigError, EMASpec, TrainConfig
from .experiments import RUNS, is_finished, read_metrics, run_dir
from .train import atomic_write_json, train

log = logging.getLogger(__name__)

SWEEP_EPOCHS = 40
SWEEP_EMA = EMASpec(0.999)
# the starting point of every variant: the UOT baseline of the table, shorter
BASE = TrainConfig(
    method="uot", epochs=SWEEP_EPOCHS, eval_every=10, ema=[SWEEP_EMA], seed=0
)


@dataclass(frozen=True)
class Variant:
    """One point of the sweep: the baseline with ``changes`` applied."""

    name: str
    factor: str
    changes: tuple[tuple[str, Any], ...] = ()

    @property
    def keeps_snapshot(self) -> bool:
        """The τ chapter loads the last raw generator of τ variants and baseline."""
        return self.factor == "τ" or self.name == "uot"

    def config(self, seed: int = 0) -> TrainConfig:
        snapshots = [BASE.epochs] if self.keeps_snapshot else []
        return BASE.replace(**dict(self.changes), seed=seed, snapshot_epochs=snapshots)

    def describe(self) -> str:
        if not self.changes:
            return "UOT baseline"
        return ", ".join(f"{key} = {value}" for key, value in self.changes)


def _v(name: str, factor: str, **changes: Any) -> Variant:
    return Variant(name, factor, tuple(changes.items()))


# in the order they train: the most informative first, so that a sweep cut
# short still answers the main questions
VARIANTS = [
    _v("uot", "baseline"),
    _v("gan", "baseline", method="gan"),
    _v("psi-exp", "Ψ1*, Ψ2*", psi1="exp", psi2="exp"),
    _v("otm", "Ψ1*, Ψ2*", psi1="linear", psi2="linear"),
    _v("psi-kl", "Ψ1*, Ψ2*", psi1="kl", psi2="kl"),
    _v("psi-chi2", "Ψ1*, Ψ2*", psi1="chi2", psi2="chi2"),
    # the τ variants double as the τ chapter's MNIST study, from no cost at
    # all (with softplus, the GAN's logistic loss) to a cost that dominates
    _v("tau-0", "τ", tau=0.0),
    _v("tau-1e-4", "τ", tau=1e-4),
    _v("tau-3e-3", "τ", tau=3e-3),
    _v("tau-1e-2", "τ", tau=1e-2),
    _v("tau-3e-2", "τ", tau=3e-2),
    _v("tau-1e-1", "τ", tau=1e-1),
    _v("r1-0.05", "λ", r1_lambda=0.05),
    _v("r1-1", "λ", r1_lambda=1.0),
    _v("lr-5e-4", "learning rates", lr_g=5e-4, lr_d=5e-4),
    _v("gan-lr-5e-4", "learning rates", method="gan", lr_g=5e-4, lr_d=5e-4),
    _v("lr-g1e-4-d4e-4", "learning rates", lr_g=1e-4, lr_d=4e-4),
    _v("lr-g4e-4-d1e-4", "learning rates", lr_g=4e-4, lr_d=1e-4),
    # the official CIFAR-10 optimiser, which the defaults replaced
    _v("lr-cifar", "learning rates", lr_g=1.6e-4, lr_d=1e-4, betas=(0.5, 0.9)),
    _v("d-steps-2", "potential steps", d_steps=2),
    _v("source-upsample", "cost embedding", source="upsample"),
    _v("potential-wide", "potential", d_hidden=(1024, 512)),
    _v("potential-conv", "potential", d_arch="conv"),
]
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}


def sweep_dir(results: Path, name: str, seed: int = 0) -> Path:
    return Path(results) / "sweep" / name / f"seed{seed}"


def select(names: list[str] | None) -> list[Variant]:
    """The variants called ``names`` (all of them for None), in sweep order."""
    if not names:
        return list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS_BY_NAME]
    if unknown:
        raise ConfigError(
            f"unknown sweep variant(s) {', '.join(unknown)}; expected some of: "
            + ", ".join(VARIANTS_BY_NAME)
        )
    return [v for v in VARIANTS if v.name in names]


# settings that do not change what a run trains: a longer run, other averages
# alongside and other kept snapshots leave its first epochs as they are
_NOT_TRAJECTORY = {"epochs", "ema", "snapshot_epochs"}


def _same_trajectory(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether ``a`` and ``b`` train the same networks the same way, epoch by epoch."""
    first, second = a.to_dict(), b.to_dict()
    return all(first[key] == second[key] for key in first if key not in _NOT_TRAJECTORY)


def table_source(variant: Variant, seed: int = 0) -> str | None:
    """The table run whose first epochs are ``variant``, or None.

    A run qualifies when every setting that shapes training is the same, it
    lasts at least as long, keeps the sweep's average among its own and
    evaluates at the same epochs. Variants that keep a snapshot are trained:
    a table run does not keep its epoch-40 generator.
    """
    if variant.keeps_snapshot:
        return None
    mine = variant.config(seed)
    for name, config in RUNS.items():
        theirs = config.replace(seed=seed)
        if (
            _same_trajectory(mine, theirs)
            and theirs.epochs >= mine.epochs
            and SWEEP_EMA in theirs.ema
        ):
            return name
    return None


def full_length_run(variant: Variant) -> str | None:
    """The table run that trains ``variant``'s settings past the sweep's budget
    and keeps the sweep's average, or None: the full-length check of a
    candidate, with the table's seeds."""
    mine = variant.config()
    for name, config in RUNS.items():
        if (
            _same_trajectory(mine, config.replace(seed=mine.seed))
            and config.epochs > mine.epochs
            and SWEEP_EMA in config.ema
        ):
            return name
    return None


def copy_from_table(variant: Variant, results: Path, seed: int = 0) -> bool:
    """Write ``variant``'s metrics from its table run; False if it has too few epochs.

    The copy keeps the first :data:`SWEEP_EPOCHS` epochs, the evaluations up to
    then (raw and the sweep's average only), the variant's own config, and
    names the run it came from under ``"copied_from"``.
    """
    source = table_source(variant, seed)
    if source is None:
        return False
    metrics = read_metrics(results, source, seed)
    epochs = variant.config(seed).epochs
    if metrics is None or len(metrics["epochs"]) < epochs:
        return False
    labels = ("raw", SWEEP_EMA.label)
    copied = {
        "config": variant.config(seed).to_dict(),
        "copied_from": str(run_dir(Path("results"), source, seed)),
        "epochs": metrics["epochs"][:epochs],
        "evals": [
            {"epoch": e["epoch"], **{k: e[k] for k in labels if k in e}}
            for e in metrics["evals"]
            if e["epoch"] <= epochs
        ],
    }
    out = sweep_dir(results, variant.name, seed)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(copied, out / "metrics.json")
    return True


def _final_eval(metrics: dict[str, Any]) -> dict[str, Any] | None:
    if not metrics["evals"]:
        return None
    return metrics["evals"][-1]


def sweep_summary(results: Path, seed: int = 0) -> list[dict[str, Any]]:
    """One entry per variant that has results: its settings and its last scores."""
    summary = []
    for variant in VARIANTS:
        metrics = read_metrics(Path(results) / "sweep", variant.name, seed)
        if metrics is None:
            continue
        evals = metrics["evals"]
        entry: dict[str, Any] = {
            "name": variant.name,
            "factor": variant.factor,
            "changes": dict(variant.changes),
            "method": variant.config(seed).method,
            "seed": seed,
            "epochs_done": len(metrics["epochs"]),
            "finished": is_finished(metrics),
            "command": f"python -m uotlib sweep --only {variant.name}",
            "curve": {
                label: [[e["epoch"], e[label]["fid"]] for e in evals if label in e]
                for label in ("raw", SWEEP_EMA.label)
            },
        }
        last = _final_eval(metrics)
        if last is not None:
            entry["epoch"] = last["epoch"]
            for label in ("raw", SWEEP_EMA.label):
                if label in last:
                    scores = last[label]
                    entry[label] = {
                        k: scores[k]
                        for k in (
                            "fid",
                            "precision",
                            "recall",
                            "class_kl",
                            "missing_classes",
                            "sq_distance",
                        )
                        if k in scores
                    }
        if "copied_from" in metrics:
            entry["copied_from"] = metrics["copied_from"]
        seconds = [e["seconds"] for e in metrics["epochs"]]
        if seconds:
            entry["seconds_per_epoch"] = sum(seconds) / len(seconds)
        summary.append(entry)
    return summary


def prune_variant_snapshots(variant: Variant, out: Path) -> None:
    """Keep only what the book loads: the raw generator of the τ variants, and
    their last potential (whose implied target mass the τ chapter reads).

    Training always writes the last epoch's generators (raw and EMA, 3.3 MB
    each); the other variants' are deleted, their numbers live in
    ``metrics.json``.
    """
    from .marginals import POTENTIAL_PREFIX, save_potential_snapshot
    from .train import atomic_save

    if variant.keeps_snapshot and not list(Path(out).glob(f"{POTENTIAL_PREFIX}*.pt")):
        save_potential_snapshot(out)

    for path in sorted(Path(out).glob("generator_e*.pt")):
        if not variant.keeps_snapshot:
            path.unlink()
            continue
        state = torch.load(path, map_location="cpu", weights_only=False)
        if set(state["generators"]) != {"raw"}:
            state["generators"] = {"raw": state["generators"]["raw"]}
            atomic_save(state, path)


def run_sweep(
    variants: list[Variant],
    results: Path = RESULTS_DIR,
    seed: int = 0,
    progress: bool = False,
    evaluator=None,
    data=None,
) -> list[dict[str, Any]]:
    """Train every unfinished variant, then rewrite the sweep's summary."""
    results = Path(results)
    for variant in variants:
        out = sweep_dir(results, variant.name, seed)
        if is_finished(read_metrics(results / "sweep", variant.name, seed)):
            log.info("sweep variant %s is finished; skipping", variant.name)
            # variants finished before potentials were kept get theirs here
            prune_variant_snapshots(variant, out)
            continue
        if copy_from_table(variant, results, seed):
            log.info(
                "sweep variant %s: copied from the table run %s",
                variant.name,
                table_source(variant, seed),
            )
            write_summary(results, seed)
            continue
        log.info("sweep variant %s: %s", variant.name, variant.describe())
        train(
            variant.config(seed), out, evaluator=evaluator, data=data, progress=progress
        )
        prune_variant_snapshots(variant, out)
        write_summary(results, seed)
    return write_summary(results, seed)


def write_summary(results: Path, seed: int = 0) -> list[dict[str, Any]]:
    """Write ``results/sweep/summary.json`` over the finished variants only.

    A variant still training (in this process or another) is left out, so
    that the committed summary never describes a run that is not committed.
    Returns every variant's entry, finished or not.
    """
    summary = sweep_summary(results, seed)
    finished = [entry for entry in summary if entry["finished"]]
    atomic_write_json(finished, Path(results) / "sweep" / SUMMARY)
    return summary


SUMMARY = "summary.json"


def _run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(
                f"--threads must be a positive integer, got {args.threads}"
            )
        torch.set_num_threads(args.threads)
    variants = select(args.only)
    if args.list:
        for variant in variants:
            print(f"{variant.name:18} {variant.factor:16} {variant.describe()}")
        return 0
    run_sweep(variants, Path(args.results), args.seed, progress=not args.no_progress)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sweep", help="train the one-factor-at-a-time sweep of UOTM settings"
    )
    parser.add_argument("--only", nargs="+", help="these variants (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(RESULTS_DIR))
    parser.add_argument("--threads", type=int)
    parser.add_argument("--list", action="store_true", help="list and exit")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=_run)
    return parser
