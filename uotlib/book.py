"""What every chapter's opening cell needs: paths, seeds and the run modes.

Two environment switches control how much a chapter computes:

* ``UOTLIB_QUICK=1``: shrink every computation to seconds or minutes (CI and
  ``make test`` use it); a chapter says on the page that it is a quick run.
* ``UOTLIB_RETRAIN=1``: retrain what a chapter would otherwise load from
  ``results/``, into ``_retrain/``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"


def _flag(name: str) -> bool:
    value = os.environ.get(name, "0").strip().lower()
    if value not in {"0", "1", "", "false", "true"}:
        raise ValueError(f"{name} must be 0 or 1, got {value!r}")
    return value in {"1", "true"}


def quick_mode() -> bool:
    """True when ``UOTLIB_QUICK=1``: chapters cut their work to seconds."""
    return _flag("UOTLIB_QUICK")


def retrain_mode() -> bool:
    """True when ``UOTLIB_RETRAIN=1``: chapters retrain instead of loading."""
    return _flag("UOTLIB_RETRAIN")


def results_root() -> Path:
    """Where chapters read runs: ``results/``, or ``_retrain/`` when retraining.

    Retrained runs go to their own folder so that a retrain never overwrites
    the committed results it is meant to be compared with.
    """
    return REPO_ROOT / "_retrain" if retrain_mode() else RESULTS_DIR


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a chapter reruns identically."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def mode_banner() -> str:
    """A sentence for the top of a chapter saying which mode built it."""
    if quick_mode():
        return (
            "**Quick run** (`UOTLIB_QUICK=1`): the numbers on this page come from "
            "shortened computations and are not the chapter's results."
        )
    return (
        "Full run: nothing on this page was shortened; numbers of long trainings "
        "come from the committed results in `results/`."
    )
