"""Short measurements behind the defaults of :class:`uotlib.config.TrainConfig`.

``python -m uotlib probe-source`` trains UOTM with each source embedding for
a few epochs and evaluates snapshots along the way. It decided the default
``source = "image"``; its output is committed as
``results/probes/source.json``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from .book import RESULTS_DIR
from .config import SOURCES, TrainConfig
from .train import atomic_write_json, load_generator_from_checkpoint, train

log = logging.getLogger(__name__)


def source_probe(
    work_dir: Path, epochs: int = 6, every: int = 2, seed: int = 0
) -> dict[str, Any]:
    """FID and class coverage of UOTM after ``every``, 2 ``every``, ... epochs.

    One run per source embedding, identical otherwise (the library defaults),
    each evaluated on 10,000 samples at its snapshot epochs.
    """
    from .fid import evaluate_generator

    keep = ("fid", "precision", "recall", "class_kl", "class_histogram")
    snapshots = list(range(every, epochs + 1, every))
    result: dict[str, Any] = {"epochs": snapshots, "seed": seed, "sources": {}}
    for source in SOURCES:
        config = TrainConfig(
            method="uot",
            source=source,
            epochs=epochs,
            seed=seed,
            eval_every=epochs,
            snapshot_epochs=snapshots,
        )
        out = Path(work_dir) / source
        train(config, out, evaluator=lambda g, s: {}, progress=False)
        per_epoch = {}
        for epoch in snapshots:
            generator, sample = load_generator_from_checkpoint(
                out / f"generator_e{epoch}.pt"
            )
            metrics = evaluate_generator(generator, sample, n=10000)
            per_epoch[str(epoch)] = {k: metrics[k] for k in keep}
            log.info("%s epoch %d: FID %.1f", source, epoch, metrics["fid"])
        result["sources"][source] = per_epoch
    return result


def _run_source_probe(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = source_probe(Path(args.work_dir), args.epochs, args.every, args.seed)
    result["threads"] = torch.get_num_threads()
    result["command"] = (
        f"python -m uotlib probe-source --epochs {args.epochs} --every {args.every} "
        f"--seed {args.seed} --threads {result['threads']}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(result, out)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "probe-source", help="compare the image and upsample source embeddings"
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--work-dir", default="/tmp/uotlib-probe-source")
    parser.add_argument("--out", default=str(RESULTS_DIR / "probes" / "source.json"))
    parser.set_defaults(func=_run_source_probe)
    return parser
