"""What the experiment chapters show: committed runs as tables and figures.

The chapters never retrain silently. They read ``results/<run>/seed<k>/``
(written by ``python -m uotlib reproduce``), draw the curves stored in
``metrics.json``, and recompute the FID of the committed seed-0 generator
snapshots, so every number on the page is computed during the build.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .book import quick_mode, results_root, retrain_mode
from .experiments import (
    DEFAULT_SEEDS,
    EXTRA_ROWS,
    MATCHED_GAN,
    ROWS,
    RUNS,
    TUNED_ROWS,
    TUNED_TARGET,
    Row,
    read_metrics,
    row_value,
    run_dir,
)


def ensure_runs(run: str, seeds: Sequence[int] = DEFAULT_SEEDS) -> None:
    """Train ``run`` for ``seeds`` into ``_retrain/`` when ``UOTLIB_RETRAIN=1``.

    Without the switch this does nothing: chapters only read committed runs.
    With ``UOTLIB_QUICK=1`` too, each run is cut to 2 epochs and 2,000
    evaluation samples, which the chapter's banner says.
    """
    if not retrain_mode():
        return
    from .train import train

    config = RUNS[run]
    if quick_mode():
        config = config.replace(
            epochs=2,
            eval_every=1,
            n_eval=2000,
            snapshot_epochs=[],
        )
    for seed in seeds:
        train(config.replace(seed=seed), run_dir(results_root(), run, seed))


def runs_present(
    run: str, seeds: Sequence[int] = DEFAULT_SEEDS, results: Path | None = None
) -> dict[int, dict[str, Any]]:
    """The metrics of each seed of ``run`` that has a ``metrics.json``."""
    results = results or results_root()
    found = {}
    for seed in seeds:
        metrics = read_metrics(results, run, seed)
        if metrics is not None:
            found[seed] = metrics
    return found


def status_markdown(run: str, seeds: Sequence[int] = DEFAULT_SEEDS) -> str:
    """A paragraph saying which seeds of ``run`` exist and how to make the rest."""
    present = runs_present(run, seeds)
    epochs = RUNS[run].epochs
    done = [s for s, m in present.items() if len(m["epochs"]) >= epochs]
    partial = {s: len(m["epochs"]) for s, m in present.items() if s not in done}
    command = f"python -m uotlib reproduce --runs {run} --seeds " + " ".join(
        map(str, seeds)
    )
    if len(done) == len(seeds):
        return f"All {len(seeds)} seeds of run `{run}` finished ({epochs} epochs)."
    parts = [f"**Results incomplete.** Run `{run}` ({epochs} epochs):"]
    parts.append(f"finished seeds: {done or 'none'};")
    if partial:
        parts.append(
            "unfinished: "
            + ", ".join(f"seed {s} at epoch {e}" for s, e in partial.items())
            + ";"
        )
    parts.append(f"the missing results are produced by `{command}`.")
    return " ".join(parts)


def curve(
    metrics: dict[str, Any], generator: str = "raw", key: str = "fid"
) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and values of ``key`` for ``generator`` over a run's evaluations."""
    points = [
        (rec["epoch"], rec[generator][key])
        for rec in metrics["evals"]
        if generator in rec and key in rec[generator]
    ]
    if not points:
        return np.array([]), np.array([])
    epochs, values = zip(*points, strict=True)
    return np.array(epochs), np.array(values, dtype=float)


def _plot_seeds(ax: plt.Axes, series, color: str, label: str) -> None:
    """Each seed's (epochs, values) thin, and their mean at the shared epochs."""
    series = [s for s in series if len(s[0])]
    for epochs, values in series:
        ax.plot(epochs, values, color=color, alpha=0.3, linewidth=0.8)
    if series:
        common = sorted(set.intersection(*(set(e.tolist()) for e, _ in series)))
        mean = [np.mean([v[list(e).index(c)] for e, v in series]) for c in common]
        ax.plot(common, mean, color=color, marker="o", markersize=3, label=label)


