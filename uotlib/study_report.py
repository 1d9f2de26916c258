"""Tables and figures of the chapters beyond the report.

The τ chapter reads the sweep's τ variants (:mod:`uotlib.sweep`); the
architecture, outlier and imbalance chapters read the studies of
:mod:`uotlib.studies`. Every helper copes with missing results: it says what
is missing and which command makes it, so that a chapter builds (and says so)
before its runs exist.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from .book import quick_mode, results_root, retrain_mode
from .studies import STUDY_EMA, get_study, run_study, study_dir, study_metrics

# ---- architecture: convolutional networks against the table's MLP -----------


def _uot_wins(uot: Sequence[float], gan: Sequence[float]) -> tuple[float, bool]:
    """Ratio of the means, and whether UOTM's range lies wholly below the GAN's."""
    return float(np.mean(uot) / np.mean(gan)), max(uot) < min(gan)


def architecture_verdict_markdown(name: str = "architecture") -> str:
    """Does UOTM beat the GAN with the convolutional networks, where the MLP
    at the same epoch does not? The report's guess, judged from the results
    of the study ``name`` (``architecture`` or ``architecture-wide``).

    For the raw generator and the study's EMA, UOTM "beats" the GAN when its
    range over seeds lies wholly below the GAN's. The same test is made on the
    table's MLP runs (GAN and ``exp``) at the study's epoch count, so that the
    architecture and not the shorter budget is what the verdict is about.
    """
    from .report import fid_at_epoch

    study = get_study(name)
    epochs = study.config("gan-conv", 0).epochs
    parts, verdicts = [], {}
    for generator in ("raw", STUDY_EMA.label):
        gan = final_values(name, "gan-conv", generator, "fid")
        uot = final_values(name, "uotm-conv", generator, "fid")
        if not gan or not uot:
            continue
        ratio, wins = _uot_wins(uot, gan)
        overlap = max(uot) >= min(gan) and max(gan) >= min(uot)
        n = min(len(gan), len(uot))
        parts.append(
            f"{generator}: UOTM {np.mean(uot):.1f} against the GAN's "
            f"{np.mean(gan):.1f}, a ratio of {ratio:.2f}"
            + (
                " (one seed each: no range to compare)."
                if n == 1
                else f" over {n} seeds; the ranges "
                + ("overlap." if overlap else "do not overlap.")
            )
        )
        mlp_gan = fid_at_epoch("gan", epochs, generator)
        mlp_uot = fid_at_epoch("uot-exp", epochs, generator)
        if mlp_gan and mlp_uot:
            mlp_ratio, mlp_wins = _uot_wins(mlp_uot, mlp_gan)
            parts.append(
                f"With the MLP at the same epoch ({generator}): UOTM (`exp`) "
                f"{np.mean(mlp_uot):.1f} against the GAN's {np.mean(mlp_gan):.1f}, "
                f"a ratio of {mlp_ratio:.2f}."
            )
            verdicts[generator] = (wins, mlp_wins)
    if not parts:
        return (
            f"The convolutional runs of the `{name}` study have not finished; "
            f"`python -m uotlib study {name} --threads 1` trains them."
        )
    config = study.config("gan-conv", 0)
    text = (
        f"After {epochs} epochs with convolutional networks (channels "
        f"{tuple(config.g_channels)} in the generator, "
        f"{tuple(config.d_channels)} in the potential), " + " ".join(parts)
    )
    if not verdicts:
        return text
    seeds = min(len(final_values(name, run, "raw", "fid")) for run in study.run_names)
    conv_wins = [g for g, (conv, _) in verdicts.items() if conv]
    mlp_wins = [g for g, (_, mlp) in verdicts.items() if mlp]
    if not conv_wins:
        verdict = (
            "UOTM does not beat the GAN with the convolutional networks at this "
            "budget (for no generator does UOTM's range lie below the GAN's): "
            "the report's guess does not hold here."
        )
    elif changed := [g for g in conv_wins if g not in mlp_wins]:
        verdict = (
            "UOTM beats the GAN with the convolutional networks (ranges apart: "
            + ", ".join(conv_wins)
            + "), and the MLP at the same epoch does not ("
            + ", ".join(changed)
            + "): at equal budget the report's guess holds."
        )
    else:
        verdict = (
            "UOTM beats the GAN with the convolutional networks, but it already "
            "does with the MLP at the same epoch: the architecture is not what "
            "changes the verdict."
        )
    if seeds < len(study.seeds):
        caveat = (
            "one seed has no range, so a single run decides each comparison"
            if seeds == 1
            else "more seeds can only widen the ranges, so ranges apart now "
            "may overlap later"
        )
        verdict = (
            f"Provisionally, with {seeds} of {len(study.seeds)} seeds finished "
            f"({caveat}): " + verdict
        )
    return text + " " + verdict


# ---- τ: the sweep's τ variants ----------------------------------------------


def tau_variants() -> list[tuple[float, str]]:
    """(τ, variant name) of the sweep's τ variants and its baseline, by τ."""
    from .sweep import VARIANTS

    pairs = [(v.config().tau, v.name) for v in VARIANTS if v.keeps_snapshot]
    return sorted(pairs)


