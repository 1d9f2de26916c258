"""Command line: ``python -m uotlib <command>``: train, sample, reproduce, sweep, ...

Each subcommand's handler returns an exit code. Errors that come from the
user's input (a bad config value, a missing file) print one line to stderr
and exit with code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from .book import RESULTS_DIR
from .config import ConfigError
from .data import DataSourceError, unit_to_uint8

log = logging.getLogger("uotlib")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)


def cmd_train(args: argparse.Namespace) -> int:
    from .experiments import resolve
    from .train import train

    _set_threads(args.threads)
    name, config = resolve(args.config)
    changes = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.epochs is not None:
        changes["epochs"] = args.epochs
        changes["snapshot_epochs"] = [
            e for e in config.snapshot_epochs if e <= args.epochs
        ]
        name = f"{name}-e{args.epochs}"
    config = config.replace(**changes)
    out = Path(args.out) if args.out else RESULTS_DIR / name / f"seed{config.seed}"
    metrics = train(config, out, progress=not args.no_progress)
    log.info("finished %s: %d epochs, results in %s", name, len(metrics["epochs"]), out)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .train import generate, load_generator_from_checkpoint

    if args.n < 1:
        raise ConfigError(f"--n must be a positive integer, got {args.n}")
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ConfigError(f"--out must name a .npy file, got {out}")
    generator, sample_source = load_generator_from_checkpoint(args.checkpoint, args.ema)
    images = generate(generator, sample_source, args.n, args.seed)
    array = unit_to_uint8(images).squeeze(1).numpy()  # (n, 28, 28) uint8
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, array)
    log.info("wrote %s images of shape %s to %s", array.shape[0], array.shape[1:], out)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .experiments import (
        RUNS,
        is_finished,
        prune_snapshots,
        read_metrics,
        run_dir,
    )
    from .train import train

    _set_threads(args.threads)
    results = Path(args.results)
    runs = args.runs or list(RUNS)
    for seed in args.seeds:
        for run in runs:
            if run not in RUNS:
                raise ConfigError(
                    f"unknown run {run!r}; expected one of: {', '.join(RUNS)}"
                )
            if is_finished(read_metrics(results, run, seed)):
                log.info("%s seed %d is finished; skipping", run, seed)
                continue
            train(
                RUNS[run].replace(seed=seed),
                run_dir(results, run, seed),
                progress=not args.no_progress,
            )
            prune_snapshots(results, run, seed)
            _write_summary(results, args.seeds)
    _write_summary(results, args.seeds)
    return 0


def _write_summary(results: Path, seeds) -> None:
    """``summary.json`` over the table's seeds and any others trained here.

    A call for some seeds (``--seeds 1 2``) must not drop the others from it.
    """
    from .experiments import DEFAULT_SEEDS, summarise
    from .train import atomic_write_json

    every = sorted(set(DEFAULT_SEEDS) | set(seeds))
    atomic_write_json(summarise(results, every), results / "summary.json")


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_report, run_bench

    _set_threads(args.threads)
    report = run_bench(steps=args.steps, bf16=not args.no_bf16)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uotlib", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train (or resume) one run")
    p.add_argument("config", help="a run name (gan, uot, uot-exp) or a TOML file")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", help="output folder (default results/<run>/seed<S>)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="write generated digits as uint8 .npy")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--ema", action="store_true", help="use the first EMA generator")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reproduce", help="run every row of the report's table")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", help="only these runs (default: all)")
    p.add_argument("--results", default=str(RESULTS_DIR))
    p.add_argument("--threads", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("bench", help="time the training steps and a matmul peak")
    p.add_argument("--json", action="store_true")
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 cases")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_bench)

    from . import classifier, evaluate, probes, studies, sweep

    classifier.add_parser(sub)
    classifier.add_domain_parser(sub)
    evaluate.add_parser(sub)
    probes.add_parser(sub)
    sweep.add_parser(sub)
    studies.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (ConfigError, DataSourceError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