def figure_rows(rows: Sequence[Row], seeds: Sequence[int] = DEFAULT_SEEDS):
    """FID over training of each row's generator (each seed thin, the mean
    thick), on a log scale, up to the row's epoch."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, row in enumerate(rows):
        series = []
        for metrics in runs_present(row.run, seeds).values():
            epochs, values = curve(metrics, row.generator)
            keep = epochs <= row.epoch
            series.append((epochs[keep], values[keep]))
        _plot_seeds(ax, series, f"C{index}", row.label)
    ax.set(xlabel="epoch", ylabel="FID (log scale)", yscale="log")
    if ax.lines:
        ax.legend(fontsize="small")
    else:
        _no_results(ax, ", ".join(r.run for r in rows))
    return fig


def plot_curves(
    ax: plt.Axes,
    run: str,
    generators: Sequence[str] = ("raw",),
    key: str = "fid",
    seeds: Sequence[int] = DEFAULT_SEEDS,
    log_scale: bool = False,
) -> None:
    """One line per generator: the mean over seeds, with each seed drawn thin."""
    present = runs_present(run, seeds)
    for index, generator in enumerate(generators):
        series = [curve(m, generator, key) for m in present.values()]
        _plot_seeds(ax, series, f"C{index}", generator)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key.replace("_", " "))
    if log_scale:
        ax.set_yscale("log")
    if ax.lines:
        ax.legend()


def plot_losses(ax: plt.Axes, run: str, seed: int = 0) -> None:
    """Critic and generator losses per epoch of one seed."""
    metrics = read_metrics(results_root(), run, seed)
    if metrics is None:
        return
    epochs = [e["epoch"] for e in metrics["epochs"]]
    for key in ("loss_d", "loss_g", "penalty"):
        ax.plot(epochs, [e[key] for e in metrics["epochs"]], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss over the epoch")
    ax.legend()


def show_grid(ax: plt.Axes, path: Path, title: str | None = None) -> bool:
    """Draw a saved sample grid; False when the file does not exist."""
    ax.set_axis_off()
    if not Path(path).is_file():
        ax.text(0.5, 0.5, f"missing:\n{Path(path).name}", ha="center", va="center")
        return False
    ax.imshow(plt.imread(path), cmap="gray")
    if title:
        ax.set_title(title)
    return True


def plot_class_histogram(
    ax: plt.Axes, counts: Sequence[int], reference: Sequence[int], label: str
) -> None:
    """Class shares of generated digits next to the test set's."""
    digits = np.arange(10)
    ax.bar(digits - 0.2, np.asarray(counts) / np.sum(counts), 0.4, label=label)
    ax.bar(digits + 0.2, np.asarray(reference) / np.sum(reference), 0.4, label="test")
    ax.set_xticks(digits)
    ax.set_xlabel("class assigned by the feature network")
    ax.set_ylabel("share")
    ax.legend()


def row_numbers(row: Row, seeds: Sequence[int] = DEFAULT_SEEDS) -> dict[str, Any]:
    """Mean and spread over seeds of the row's metrics, from ``metrics.json``."""
    out: dict[str, Any] = {"row": row.label, "report_fid": row.report_fid}
    for key in ("fid", "precision", "recall", "class_kl"):
        values = []
        for metrics in runs_present(row.run, seeds).values():
            value = row_value(metrics, row, key)
            if value is not None:
                values.append(value)
        out[key] = values
    return out


def _mean_std(values: Sequence[float], digits: int) -> str:
    if not values:
        return "missing"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return (
        f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    )


def table_markdown(rows: Sequence[Row] | None = None, seeds=DEFAULT_SEEDS) -> str:
    """The report's FID next to this project's, as a Markdown table.

    By default: the report's rows, then the rows this project adds (the GAN
    with the tuned row's average, and the tuned UOT row), whose report FID
    is shown as a dash.
    """
    rows = list(ROWS) + list(EXTRA_ROWS) if rows is None else rows
    lines = [
        "| row | report FID | our FID (mean ± sd) | precision | recall "
        "| class KL | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        n = row_numbers(row, seeds)
        report_fid = "—" if row.report_fid is None else f"{row.report_fid:g}"
        lines.append(
            f"| {row.label} | {report_fid} | {_mean_std(n['fid'], 2)} | "
            f"{_mean_std(n['precision'], 3)} | {_mean_std(n['recall'], 3)} | "
            f"{_mean_std(n['class_kl'], 3)} | {len(n['fid'])} |"
        )
    return "\n".join(lines)


def snapshot_path(row: Row, seed: int = 0) -> Path:
    """The committed generator snapshot that ``row`` is read from."""
    return run_dir(results_root(), row.run, seed) / f"generator_e{row.epoch}.pt"


def recompute_row(row: Row, n: int, seed: int = 0) -> dict[str, Any] | None:
    """Metrics of the row's committed snapshot, recomputed now (None if absent).

    The snapshot holds half-precision weights; with ``n`` = 10,000 its FID is
    compared in the chapters with the full-precision value that training
    recorded.
    """
    from .fid import evaluate_generator
    from .train import load_generator_from_checkpoint

    path = snapshot_path(row, seed)
    if not path.is_file():
        return None
    ema = False if row.generator == "raw" else row.generator
    generator, sample_source = load_generator_from_checkpoint(path, ema)
    return evaluate_generator(generator, sample_source, n=n)


def mnist_test_class_counts() -> list[int]:
    """How many of the 10,000 MNIST test images show each digit."""
    import torch

    from .data import load_mnist

    return torch.bincount(load_mnist(train=False).labels, minlength=10).tolist()


def config_markdown(run: str) -> str:
    """The run's configuration as a two-column Markdown table."""
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in RUNS[run].to_dict().items())
    return "| key | value |\n|---|---|\n" + rows