def tau_rows() -> list[dict[str, Any]]:
    """One row per τ variant that finished: FID, distance and cost at the end."""
    from .report import sweep_entries

    entries = sweep_entries()
    rows = []
    for tau, name in tau_variants():
        entry = entries.get(name)
        if not entry or not entry.get("finished"):
            continue
        row = {"tau": tau, "name": name}
        for label in ("raw", STUDY_EMA.label):
            scores = entry.get(label, {})
            row[label] = scores
        sq = row["raw"].get("sq_distance")
        row["cost"] = None if sq is None else tau * sq
        row["target"] = _tau_target(name, entry.get("epoch", 0))
        rows.append(row)
    return rows


def _tau_target(name: str, epoch: int) -> dict[str, Any] | None:
    """What a τ variant's last potential does to the MNIST training digits."""
    from .marginals import potential_path
    from .sweep import sweep_dir

    path = potential_path(sweep_dir(results_root(), name), epoch)
    if not path.is_file():
        return None
    return _implied_on_mnist(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _implied_on_mnist(path: str, mtime_ns: int) -> dict[str, Any]:
    # ``mtime_ns`` is only part of the cache key: a rewritten file is read again
    from .data import load_mnist
    from .marginals import implied_shares

    digits = load_mnist(train=True)
    implied = implied_shares(path, digits.images, digits.labels, 10)
    implied["class_kl"] = kl_to(implied["shares"], implied["data_shares"])
    return implied


def tau_table_markdown() -> str:
    rows = tau_rows()
    if not rows:
        return "No τ variant of the sweep has finished yet."
    lines = [
        "| τ | variant | FID raw | FID EMA | E‖x − T(x)‖² | mean cost τ E‖x − T(x)‖² "
        "| precision | recall | target mass | target class KL |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def fmt(value, spec=".1f"):
        return "—" if value is None else format(value, spec)

    for row in rows:
        raw, ema, target = row["raw"], row[STUDY_EMA.label], row["target"]
        lines.append(
            f"| {row['tau']:g} | `{row['name']}` | {fmt(raw.get('fid'))} | "
            f"{fmt(ema.get('fid'))} | {fmt(raw.get('sq_distance'), '.0f')} | "
            f"{fmt(row['cost'], '.3f')} | {fmt(raw.get('precision'), '.3f')} | "
            f"{fmt(raw.get('recall'), '.3f')} | "
            f"{fmt(target and target['mass'], '.3f')} | "
            f"{fmt(target and target['class_kl'], '.4f')} |"
        )
    return "\n".join(lines)


def _tau_positions(taus: Sequence[float]) -> tuple[np.ndarray, list[str]]:
    """x positions on a log axis, with τ = 0 placed one decade left of the rest."""
    positive = [t for t in taus if t > 0]
    floor = min(positive) / 10 if positive else 1e-5
    return np.array([t if t > 0 else floor for t in taus]), [f"{t:g}" for t in taus]


def figure_tau():
    """FID and squared transport distance against τ, on MNIST."""
    rows = tau_rows()
    fig, (ax_fid, ax_cost) = plt.subplots(1, 2, figsize=(9, 3.5))
    if not rows:
        for ax in (ax_fid, ax_cost):
            ax.text(
                0.5,
                0.5,
                "no τ variant finished yet",
                ha="center",
                transform=ax.transAxes,
            )
        return fig
    x, labels = _tau_positions([r["tau"] for r in rows])
    for label, marker in (("raw", "o"), (STUDY_EMA.label, "s")):
        ax_fid.plot(
            x, [r[label].get("fid", np.nan) for r in rows], marker=marker, label=label
        )
    ax_cost.plot(x, [r["raw"].get("sq_distance", np.nan) for r in rows], marker="o")
    for ax in (ax_fid, ax_cost):
        ax.set_xscale("log")
        ax.set_xticks(x, labels, rotation=45)
        ax.minorticks_off()
        ax.set_xlabel("τ")
    ax_fid.set_yscale("log")
    ax_fid.set_ylabel("FID (log scale)")
    ax_fid.legend()
    ax_cost.set_ylabel("E‖x − T(x)‖² (summed over 784 pixels)")
    fig.tight_layout()
    return fig


def figure_tau_pairs(n: int = 8, seed: int = 0):
    """The same noise images x and their images T(x) under each τ's generator."""
    from .sweep import sweep_dir
    from .train import load_generator_from_checkpoint

    found = []
    for tau, name in tau_variants():
        paths = sorted(sweep_dir(results_root(), name).glob("generator_e*.pt"))
        if paths:
            found.append((tau, paths[-1]))
    fig, axes = plt.subplots(
        len(found) + 1, n, figsize=(n * 0.9, (len(found) + 1) * 0.95), squeeze=False
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if not found:
        axes[0, 0].set_title("no τ snapshots yet", loc="left")
        return fig
    generator, sample = load_generator_from_checkpoint(found[0][1])
    x = sample(n, torch.Generator().manual_seed(seed))
    images = [x.view(-1, 28, 28).clamp(-1, 1)]
    names = ["x (clipped)"]
    for tau, path in found:
        generator, _ = load_generator_from_checkpoint(path)
        with torch.no_grad():
            images.append(generator(x).view(-1, 28, 28))
        names.append(f"τ = {tau:g}")
    for i, (row, name) in enumerate(zip(images, names, strict=True)):
        for j in range(n):
            axes[i, j].imshow(row[j].numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[i, 0].set_ylabel(
            name, rotation=0, ha="right", va="center", fontsize="small"
        )
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.15)
    return fig


# ---- the studies -------------------------------------------------------------


def ensure_study(name: str) -> None:
    """Train a study into ``_retrain/`` when ``UOTLIB_RETRAIN=1``.

    With ``UOTLIB_QUICK=1`` too, each run is cut to 2 epochs and 2,000
    evaluation samples.
    """
    if not retrain_mode():
        return
    study = get_study(name)
    if quick_mode():
        run_study(study, results_root(), epochs=2, n_eval=2000)
    else:
        run_study(study, results_root())


def study_runs_present(name: str) -> dict[str, dict[int, dict[str, Any]]]:
    """Metrics of every (run, seed) of the study that has a ``metrics.json``."""
    study = get_study(name)
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for run in study.run_names:
        for seed in study.seeds:
            metrics = study_metrics(results_root(), name, run, seed)
            if metrics is not None:
                found.setdefault(run, {})[seed] = metrics
    return found


def study_status_markdown(name: str) -> str:
    """Which runs and seeds of a study finished, and the command for the rest."""
    study = get_study(name)
    present = study_runs_present(name)
    lines = []
    missing = 0
    for run in study.run_names:
        epochs = study.config(run, 0).epochs
        done = [
            s for s, m in present.get(run, {}).items() if len(m["epochs"]) >= epochs
        ]
        partial = {
            s: len(m["epochs"])
            for s, m in present.get(run, {}).items()
            if s not in done
        }
        missing += len(study.seeds) - len(done)
        text = f"`{run}`: {len(done)} of {len(study.seeds)} seeds finished"
        if partial:
            text += (
                " ("
                + ", ".join(f"seed {s} at epoch {e}" for s, e in partial.items())
                + ")"
            )
        lines.append(text)
    head = (
        f"All runs of the `{name}` study finished."
        if missing == 0
        else f"**Results incomplete** for the `{name}` study; "
        f"`python -m uotlib study {name} --threads 1` trains what is missing."
    )
    return head + " " + "; ".join(lines) + "."


def final_values(name: str, run: str, generator: str, key: str) -> list[float]:
    """``key`` of ``generator`` at the last epoch, over the finished seeds."""
    study = get_study(name)
    epochs = study.config(run, 0).epochs
    values = []
    for _, metrics in sorted(study_runs_present(name).get(run, {}).items()):
        if len(metrics["epochs"]) < epochs:
            continue
        last = metrics["evals"][-1] if metrics["evals"] else {}
        value = last.get(generator, {}).get(key)
        if value is not None:
            values.append(value)
    return values


def mean_spread(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return (
        f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    )


def study_table_markdown(
    name: str, keys: Sequence[tuple[str, str, int]] = (("fid", "FID", 1),)
) -> str:
    """Per run and generator (raw, EMA): each key's mean ± sd over seeds."""
    study = get_study(name)
    header = "| run | generator | " + " | ".join(k[1] for k in keys) + " | seeds |"
    lines = [header, "|---|---|" + "---:|" * (len(keys) + 1)]
    for run in study.run_names:
        for generator in ("raw", STUDY_EMA.label):
            cells = []
            n = 0
            for key, _, digits in keys:
                values = final_values(name, run, generator, key)
                n = max(n, len(values))
                cells.append(mean_spread(values, digits))
            lines.append(
                f"| `{run}` | {generator} | " + " | ".join(cells) + f" | {n} |"
            )
    return "\n".join(lines)


def figure_study_curves(name: str, key: str = "fid", log: bool = True):
    """``key`` over the epochs for every run of the study (EMA solid, raw dotted)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    present = study_runs_present(name)
    for i, run in enumerate(get_study(name).run_names):
        for generator, style in (("raw", ":"), (STUDY_EMA.label, "-")):
            for j, (_, metrics) in enumerate(sorted(present.get(run, {}).items())):
                points = [
                    (e["epoch"], e[generator][key])
                    for e in metrics["evals"]
                    if generator in e and key in e[generator]
                ]
                if not points:
                    continue
                epochs, values = zip(*points, strict=True)
                ax.plot(
                    epochs,
                    values,
                    style,
                    color=f"C{i}",
                    label=f"{run}, {generator}" if j == 0 else None,
                )
    if ax.lines:
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize="small", ncol=2)
    else:
        ax.text(
            0.5,
            0.5,
            f"no results for the {name} study yet",
            ha="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    return fig


def figure_study_samples(name: str, generator: str = STUDY_EMA.label, seed: int = 0):
    """The sample grid that each run saved at its last evaluation."""
    from .report import show_grid

    runs = get_study(name).run_names
    fig, axes = plt.subplots(
        1, len(runs), figsize=(3.2 * len(runs), 3.4), squeeze=False
    )
    suffix = "" if generator == "raw" else f"_{generator}"
    for ax, run in zip(axes[0], runs, strict=True):
        show_grid(
            ax,
            study_dir(results_root(), name, run, seed) / f"samples{suffix}.png",
            title=run,
        )
    return fig


# ---- outliers ------------------------------------------------------------------


def fashion_probability(images: torch.Tensor) -> torch.Tensor:
    """The domain classifier's probability that each image is Fashion-MNIST."""
    from .classifier import DOMAIN_FASHION, load_domain_classifier

    model = load_domain_classifier("cpu")
    with torch.no_grad():
        logits = torch.cat([model(x) for x in images.split(1000)])
    return logits.softmax(dim=1)[:, DOMAIN_FASHION]


def snapshot_generator(name: str, run: str, seed: int = 0):
    """The study's last committed generator of ``run`` (its EMA), or None."""
    from .train import load_generator_from_checkpoint

    paths = sorted(
        study_dir(results_root(), name, run, seed).glob("generator_e*.pt"),
        key=lambda p: int(p.stem.removeprefix("generator_e")),
    )
    if not paths:
        return None
    return load_generator_from_checkpoint(paths[-1], STUDY_EMA.label)


def generated_images(name: str, run: str, n: int, seed: int = 0):
    """``n`` images of the run's committed EMA generator (fixed noise), or None."""
    from .fid import generate_images

    loaded = snapshot_generator(name, run, seed)
    if loaded is None:
        return None
    generator, sample = loaded
    return generate_images(generator, sample, n, seed=0)


def outlier_floor(n: int) -> dict[str, float]:
    """Outlier share of generators trained on clean MNIST (the table's runs).

    The domain classifier also flags badly drawn digits, so a generator that
    never saw a Fashion-MNIST image still scores above zero; this is that
    floor, from the committed seed-0 generators of the ``gan`` and
    ``uot-exp`` runs after 100 epochs.
    """
    from .experiments import RUNS, run_dir
    from .fid import generate_images, outlier_share
    from .train import load_generator_from_checkpoint

    floor = {}
    for run in ("gan", "uot-exp"):
        path = run_dir(results_root(), run, 0) / f"generator_e{RUNS[run].epochs}.pt"
        if not path.is_file():
            continue
        generator, sample = load_generator_from_checkpoint(path)
        floor[run] = outlier_share(generate_images(generator, sample, n, seed=0))
    return floor


def figure_most_outlying(name: str, n: int, k: int = 12):
    """Per run, the ``k`` of ``n`` generated images most like Fashion-MNIST."""
    runs = get_study(name).run_names
    fig, axes = plt.subplots(len(runs), k, figsize=(k * 0.8, len(runs) * 0.95))
    axes = np.atleast_2d(axes)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i, run in enumerate(runs):
        axes[i, 0].set_ylabel(run, rotation=0, ha="right", va="center")
        images = generated_images(name, run, n)
        if images is None:
            continue
        p = fashion_probability(images)
        order = p.argsort(descending=True)[:k]
        for j, index in enumerate(order):
            axes[i, j].imshow(images[index, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[i, j].set_title(f"{p[index]:.2f}", fontsize="x-small")
    fig.subplots_adjust(wspace=0.05, hspace=0.35, left=0.1)
    return fig


# ---- class imbalance -------------------------------------------------------------


def training_class_shares(name: str = "imbalance") -> np.ndarray:
    """The digit shares of the study's training set (10 values, summing to 1)."""
    from .data import is_outlier, training_set

    study = get_study(name)
    labels = training_set(study.config(study.run_names[0], 0)).labels
    labels = labels[~is_outlier(labels)]
    counts = torch.bincount(labels, minlength=10).numpy()
    return counts / counts.sum()


def generated_class_shares(name: str, run: str, generator: str = STUDY_EMA.label):
    """Per finished seed, the class shares of generated digits at the last epoch."""
    study = get_study(name)
    epochs = study.config(run, 0).epochs
    shares = []
    for _, metrics in sorted(study_runs_present(name).get(run, {}).items()):
        if len(metrics["epochs"]) < epochs or not metrics["evals"]:
            continue
        counts = metrics["evals"][-1].get(generator, {}).get("class_histogram")
        if counts is not None:
            counts = np.asarray(counts, dtype=float)
            shares.append(counts / counts.sum())
    return shares


def kl_to(shares: np.ndarray, reference: np.ndarray) -> float:
    """KL(shares || reference) in nats, with empty bins of ``shares`` skipped."""
    shares = np.asarray(shares, dtype=float)
    mask = shares > 0
    return float(np.sum(shares[mask] * np.log(shares[mask] / reference[mask])))


def share_gap(p: float, q: float, n_p: int, n_q: int) -> float:
    """How many standard errors apart two shares, counted on ``n_p`` and ``n_q``
    samples, are.

    The shares are treated as independent binomial proportions; the result is
    (p - q) divided by the standard error of that difference, so its sign says
    which is larger. Two shares that are both 0 or both 1 give 0.
    """
    for name, value in (("p", p), ("q", q)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"share {name} = {value!r}; expected a value in [0, 1]")
    for name, value in (("n_p", n_p), ("n_q", n_q)):
        if value < 1:
            raise ValueError(f"{name} = {value!r}; expected at least one sample")
    error = np.sqrt(p * (1 - p) / n_p + q * (1 - q) / n_q)
    if error == 0:
        return 0.0
    return float((p - q) / error)


def _gap_to_exact(p: float, reference: float, n: int) -> float:
    """Standard errors between a share ``p`` counted on ``n`` samples and an
    exactly known ``reference`` share (only ``p`` has a sampling error)."""
    return float((p - reference) / np.sqrt(max(p * (1 - p), 1e-12) / n))


# a difference between two shares counts when it exceeds this many standard
# errors of the difference
GAP = 2.0


def _compare(p: float, q: float, n_p: int, n_q: int) -> tuple[str, float]:
    gap = share_gap(p, q, n_p, n_q)
    return ("fewer" if gap < -GAP else "more" if gap > GAP else "same"), abs(gap)


def _seed_caveat(shares: dict[str, Sequence[float]]) -> list[str]:
    """What the standard errors leave out: the error of training again.

    ``shares`` holds, by run, the share at the last epoch of each finished
    seed. With one seed per run that error cannot be seen at all; with more,
    the ranges over seeds show it, and UOTM's range is set against the others.
    """
    k = min(len(v) for v in shares.values())
    if k < 2:
        return [
            "These standard errors count the sampling of the generated images "
            "only. With one seed per method, the error of training again is not "
            "in them, so only a gap several times larger is safe to read."
        ]
    ranges = ", ".join(f"`{r}` {min(v):.2%} to {max(v):.2%}" for r, v in shares.items())
    uot = shares["uotm"]
    apart = [
        r
        for r, v in shares.items()
        if r != "uotm" and (max(uot) < min(v) or max(v) < min(uot))
    ]
    return [
        f"Over {k} seeds the shares range over {ranges}. The standard errors "
        "above pool the images of every seed and leave out the error of "
        "training again; UOTM's range "
        + (
            "lies apart from that of " + " and ".join(r.upper() for r in apart)
            if apart
            else "overlaps the others'"
        )
        + (
            ", so the seeds agree with the comparison where it found a gap."
            if apart
            else ", so a gap found above may be the seeds' and not the methods'."
        )
    ]


def outliers_verdict_markdown(
    data_share: float, floor: float, targets: dict[str, float] | None = None
) -> str:
    """What the outlier study's finished runs say about UOTM's robustness claim.

    ``data_share`` is the training set's share of Fashion-MNIST images (exact)
    and ``floor`` the share that generators trained on clean MNIST reach (the
    domain classifier's false alarms on generated digits). ``targets`` gives,
    by run, the outliers' share of the target that the run's last potential
    implies (:func:`study_target_shares`); with it the verdict also says why.
    """
    name = "outliers"
    runs = get_study(name).run_names
    share = {r: final_values(name, r, STUDY_EMA.label, "outlier_share") for r in runs}
    if not all(share.values()):
        return (
            "Not every method has finished, so the claim is not tested yet; "
            "the study's status line says what is missing."
        )
    mean = {r: float(np.mean(v)) for r, v in share.items()}
    # the mean share over seeds counts the images of all of them
    n = {r: int(sum(final_values(name, r, STUDY_EMA.label, "n"))) for r in runs}

    def last_mean(key):
        return {
            r: float(np.mean(final_values(name, r, STUDY_EMA.label, key))) for r in runs
        }

    fid, recall = last_mean("fid"), last_mean("recall")
    lines = [
        f"At the last epoch the EMA generators make {mean['gan']:.2%} (GAN), "
        f"{mean['otm']:.2%} (OTM) and {mean['uotm']:.2%} (UOTM) outliers, "
        f"against {data_share:.2%} in the data and a floor of {floor:.2%} from "
        f"clean-data generators; their FIDs against clean MNIST are "
        f"{fid['gan']:.1f}, {fid['otm']:.1f} and {fid['uotm']:.1f}."
    ]
    # the data's share is exact: only the GAN's side has a sampling error
    p = mean["gan"]
    faithful = _gap_to_exact(p, data_share, n["gan"])
    if abs(faithful) < GAP:
        lines.append(
            "The GAN's share is within sampling error of the data's: it "
            "reproduces the outliers along with the digits."
        )
    else:
        side = "below" if faithful < 0 else "above"
        lines.append(
            f"The GAN's share is {abs(faithful):.1f} standard errors {side} the data's."
        )
    verdict = {}
    for other in ("gan", "otm"):
        verdict[other], gap = _compare(mean["uotm"], mean[other], n["uotm"], n[other])
        words = {
            "fewer": "makes fewer outliers than",
            "more": "makes more outliers than",
            "same": "cannot be told apart from",
        }[verdict[other]]
        lines.append(
            f"UOTM {words} {other.upper()} ({gap:.1f} standard errors of the "
            "difference apart)."
        )
    if verdict["gan"] == verdict["otm"] == "fewer":
        lines.append("UOTM makes clearly the fewest, as the paper claims.")
    elif verdict["gan"] == "fewer" and verdict["otm"] == "same":
        lines.append(
            "So the paper's claim holds against the GAN, and OTM, with balanced "
            "marginals, makes as few outliers in this run."
        )
        lines += _outlier_mechanism(targets or {}, data_share, mean, recall)
    else:
        lines.append(
            "The claim that UOTM makes the fewest outliers does not hold in "
            "this setting."
        )
        lines += _outlier_mechanism(targets or {}, data_share, mean, recall)
    return " ".join(lines + _seed_caveat(share))


def _outlier_mechanism(
    targets: dict[str, float],
    data_share: float,
    generated: dict[str, float],
    recall: dict[str, float],
) -> list[str]:
    """Sentences on why OTM and UOTM make the shares they make, from the
    outliers' share of the target that each potential implies."""
    if not {"otm", "uotm"} <= set(targets):
        if min(recall, key=recall.get) == "otm":
            return [
                "OTM's low share comes with the lowest recall of the three: it "
                "covers less of the data of every kind, garments included."
            ]
        return []
    lines = []
    otm, uotm = targets["otm"], targets["uotm"]
    if generated["otm"] < 0.75 * otm:
        lines.append(
            f"OTM's balanced potential keeps the outliers' full share in its "
            f"target ({otm:.2%}); its generator makes fewer than that target "
            "asks for"
            + (
                ", and it has the lowest recall of the three: it falls short of "
                "the data of every kind, garments included."
                if min(recall, key=recall.get) == "otm"
                else "."
            )
        )
    if uotm < 0.75 * data_share:
        lines.append(
            f"UOTM's potential lowers the outliers' share of its target from "
            f"{data_share:.2%} to {uotm:.2%}, and its generator makes "
            f"{generated['uotm']:.2%}: the relaxed marginal is what leaves the "
            "outliers out, by design and not by a failure to fit."
        )
    else:
        lines.append(
            f"UOTM's potential keeps {uotm:.2%} of its target on outliers, "
            f"close to the data's {data_share:.2%}: the relaxed marginal does "
            "not single them out here."
        )
    return lines


def study_target_shares(
    name: str, images: torch.Tensor, groups: torch.Tensor, n_groups: int, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """By run, what its last potential does to the groups of ``images``
    (:func:`uotlib.marginals.implied_shares`); runs without a kept potential
    are left out."""
    from .marginals import implied_shares, potential_path

    study = get_study(name)
    found = {}
    for run in study.run_names:
        epochs = study.config(run, seed).epochs
        path = potential_path(study_dir(results_root(), name, run, seed), epochs)
        if path.is_file():
            found[run] = implied_shares(path, images, groups, n_groups)
    return found


def imbalance_verdict_markdown(
    train_shares: np.ndarray,
    digit: int,
    targets: dict[str, float] | None = None,
    confident: dict[str, float] | None = None,
) -> str:
    """Where each method's share of the rare ``digit`` lands against its
    training share ``train_shares[digit]``, from the finished runs.

    ``targets`` gives, by run, the rare digit's share of the target that the
    run's last potential implies (:func:`study_target_shares`); with UOTM's,
    the verdict says what the relaxed marginal did to the class. ``confident``
    gives, by run, the rare digit's share among the generated images that the
    feature network is sure of (:func:`confident_class_shares`).
    """
    name = "imbalance"
    runs = get_study(name).run_names
    rare, n, per_seed = {}, {}, {}
    for run in runs:
        shares = generated_class_shares(name, run, STUDY_EMA.label)
        counts = final_values(name, run, STUDY_EMA.label, "class_histogram")
        if shares and counts:
            per_seed[run] = [s[digit] for s in shares]
            rare[run] = float(np.mean(per_seed[run]))
            n[run] = int(sum(sum(c) for c in counts))
    if len(rare) < len(runs):
        return (
            "Not every method has finished; the comparison waits for the "
            "missing runs that the study's status line names."
        )
    t = float(train_shares[digit])
    lines = [f"The rare digit is {t:.2%} of the training set."]
    for run in runs:
        p = rare[run]
        z = _gap_to_exact(p, t, n[run])
        where = (
            "within sampling error of its training share"
            if abs(z) < GAP
            else f"{abs(z):.1f} standard errors {'below' if z < 0 else 'above'} it"
        )
        lines.append(
            f"`{run}` makes it {p:.2%} of its digits ({p / t:.2f} times the "
            f"training share, {where})."
        )
    verdict = {
        other: _compare(rare["uotm"], rare[other], n["uotm"], n[other])[0]
        for other in ("gan", "otm")
    }
    if verdict["gan"] == verdict["otm"] == "fewer":
        lines.append(
            "UOTM makes the rare digit least often of the three: the relaxed "
            "marginal let it shed part of that class's mass."
        )
    elif verdict["gan"] == verdict["otm"] == "more":
        lines.append(
            "UOTM makes the rare digit most often of the three: the relaxed "
            "marginal moved mass towards it."
        )
    else:
        words = {
            "fewer": "less often than",
            "more": "more often than",
            "same": "as often, within sampling error, as",
        }
        lines.append(
            f"UOTM makes the rare digit {words[verdict['gan']]} the GAN and "
            f"{words[verdict['otm']]} OTM; the relaxed marginal does not set "
            "it apart from both balanced methods."
        )
    if targets and "uotm" in targets:
        kept = targets["uotm"]
        ratio = kept / t
        change = (
            f"lowers the rare digit's share of its target from {t:.2%} to "
            f"{kept:.2%} ({ratio:.2f} times): the relaxed marginal sheds part "
            "of the rare class"
            if ratio < 0.8
            else f"raises the rare digit's share of its target from {t:.2%} to "
            f"{kept:.2%} ({ratio:.2f} times): the relaxed marginal adds mass to "
            "the rare class"
            if ratio > 1.25
            else f"keeps the rare digit's share of its target at {kept:.2%}, "
            f"close to the data's {t:.2%}: the relaxed marginal leaves the class "
            "proportions nearly as they are"
        )
        z = _gap_to_exact(rare["uotm"], kept, n["uotm"])
        follows = (
            "its generator makes the share that target asks for, within sampling error"
            if abs(z) < GAP
            else f"its generator's {rare['uotm']:.2%} is {abs(z):.1f} standard "
            f"errors {'below' if z < 0 else 'above'} that target"
        )
        lines.append(f"UOTM's potential {change}; {follows}.")
        if confident and "uotm" in confident and abs(z) >= GAP:
            sure = confident["uotm"]
            lines.append(
                f"Over the images the feature network is sure of, UOTM makes it "
                f"{sure:.2%}"
                + (
                    ", close to that target: the excess over all images comes "
                    "from badly drawn digits counted as the rare one."
                    if abs(sure - kept) <= 0.25 * kept
                    else f", still {sure / kept:.2f} times that target."
                )
            )
    return " ".join(lines + _seed_caveat(per_seed))


@torch.no_grad()
def confident_class_shares(
    images: torch.Tensor, threshold: float = 0.9
) -> tuple[np.ndarray, float]:
    """Digit shares among the ``images`` that the feature network is sure of.

    A badly drawn digit still gets a class, often a wrong one; counting only
    the images whose top class has probability at least ``threshold`` keeps
    that noise out of the class shares. Returns the shares (10,) over the
    confident images and the fraction of images that were confident.
    """
    from .classifier import load_classifier

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold = {threshold!r}; expected a value in (0, 1)")
    model = load_classifier()
    probs = torch.cat(
        [torch.softmax(model(chunk), dim=1) for chunk in images.split(2000)]
    )
    top, label = probs.max(dim=1)
    sure = top >= threshold
    if not sure.any():
        return np.full(10, np.nan), 0.0
    counts = torch.bincount(label[sure], minlength=10).double()
    return (counts / counts.sum()).numpy(), float(sure.float().mean())
