"""The ``evaluate`` command: FID, precision, recall and class coverage.

Scores either a generator checkpoint (10,000 samples with a fixed sampling
seed) or a ``.npy`` file of images against the 10,000 MNIST test images,
through the features of :mod:`uotlib.classifier`; see :mod:`uotlib.fid`.

Examples::

    python -m uotlib evaluate --checkpoint results/uot/seed0/checkpoint.pt --json
    python -m uotlib evaluate --images samples.npy --save-stats samples.npz
    python -m uotlib evaluate --save-reference-stats mnist_test.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from uotlib.classifier import ClassifierWeightsError
from uotlib.fid import (
    REFERENCE_SIZE,
    ImageFormatError,
    evaluate_generator,
    evaluate_images,
    reference_statistics,
)


class EvaluateInputError(ValueError):
    """An input file of the ``evaluate`` command is missing or unreadable."""


def load_images_file(path: Path) -> np.ndarray:
    """Read a ``.npy`` array of images without unpickling anything."""
    if not path.is_file():
        raise EvaluateInputError(
            f"images file {path} not found; expected a .npy file of uint8 images "
            "(N, 28, 28) or (N, 1, 28, 28), or floats in [-1, 1] (N, 1, 28, 28)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        raise EvaluateInputError(
            f"{path} is not a plain .npy array of numbers ({error}); expected uint8 "
            "images (N, 28, 28) or (N, 1, 28, 28) saved with numpy.save"
        ) from None


def save_statistics(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write ``mu`` (d,) and ``sigma`` (d, d) as the arrays of pytorch-fid's .npz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma)


def format_metrics(result: dict) -> str:
    """Human-readable summary of an :func:`uotlib.fid.evaluate_images` dict."""
    missing = ", ".join(map(str, result["missing_classes"])) or "none"
    return "\n".join(
        [
            f"FID (MNIST-CNN features, n={result['n']} vs "
            f"{result['n_reference']} test): {result['fid']:.3f}",
            f"precision (k={result['k']}): {result['precision']:.4f}",
            f"recall (k={result['k']}): {result['recall']:.4f}",
            f"class histogram (digits 0-9): {result['class_histogram']}",
            f"KL(p_generated || p_test): {result['class_kl']:.4f} nats",
            f"missing digits: {missing}",
        ]
    )


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _evaluate(args: argparse.Namespace) -> dict | None:
    device = args.device or _default_device()
    if args.n is not None and args.n < 1:
        raise EvaluateInputError(f"--n must be a positive number, got {args.n}")

    if args.save_reference_stats is not None:
        reference = reference_statistics(device)
        save_statistics(args.save_reference_stats, reference.mu, reference.sigma)

    if args.images is not None:
        images = load_images_file(args.images)
        if args.n is not None:
            if images.ndim == 0 or images.shape[0] < args.n:
                available = images.shape[0] if images.ndim else 0
                raise EvaluateInputError(
                    f"--n {args.n} asks for more images than {args.images} holds "
                    f"({available})"
                )
            images = images[: args.n]
        result = evaluate_images(images, device, return_statistics=True)
    elif args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise EvaluateInputError(f"checkpoint {args.checkpoint} not found")
        # the training module is imported only here, so that evaluating
        # images never depends on it
        from uotlib.train import load_generator_from_checkpoint

        try:
            generator, sample_source = load_generator_from_checkpoint(
                args.checkpoint, ema=args.ema, device=device
            )
        except (FileNotFoundError, ValueError) as error:
            message = f"cannot load {args.checkpoint}: {error}"
            raise EvaluateInputError(message) from None
        result = evaluate_generator(
            generator,
            sample_source,
            n=args.n or REFERENCE_SIZE,
            seed=args.seed,
            device=device,
            return_statistics=True,
        )
        result["checkpoint"] = str(args.checkpoint)
        result["ema"] = bool(args.ema)
    else:
        return None

    if args.save_stats is not None:
        save_statistics(args.save_stats, result["mu"], result["sigma"])
    del result["mu"], result["sigma"]
    return result


def run(args: argparse.Namespace) -> int:
    """Handler of ``evaluate``; returns the exit code (2 for bad input)."""
    if args.ema and args.checkpoint is None:
        print("error: --ema needs --checkpoint", file=sys.stderr)
        return 2
    sources = (args.images, args.checkpoint, args.save_reference_stats)
    if all(source is None for source in sources):
        print(
            "error: expected --checkpoint PATH, --images FILE.npy or "
            "--save-reference-stats OUT.npz",
            file=sys.stderr,
        )
        return 2
    try:
        result = _evaluate(args)
    except (EvaluateInputError, ImageFormatError, ClassifierWeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if result is not None:
        print(json.dumps(result, indent=2) if args.json else format_metrics(result))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the CLI's argparse subparsers."""
    parser = subparsers.add_parser(
        "evaluate",
        help="FID, precision/recall and class coverage against MNIST test",
        description=(
            "Score a generator checkpoint or a .npy file of images against the "
            "10,000 MNIST test images, in the feature space of the MNIST CNN "
            "(not Inception: the numbers are not on the usual FID scale)."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint", type=Path, help="generator checkpoint written by training"
    )
    source.add_argument(
        "--images",
        type=Path,
        help="a .npy file: uint8 (N, 28, 28) or (N, 1, 28, 28), "
        "or float (N, 1, 28, 28) in [-1, 1]",
    )
    parser.add_argument(
        "--ema", action="store_true", help="use the checkpoint's EMA generator"
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"samples to generate (default {REFERENCE_SIZE}), or the first N "
        "images of --images (default all)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="sampling seed for --checkpoint (default 0)"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--save-stats",
        type=Path,
        metavar="OUT.npz",
        help="write the generated features' mu and sigma (pytorch-fid layout)",
    )
    parser.add_argument(
        "--save-reference-stats",
        type=Path,
        metavar="OUT.npz",
        help="write mu and sigma of the MNIST test features",
    )
    parser.set_defaults(func=run)
    return parser