def figure_curves(run: str, generators: Sequence[str] = ("raw",), key: str = "fid"):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    plot_curves(ax, run, generators, key)
    if not ax.lines:
        _no_results(ax, run)
    return fig


def figure_losses(run: str):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    plot_losses(ax, run)
    if not ax.lines:
        _no_results(ax, run)
    return fig


def figure_samples(row: Row, seed: int = 0):
    """The sample grid saved at the run's last evaluation, for row's generator."""
    suffix = "" if row.generator == "raw" else f"_{row.generator}"
    fig, ax = plt.subplots(figsize=(4, 4))
    show_grid(ax, run_dir(results_root(), row.run, seed) / f"samples{suffix}.png")
    return fig


def figure_classes(row: Row, seed: int = 0):
    """Class shares of the row's generator at the row's epoch, against the test set."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    metrics = read_metrics(results_root(), row.run, seed)
    counts = row_value(metrics, row, "class_histogram") if metrics else None
    if counts is None:
        _no_results(ax, row.run)
    else:
        plot_class_histogram(ax, counts, mnist_test_class_counts(), row.generator)
    return fig


def _no_results(ax: plt.Axes, run: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"no committed results for run '{run}' yet",
        ha="center",
        va="center",
        transform=ax.transAxes,
    )


def recompute_markdown(row: Row) -> str:
    """Recompute the row's FID from its committed seed-0 snapshot and say so.

    In a full build the recomputed FID must match the one recorded during
    training within 1% (the snapshot is half precision); a quick build uses
    2,000 samples, whose FID is biased upwards, and only reports the value.
    """
    n = 2000 if quick_mode() else 10000
    recomputed = recompute_row(row, n=n)
    if recomputed is None:
        return f"No committed checkpoint at `{snapshot_path(row)}` yet."
    message = (
        f"Recomputed FID of the seed-0 checkpoint `{snapshot_path(row).name}` "
        f"({row.generator}) with {n:,} samples: {recomputed['fid']:.2f}."
    )
    metrics = read_metrics(results_root(), row.run, 0)
    recorded = row_value(metrics, row) if metrics else None
    if recorded is not None and not quick_mode():
        if abs(recomputed["fid"] - recorded) > 0.01 * recorded:
            raise AssertionError(
                f"{row.label}: recomputed FID {recomputed['fid']:.3f} differs from "
                f"the recorded {recorded:.3f} by more than 1%"
            )
        message += f" Recorded during training: {recorded:.2f} (within 1%)."
    return message


def initial_weight_share(decay: float, steps: np.ndarray, warmup: bool = False):
    """Share of the initial weights left in an EMA after ``steps`` updates.

    Without warm-up it is decay^t. With the warm-up d_t = min(decay,
    (1 + t) / (10 + t)) the product of the d_t vanishes after the very first
    updates (d_0 = 0.1), so the start is forgotten almost at once.
    """
    steps = np.asarray(steps, dtype=float)
    if not warmup:
        return decay**steps
    t = np.arange(int(steps.max()) + 1, dtype=float)
    d = np.minimum(decay, (1.0 + t) / (10.0 + t))
    cumulative = np.concatenate([[1.0], np.cumprod(d)])
    return cumulative[steps.astype(int)]


def initial_generator_state(run: str, seed: int) -> dict:
    """The generator's weights before its first update, rebuilt from the seed."""
    import torch

    from .train import Trainer

    trainer = Trainer(RUNS[run].replace(seed=seed), torch.device("cpu"))
    return trainer.generator.state_dict()


def mix_with_initial(
    row: Row, weights_of_start: Sequence[float], n: int, seed: int = 0
):
    """FID of (1 - w) theta_T + w theta_0 for each w in ``weights_of_start``.

    theta_T is the row's committed raw generator, theta_0 the generator's
    initial weights, rebuilt from the run's seed. An EMA without warm-up holds
    a share decay^t of theta_0; this isolates what that share alone does.
    """
    from .fid import evaluate_generator
    from .train import load_generator_from_checkpoint

    trained, sample_source = load_generator_from_checkpoint(snapshot_path(row, seed))
    start = initial_generator_state(row.run, seed)
    out = []
    for w in weights_of_start:
        mixed = {k: (1 - w) * v + w * start[k] for k, v in trained.state_dict().items()}
        trained_copy, _ = load_generator_from_checkpoint(snapshot_path(row, seed))
        trained_copy.load_state_dict(mixed)
        out.append(evaluate_generator(trained_copy, sample_source, n=n)["fid"])
    return out


def ordering_markdown(rows: Sequence[Row] = ROWS, seeds=DEFAULT_SEEDS) -> str:
    """Ranks and ratios to the GAN row, the report's against this project's.

    FIDs on different feature spaces cannot be compared as numbers, but their
    orderings and their ratios to a common baseline can.
    """
    rows = [row for row in rows if row.report_fid is not None]
    ours = {}
    for row in rows:
        values = row_numbers(row, seeds)["fid"]
        if values:
            ours[row.label] = statistics.fmean(values)
    if len(ours) < 2:
        return "Fewer than two rows have results; no ordering to compare yet."

    labels = [row.label for row in rows if row.label in ours]
    report = {row.label: row.report_fid for row in rows}
    rank_report = {lab: i for i, lab in enumerate(sorted(labels, key=report.get))}
    rank_ours = {lab: i for i, lab in enumerate(sorted(labels, key=ours.get))}
    base = rows[0].label
    lines = [
        "| row | report rank | our rank | report FID / GAN | our FID / GAN |",
        "|---|---:|---:|---:|---:|",
    ]
    for lab in labels:
        ratio_ours = f"{ours[lab] / ours[base]:.2f}" if base in ours else "missing"
        lines.append(
            f"| {lab} | {rank_report[lab] + 1} | {rank_ours[lab] + 1} | "
            f"{report[lab] / report[base]:.2f} | {ratio_ours} |"
        )
    n = len(labels)
    d2 = sum((rank_report[lab] - rank_ours[lab]) ** 2 for lab in labels)
    rho = 1 - 6 * d2 / (n * (n * n - 1))
    agree = sum(rank_report[lab] == rank_ours[lab] for lab in labels)
    lines.append("")
    lines.append(
        f"Spearman rank correlation over {n} rows: {rho:.2f}; "
        f"{agree} of {n} rows hold the same rank."
    )
    return "\n".join(lines)


def bias_corrected_ema_fid(row: Row, n: int, seed: int = 0) -> float | None:
    """FID of the row's EMA with the share of its initial weights removed.

    An EMA without warm-up after t updates is d^t theta_0 + (1 - d^t) A_t,
    where A_t is a weighted average of the trained weights only. Solving for
    A_t = (EMA - d^t theta_0) / (1 - d^t) keeps the EMA's long horizon and
    drops its start, which separates the two ways a slow decay can hurt.
    """
    from .fid import evaluate_generator
    from .train import load_generator_from_checkpoint

    path = snapshot_path(row, seed)
    if not path.is_file():
        return None
    config = RUNS[row.run].replace(seed=seed)
    spec = next(e for e in config.ema if e.label == row.generator)
    if spec.warmup:
        raise ValueError(f"{row.generator} has warm-up; its start is already gone")
    ema, sample_source = load_generator_from_checkpoint(path, row.generator)
    start = initial_generator_state(row.run, seed)
    share = spec.decay ** (row.epoch * (60000 // config.batch_size))
    corrected = {
        k: (v - share * start[k]) / (1 - share) for k, v in ema.state_dict().items()
    }
    ema.load_state_dict(corrected)
    return evaluate_generator(ema, sample_source, n=n)["fid"]


def emphasised(text: str) -> str:
    """``text`` in Markdown italics, its own asterisks escaped.

    Row labels hold "Ψ*", whose asterisk would otherwise close the emphasis.
    """
    return "*" + text.replace("*", r"\*") + "*"


def target_check(
    tuned: Row, baseline: Row, seeds=DEFAULT_SEEDS, target: float = TUNED_TARGET
) -> dict[str, Any]:
    """Whether ``tuned`` reaches ``target`` times the FID of ``baseline``.

    The goal holds when the ratio of the mean FIDs is at most ``target`` and
    the two ranges over seeds (lowest to highest FID) do not overlap. It is
    decided only once both rows have every seed.
    """
    a = row_numbers(tuned, seeds)["fid"]
    b = row_numbers(baseline, seeds)["fid"]
    out: dict[str, Any] = {"tuned": a, "baseline": b, "target": target}
    if not a or not b:
        out["verdict"] = "missing"
        return out
    out["ratio"] = statistics.fmean(a) / statistics.fmean(b)
    out["overlap"] = max(a) >= min(b)
    if len(a) < len(seeds) or len(b) < len(seeds):
        out["verdict"] = "undecided"
    elif out["ratio"] <= target and not out["overlap"]:
        out["verdict"] = "met"
    else:
        out["verdict"] = "not met"
    return out


def best_tuned_row(seeds=DEFAULT_SEEDS) -> Row:
    """The tuned UOT row with the lowest mean FID among those with every seed.

    A row stays out of the running until all of ``seeds`` have finished, so
    that one lucky seed cannot take the place; with none complete, the first
    of :data:`~uotlib.experiments.TUNED_ROWS`.
    """
    complete = {}
    for row in TUNED_ROWS:
        values = row_numbers(row, seeds)["fid"]
        if len(values) == len(seeds):
            complete[row] = statistics.fmean(values)
    return min(complete, key=complete.get) if complete else TUNED_ROWS[0]


def target_markdown(
    tuned: Row, baseline: Row, seeds=DEFAULT_SEEDS, target: float = TUNED_TARGET
) -> str:
    """One paragraph stating :func:`target_check`'s result with its numbers."""
    check = target_check(tuned, baseline, seeds, target)
    tuned_name, baseline_name = emphasised(tuned.label), emphasised(baseline.label)
    if check["verdict"] == "missing":
        return f"{tuned_name} or {baseline_name} has no results yet."

    def spread(values):
        if len(values) == 1:
            return f"{values[0]:.1f} (1 seed)"
        return (
            f"{statistics.fmean(values):.1f} over {len(values)} seeds "
            f"(range {min(values):.1f} to {max(values):.1f})"
        )

    text = (
        f"{tuned_name}: FID {spread(check['tuned'])}; {baseline_name}: "
        f"{spread(check['baseline'])}. The ratio of the means is "
        f"{check['ratio']:.2f} (goal: at most {target:g}) and the ranges "
        f"{'overlap' if check['overlap'] else 'do not overlap'}. "
    )
    verdict = {
        "met": "The goal is met.",
        "not met": "The goal is not met.",
        "undecided": (
            f"Not every one of the {len(seeds)} seeds has finished, so the goal "
            "is not decided yet."
        ),
    }
    return text + verdict[check["verdict"]]


def report_verdict_markdown(seeds=DEFAULT_SEEDS, target: float = TUNED_TARGET) -> str:
    """Whether the report's "UOT does not help the fixed MLP" survives here.

    Three comparisons, each held to :func:`target_check`'s goal: the report's
    own best UOT row against its GAN (both raw, untuned), and each tuned UOT
    row against the GAN given the same tuning (:data:`MATCHED_GAN`). The
    verdict turns on the matched pairs, since a tuned UOT against an untuned
    GAN would credit UOT with what the tuning gives any method.
    """
    untuned = target_check(ROWS[3], ROWS[0], seeds, target)
    matched = {
        row: target_check(row, MATCHED_GAN[row], seeds, target) for row in TUNED_ROWS
    }
    verdicts = [check["verdict"] for check in matched.values()]
    if "missing" in verdicts or "undecided" in verdicts:
        return (
            "Not every tuned row and its matched GAN has all "
            f"{len(seeds)} seeds yet, so the report's verdict is not tested yet."
        )

    met = [row for row, check in matched.items() if check["verdict"] == "met"]
    pairs = "; ".join(
        f"{emphasised(row.label)} against {emphasised(MATCHED_GAN[row].label)}: ratio "
        f"{check['ratio']:.2f}, ranges "
        f"{'overlapping' if check['overlap'] else 'apart'}"
        for row, check in matched.items()
    )
    if met:
        text = (
            "The report's verdict, that UOT does not help with the fixed MLP "
            f"generator, does not hold here. {len(met)} of {len(matched)} tuned "
            f"UOT settings beat the GAN trained and averaged the same way by the "
            f"goal (mean FID at most {target:g} times the GAN's, ranges over "
            f"{len(seeds)} seeds apart): {pairs}."
        )
    else:
        text = (
            "The report's verdict holds here: no tuned UOT setting beats the GAN "
            f"trained and averaged the same way by the goal ({pairs})."
        )
    if untuned["verdict"] in ("met", "not met"):
        text += (
            f" Without tuning, {emphasised(ROWS[3].label)} has "
            f"{untuned['ratio']:.2f} times the FID of the {emphasised(ROWS[0].label)}, "
            "ranges "
            f"{'overlapping' if untuned['overlap'] else 'apart'}"
            + (
                ", so on this project's FID even the report's own settings "
                "rank UOT first, against the report's ordering."
                if untuned["verdict"] == "met"
                else "."
            )
        )
    return text


# ---- the settings sweep (uotlib.sweep) -------------------------------------


def ensure_sweep() -> None:
    """Train the sweep into ``_retrain/`` when ``UOTLIB_RETRAIN=1``.

    With ``UOTLIB_QUICK=1`` too, every variant is cut to 2 epochs and 2,000
    evaluation samples. Without the switch the chapter reads committed runs.
    """
    if not retrain_mode():
        return
    from . import sweep

    if quick_mode():
        sweep.BASE = sweep.BASE.replace(epochs=2, eval_every=1, n_eval=2000)
    sweep.run_sweep(sweep.VARIANTS, results_root())


def sweep_entries(seed: int = 0) -> dict[str, dict[str, Any]]:
    """The sweep summary of the variants that have results, by name."""
    from .sweep import sweep_summary

    return {e["name"]: e for e in sweep_summary(results_root(), seed)}


def sweep_status_markdown(seed: int = 0) -> str:
    """Which variants have finished, and the command for the others."""
    from .sweep import SWEEP_EPOCHS, VARIANTS

    entries = sweep_entries(seed)
    done = [v.name for v in VARIANTS if entries.get(v.name, {}).get("finished")]
    missing = [v.name for v in VARIANTS if v.name not in done]
    if not missing:
        n = len(VARIANTS)
        return f"All {n} variants of the sweep finished ({SWEEP_EPOCHS} epochs)."
    return (
        f"**Sweep incomplete**: {len(done)} of {len(VARIANTS)} variants finished "
        f"({SWEEP_EPOCHS} epochs each). Not finished: "
        + ", ".join(f"`{n}`" for n in missing)
        + ". `python -m uotlib sweep --threads 1` trains them, resuming any "
        "that stopped."
    )


def _score(entry: dict[str, Any], label: str, key: str = "fid") -> float | None:
    return entry.get(label, {}).get(key) if entry.get("finished") else None


def sweep_table_markdown(seed: int = 0) -> str:
    """Every variant with its change and its scores at the end of the budget.

    The last column divides the EMA FID by the GAN's EMA FID at the same
    budget (the ``gan`` variant), the comparison that the tuned row repeats at
    full length. A variant read from a table run says so in its name's cell
    (its seconds per epoch are that run's, which kept more averages).
    """
    from .sweep import SWEEP_EMA, VARIANTS

    entries = sweep_entries(seed)
    gan = _score(entries.get("gan", {}), SWEEP_EMA.label)
    lines = [
        "| variant | factor | change from the UOT baseline | FID raw "
        f"| FID {SWEEP_EMA.label} | precision | recall | class KL | classes "
        "| EMA FID / GAN's | s/epoch |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        entry = entries.get(variant.name, {})
        raw = _score(entry, "raw")
        ema = _score(entry, SWEEP_EMA.label)
        precision = _score(entry, SWEEP_EMA.label, "precision")
        recall = _score(entry, SWEEP_EMA.label, "recall")
        class_kl = _score(entry, SWEEP_EMA.label, "class_kl")
        missing = _score(entry, SWEEP_EMA.label, "missing_classes")
        classes = "—" if missing is None else str(10 - len(missing))

        def fmt(value, digits=1):
            return "—" if value is None else f"{value:.{digits}f}"

        ratio = ema / gan if ema is not None and gan else None
        seconds = entry.get("seconds_per_epoch")
        name = f"`{variant.name}`"
        if "copied_from" in entry:
            name += f" (from `{entry['copied_from']}`)"
        lines.append(
            f"| {name} | {variant.factor} | {variant.describe()} | "
            f"{fmt(raw)} | {fmt(ema)} | {fmt(precision, 3)} | {fmt(recall, 3)} | "
            f"{fmt(class_kl, 3)} | {classes} | {fmt(ratio, 2)} | {fmt(seconds, 0)} |"
        )
    return "\n".join(lines)


def sweep_best(seed: int = 0, method: str = "uot") -> list[tuple[str, float]]:
    """Finished variants of ``method`` by EMA FID at the budget's end, best first."""
    from .sweep import SWEEP_EMA, VARIANTS_BY_NAME

    scored = []
    for name, entry in sweep_entries(seed).items():
        fid = _score(entry, SWEEP_EMA.label)
        if fid is not None and VARIANTS_BY_NAME[name].config().method == method:
            scored.append((name, fid))
    return sorted(scored, key=lambda item: item[1])


def relative_gap(value: float, reference: float) -> float:
    """Signed gap of ``value`` from ``reference``, relative to their mean."""
    return (value - reference) / (0.5 * (value + reference))


# two sweep variants whose losses differ by a constant: the same gradients,
# so their runs differ only by floating-point rounding
ROUNDING_PAIR = ("psi-kl", "psi-exp")


def sweep_rounding_noise(seed: int = 0) -> tuple[float, list[float]] | None:
    """Relative gap of the EMA FIDs of :data:`ROUNDING_PAIR` at the budget.

    Returns (|a - b| / mean(a, b), [a, b]), or None until both finished.
    """
    from .sweep import SWEEP_EMA

    entries = sweep_entries(seed)
    scores = [_score(entries.get(name, {}), SWEEP_EMA.label) for name in ROUNDING_PAIR]
    if None in scores:
        return None
    return abs(relative_gap(*scores)), scores


def fid_at_epoch(run: str, epoch: int, generator: str) -> list[float]:
    """FID of a table run's ``generator`` at ``epoch``, one value per seed."""
    return [
        e[generator]["fid"]
        for m in runs_present(run).values()
        for e in m["evals"]
        if e["epoch"] == epoch and generator in e
    ]


def seed_noise_at_budget(run: str = "uot-exp") -> float | None:
    """Largest relative gap between two seeds of a table run at the sweep's budget.

    Read at epoch ``SWEEP_EPOCHS`` through the sweep's EMA, over the committed
    seeds of ``run``; None with fewer than two.
    """
    from .sweep import SWEEP_EMA, SWEEP_EPOCHS

    values = fid_at_epoch(run, SWEEP_EPOCHS, SWEEP_EMA.label)
    if len(values) < 2:
        return None
    return max(abs(relative_gap(a, b)) for a in values for b in values)


def sweep_noise(seed: int = 0, method: str = "uot") -> tuple[float, str] | None:
    """The gap one seed at the sweep's budget cannot resolve, and its source.

    For UOT variants: the larger of the rounding pair's gap
    (:func:`sweep_rounding_noise`) and the largest gap between seeds of the
    ``uot-exp`` table run at the same epoch (:func:`seed_noise_at_budget`);
    None until the rounding pair has finished. For GAN variants
    (``method="gan"``): the largest gap between seeds of the ``gan`` table run
    at that epoch, or None with fewer than two seeds.
    """
    if method == "gan":
        seeds = seed_noise_at_budget("gan")
        if seeds is None:
            return None
        return seeds, "the largest gap between two seeds of `gan` at this epoch"
    rounding = sweep_rounding_noise(seed)
    if rounding is None:
        return None
    seeds = seed_noise_at_budget()
    if seeds is not None and seeds > rounding[0]:
        return seeds, "the largest gap between two seeds of `uot-exp` at this epoch"
    return rounding[0], "the gap between the two runs that differ only by rounding"


def sweep_factor_rows(seed: int = 0) -> list[dict[str, Any]]:
    """Each finished variant against its own baseline, with a verdict.

    UOT variants are compared with the ``uot`` variant and GAN variants with
    the ``gan`` variant, by EMA FID at the end of the budget. The verdict
    weighs the signed relative gap against :func:`sweep_noise` of the
    variant's method: "better" or "worse" only where the gap is larger than
    that noise, "within noise" where it is not, and None while the noise is
    not measured.
    """
    from .sweep import SWEEP_EMA, VARIANTS

    entries = sweep_entries(seed)
    noises = {method: sweep_noise(seed, method) for method in ("uot", "gan")}
    rows = []
    for variant in VARIANTS:
        if variant.factor == "baseline":
            continue
        entry = entries.get(variant.name, {})
        fid = _score(entry, SWEEP_EMA.label)
        if fid is None:
            continue
        reference = "gan" if variant.config().method == "gan" else "uot"
        base = _score(entries.get(reference, {}), SWEEP_EMA.label)
        if base is None:
            continue
        gap = relative_gap(fid, base)
        noise = noises[reference]
        verdict = None
        if noise is not None:
            if abs(gap) <= noise[0]:
                verdict = "within noise"
            else:
                verdict = "better" if gap < 0 else "worse"
        missing = _score(entry, SWEEP_EMA.label, "missing_classes")
        rows.append(
            {
                "name": variant.name,
                "factor": variant.factor,
                "change": variant.describe(),
                "fid": fid,
                "reference": reference,
                "reference_fid": base,
                "gap": gap,
                "verdict": verdict,
                "noise": None if noise is None else noise[0],
                "classes": None if missing is None else 10 - len(missing),
            }
        )
    return rows


def sweep_factor_markdown(seed: int = 0) -> str:
    """The per-factor table of :func:`sweep_factor_rows` and what it shows."""
    rows = sweep_factor_rows(seed)
    if not rows:
        return "No variant and its baseline have both finished yet."
    noise = sweep_noise(seed)
    gan_noise = sweep_noise(seed, "gan")
    lines = [
        "| factor | variant | EMA FID | against | gap | verdict | classes |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['factor']} | `{r['name']}` ({r['change']}) | {r['fid']:.1f} | "
            f"`{r['reference']}` {r['reference_fid']:.1f} | {r['gap']:+.0%} | "
            f"{r['verdict'] or '—'} | {'—' if r['classes'] is None else r['classes']} |"
        )
    if noise is None:
        lines += ["", "The noise is not measured yet, so no gap is judged."]
        return "\n".join(lines)
    better = [r for r in rows if r["verdict"] == "better"]
    worse = [r for r in rows if r["verdict"] == "worse"]
    within = [r for r in rows if r["verdict"] == "within noise"]

    def names(items):
        return ", ".join(f"`{r['name']}`" for r in items) or "none"

    text = (
        f"Gaps are signed and relative to the mean of the two FIDs; the noise "
        f"is {noise[0]:.0%} for UOT variants ({noise[1]})"
        + (
            f" and {gan_noise[0]:.0%} for GAN variants ({gan_noise[1]})"
            if gan_noise is not None
            else ""
        )
        + ". Worse than its baseline beyond the noise: "
        f"{names(worse)}. Within the noise: {names(within)}. Better beyond "
        f"the noise: {names(better)}."
    )
    collapsed = [r for r in rows if r["classes"] is not None and r["classes"] < 10]
    if collapsed:
        text += (
            " Missing digit classes in the EMA's samples: "
            + ", ".join(
                f"`{r['name']}` ({r['classes']} of 10 classes left)" for r in collapsed
            )
            + "."
        )
    return "\n".join(lines) + "\n\n" + text


def sweep_candidates(seed: int = 0) -> list[str]:
    """The best UOT variant and those within :func:`sweep_noise` of it."""
    best = sweep_best(seed)
    noise = sweep_noise(seed)
    if not best:
        return []
    top = best[0][1]
    limit = noise[0] if noise else 0.0
    return [name for name, fid in best if relative_gap(fid, top) <= limit]


def sweep_candidates_markdown(seed: int = 0) -> str:
    """Each candidate of the sweep and its full-length run with the table's seeds.

    A candidate's full-length run is the table run with the same settings that
    keeps the sweep's average (:func:`uotlib.sweep.full_length_run`); its EMA
    FID at the last epoch is given over the seeds that finished.
    """
    from .sweep import SWEEP_EMA, SWEEP_EPOCHS, VARIANTS_BY_NAME, full_length_run

    names = sweep_candidates(seed)
    if not names:
        return "The sweep has no candidates yet."
    entries = sweep_entries(seed)
    lines = [
        f"| candidate | EMA FID at epoch {SWEEP_EPOCHS} (seed {seed}) "
        "| full-length run | EMA FID at its last epoch (mean ± sd) | seeds |",
        "|---|---:|---|---:|---:|",
    ]
    untrained = []
    for name in names:
        variant = VARIANTS_BY_NAME[name]
        at_budget = _score(entries[name], SWEEP_EMA.label)
        run = full_length_run(variant)
        values = fid_at_epoch(run, RUNS[run].epochs, SWEEP_EMA.label) if run else []
        if not values:
            untrained.append(name)
        lines.append(
            f"| `{name}` ({variant.describe()}) | {at_budget:.1f} | "
            + (f"`{run}`, {RUNS[run].epochs} epochs" if run else "none")
            + f" | {_mean_std(values, 1) if values else '—'} | {len(values)} |"
        )
    text = "\n".join(lines)
    if untrained:
        text += (
            "\n\nNot trained at full length with the sweep's average yet: "
            + ", ".join(f"`{n}`" for n in untrained)
            + ". No table run has these settings and keeps an EMA of decay "
            f"{SWEEP_EMA.decay}, so they are candidates, not results."
        )
    return text


def figure_sweep_noise(label: str | None = None):
    """EMA FID over training of the table's seeds next to the rounding pair.

    The table's ``gan`` and ``uot-exp`` runs (each seed, 100 epochs) show how
    far apart seeds are at the sweep's budget; the sweep's ``psi-kl`` and
    ``psi-exp`` variants differ only by rounding. ``label`` names the
    generator to plot (default: the sweep's EMA).
    """
    from .sweep import SWEEP_EMA, SWEEP_EPOCHS

    label = label or SWEEP_EMA.label

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for colour, run in (("C0", "gan"), ("C1", "uot-exp")):
        for j, (_, m) in enumerate(sorted(runs_present(run).items())):
            points = [(e["epoch"], e[label]["fid"]) for e in m["evals"] if label in e]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    color=colour,
                    alpha=0.7,
                    label=f"{run}, each seed" if j == 0 else None,
                )
    entries = sweep_entries()
    for style, name in (("--", "psi-kl"), (":", "psi-exp")):
        curve = entries.get(name, {}).get("curve", {}).get(label)
        if curve:
            ax.plot(
                *zip(*curve, strict=True),
                style,
                color="C3",
                lw=2,
                label=f"sweep {name}",
            )
    ax.axvline(SWEEP_EPOCHS, color="k", lw=0.8, ls="--")
    ax.set(xlabel="epoch", ylabel=f"FID, {label} (log scale)", yscale="log")
    if ax.lines[:-1]:
        ax.legend(fontsize="small")
    else:
        _no_results(ax, "sweep")
    return fig


def figure_sweep(seed: int = 0):
    """FID of every finished variant at the end of the budget, raw and EMA."""
    from .sweep import SWEEP_EMA, VARIANTS

    entries = sweep_entries(seed)
    names = [v.name for v in VARIANTS]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.2))
    y = np.arange(len(names))
    for offset, label, colour in ((-0.2, "raw", "C0"), (0.2, SWEEP_EMA.label, "C1")):
        values = [_score(entries.get(n, {}), label) for n in names]
        ax.barh(
            y[[v is not None for v in values]] + offset,
            [v for v in values if v is not None],
            0.4,
            color=colour,
            label=label,
        )
    gan = _score(entries.get("gan", {}), SWEEP_EMA.label)
    if gan is not None:
        ax.axvline(gan, color="k", lw=0.8, ls="--", label=f"GAN, {SWEEP_EMA.label}")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("FID at the end of the sweep budget (log scale, lower is better)")
    if ax.patches:
        ax.set_xscale("log")
        ax.legend(loc="lower right", fontsize="small")
    else:
        _no_results(ax, "sweep")
    return fig
