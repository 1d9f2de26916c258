"""The helpers behind the chapters beyond the report, on made-up results."""

import json

import numpy as np
import pytest
import torch

from uotlib import report, study_report
from uotlib.studies import STUDY_EMA, get_study, study_dir
from uotlib.sweep import SWEEP_EPOCHS, sweep_dir


def _write(folder, epochs, evals, seconds=2.0):
    folder.mkdir(parents=True)
    metrics = {
        "config": {"epochs": epochs},
        "epochs": [{"epoch": e, "seconds": seconds} for e in range(1, epochs + 1)],
        "evals": evals,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(study_report, "results_root", lambda: tmp_path)
    monkeypatch.setattr(report, "results_root", lambda: tmp_path)
    return tmp_path


def test_study_tables_read_last_epoch_and_count_seeds(root):
    study = get_study("outliers")
    epochs = study.config("gan", 0).epochs
    for run, share in (("gan", 0.02), ("otm", 0.03)):
        last = {
            "epoch": epochs,
            "raw": {"fid": 10.0, "outlier_share": share},
            STUDY_EMA.label: {"fid": 5.0, "outlier_share": share / 2},
        }
        _write(study_dir(root, "outliers", run, 0), epochs, [last])
    # an unfinished run counts for the status line but not for the numbers
    _write(study_dir(root, "outliers", "uotm", 0), 3, [])

    assert study_report.final_values("outliers", "otm", "raw", "outlier_share") == [
        0.03
    ]
    assert study_report.final_values("outliers", "uotm", "raw", "fid") == []
    status = study_report.study_status_markdown("outliers")
    assert "Results incomplete" in status and "seed 0 at epoch 3" in status
    table = study_report.study_table_markdown(
        "outliers", (("fid", "FID", 1), ("outlier_share", "share", 3))
    )
    assert f"| `otm` | {STUDY_EMA.label} | 5.0 | 0.015 | 1 |" in table
    assert "| `uotm` | raw | — | — | 0 |" in table


def test_class_shares_and_kl(root):
    study = get_study("imbalance")
    epochs = study.config("uotm", 0).epochs
    counts = [100] * 10
    counts[3] = 10
    last = {"epoch": epochs, STUDY_EMA.label: {"class_histogram": counts}}
    _write(study_dir(root, "imbalance", "uotm", 0), epochs, [last])
    (shares,) = study_report.generated_class_shares("imbalance", "uotm")
    assert shares[3] == pytest.approx(10 / 910)
    uniform = np.full(10, 0.1)
    assert study_report.kl_to(uniform, uniform) == pytest.approx(0.0)
    assert study_report.kl_to(shares, uniform) > 0
    # the study's training set keeps a tenth of the rare digit
    train = study_report.training_class_shares()
    assert train[3] < 0.02 and train.sum() == pytest.approx(1.0)


def test_tau_rows_join_the_sweep_and_multiply_the_cost(root):
    taus = dict((name, tau) for tau, name in study_report.tau_variants())
    assert taus["uot"] == 1e-3 and taus["tau-0"] == 0.0
    last = {
        "epoch": SWEEP_EPOCHS,
        "raw": {"fid": 50.0, "sq_distance": 400.0},
        STUDY_EMA.label: {"fid": 40.0},
    }
    _write(sweep_dir(root, "tau-1e-2"), SWEEP_EPOCHS, [last])
    (row,) = study_report.tau_rows()
    assert row["tau"] == 1e-2 and row["cost"] == pytest.approx(4.0)
    assert "| 0.01 | `tau-1e-2` | 50.0 | 40.0 | 400 | 4.000 |" in (
        study_report.tau_table_markdown()
    )
    # figures draw with results and without
    assert study_report.figure_tau().axes[0].lines
    assert study_report.figure_study_curves("architecture").axes


def test_share_gap_counts_standard_errors_and_refuses_bad_shares():
    # 0.9 % against 0.4 % on 10,000 samples each: about 4.4 standard errors
    gap = study_report.share_gap(0.009, 0.004, 10_000, 10_000)
    assert gap == pytest.approx(0.005 / np.sqrt((0.009 * 0.991 + 0.004 * 0.996) / 1e4))
    assert study_report.share_gap(0.004, 0.009, 10_000, 10_000) == pytest.approx(-gap)
    # a hundred times more samples shrink the error tenfold
    assert study_report.share_gap(0.009, 0.004, 10**6, 10**6) == pytest.approx(10 * gap)
    assert study_report.share_gap(0.0, 0.0, 10, 10) == 0.0
    with pytest.raises(ValueError, match="share q = 1.5"):
        study_report.share_gap(0.1, 1.5, 10, 10)
    with pytest.raises(ValueError, match="n_p = 0"):
        study_report.share_gap(0.1, 0.2, 0, 10)


def _finish(root, name, run, generator_values, seed=0):
    """A finished run of study ``name`` whose last EMA evaluation holds
    ``generator_values``."""
    epochs = get_study(name).config(run, 0).epochs
    last = {"epoch": epochs, STUDY_EMA.label: generator_values}
    _write(study_dir(root, name, run, seed), epochs, [last])


def test_outliers_verdict_tells_a_real_gap_from_sampling_noise(root):
    assert "Not every method" in study_report.outliers_verdict_markdown(0.01, 0.001)
    values = {"gan": (0.009, 0.32), "otm": (0.0042, 0.27), "uotm": (0.0039, 0.75)}
    for run, (share, recall) in values.items():
        _finish(
            root,
            "outliers",
            run,
            {"outlier_share": share, "n": 10_000, "fid": 60.0, "recall": recall},
        )
    text = study_report.outliers_verdict_markdown(0.01, 0.0008)
    assert "UOTM makes fewer outliers than GAN" in text
    assert "UOTM cannot be told apart from OTM" in text
    assert "makes as few outliers in this run" in text and "lowest recall" in text
    assert "within sampling error of the data's" in text
    # with the potentials' targets, the verdict says why each method got there
    text = study_report.outliers_verdict_markdown(
        0.01, 0.0008, {"gan": 0.007, "otm": 0.01, "uotm": 0.004}
    )
    assert "OTM's balanced potential keeps the outliers' full share" in text
    assert "from 1.00% to 0.40%" in text and "by design" in text
    text = study_report.outliers_verdict_markdown(
        0.01, 0.0008, {"gan": 0.007, "otm": 0.01, "uotm": 0.0095}
    )
    assert "does not single them out" in text


def test_outliers_verdict_names_a_clear_winner(root):
    for run, share in (("gan", 0.01), ("otm", 0.008), ("uotm", 0.002)):
        _finish(
            root,
            "outliers",
            run,
            {"outlier_share": share, "n": 10_000, "fid": 60.0, "recall": 0.5},
        )
    text = study_report.outliers_verdict_markdown(0.01, 0.0008)
    assert "clearly the fewest" in text and "does not hold" not in text


def _histogram(rare_count, digit=3, others=1000):
    counts = [others] * 10
    counts[digit] = rare_count
    return counts


def test_imbalance_verdict_compares_rare_shares_by_standard_errors(root):
    train = np.full(10, 0.1)
    train[3] = 0.011
    train /= train.sum()
    assert "Not every method" in study_report.imbalance_verdict_markdown(train, 3)
    # the GAN and OTM near the training share, UOTM far below both
    for run, count in (("gan", 100), ("otm", 105), ("uotm", 20)):
        _finish(root, "imbalance", run, {"class_histogram": _histogram(count)})
    text = study_report.imbalance_verdict_markdown(train, 3)
    assert "least often of the three" in text
    assert "`uotm` makes it 0.22% of its digits" in text
    assert "standard errors below it" in text
    text = study_report.imbalance_verdict_markdown(train, 3, {"uotm": 0.0025})
    assert "lowers the rare digit's share of its target" in text
    assert "within sampling error" in text.split("UOTM's potential")[1]
    text = study_report.imbalance_verdict_markdown(train, 3, {"uotm": train[3]})
    assert "leaves the class proportions nearly as they are" in text
    assert "standard errors below that target" in text
    text = study_report.imbalance_verdict_markdown(
        train, 3, {"uotm": train[3]}, {"uotm": train[3] * 1.1}
    )
    assert "close to that target: the excess" in text
    text = study_report.imbalance_verdict_markdown(
        train, 3, {"uotm": train[3]}, {"uotm": train[3] * 0.5}
    )
    assert "still 0.50 times that target" in text


def test_imbalance_verdict_does_not_read_noise_as_a_difference(root):
    train = np.full(10, 0.1)
    for run, count in (("gan", 1000), ("otm", 1010), ("uotm", 990)):
        _finish(root, "imbalance", run, {"class_histogram": _histogram(count)})
    text = study_report.imbalance_verdict_markdown(train, 3)
    assert "as often, within sampling error, as the GAN" in text
    assert "least often" not in text and "most often" not in text


def test_imbalance_verdict_sets_the_seeds_ranges_against_each_other(root, monkeypatch):
    import dataclasses

    from uotlib import studies

    study = dataclasses.replace(get_study("imbalance"), seeds=(0, 1))
    monkeypatch.setitem(studies.STUDIES, "imbalance", study)
    train = np.full(10, 0.1)
    train[3] = 0.011
    train /= train.sum()
    for run, counts in (("gan", (100, 104)), ("otm", (105, 98)), ("uotm", (20, 26))):
        for seed, count in enumerate(counts):
            hist = {"class_histogram": _histogram(count)}
            _finish(root, "imbalance", run, hist, seed=seed)
    text = study_report.imbalance_verdict_markdown(train, 3)
    assert "Over 2 seeds" in text and "With one seed" not in text
    assert "lies apart from that of GAN and OTM" in text
    # a second UOTM seed as high as the others: the seeds overlap
    (study_dir(root, "imbalance", "uotm", 1) / "metrics.json").unlink()
    study_dir(root, "imbalance", "uotm", 1).rmdir()
    _finish(root, "imbalance", "uotm", {"class_histogram": _histogram(101)}, seed=1)
    text = study_report.imbalance_verdict_markdown(train, 3)
    assert "overlaps the others'" in text


def test_confident_class_shares_skip_unsure_images():
    from uotlib.data import load_mnist

    digits = load_mnist(train=False)
    images, labels = digits.images[:500], digits.labels[:500]
    shares, sure = study_report.confident_class_shares(images, 0.9)
    # real test digits: nearly all confident, shares close to the true ones
    true = np.bincount(labels.numpy(), minlength=10) / 500
    assert sure > 0.95 and np.abs(shares - true).max() < 0.02
    # flat grey images are no digit the network is sure of
    grey = torch.zeros(50, 1, 28, 28)
    noise = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    _, sure = study_report.confident_class_shares(torch.cat([grey, 2 * noise - 1]))
    assert sure < 0.5
    with pytest.raises(ValueError, match="threshold = 1.5"):
        study_report.confident_class_shares(images, 1.5)


def _arch_run(root, run, seed, raw, ema):
    study = get_study("architecture")
    epochs = study.config(run, 0).epochs
    last = {"epoch": epochs, "raw": {"fid": raw}, STUDY_EMA.label: {"fid": ema}}
    _write(study_dir(root, "architecture", run, seed), epochs, [last])


def _mlp_run(root, run, seed, raw, ema):
    from uotlib.experiments import run_dir

    epochs = get_study("architecture").config("gan-conv", 0).epochs
    at = {"epoch": epochs, "raw": {"fid": raw}, STUDY_EMA.label: {"fid": ema}}
    later = {"epoch": epochs + 10, "raw": {"fid": 1.0}, STUDY_EMA.label: {"fid": 1.0}}
    _write(run_dir(root, run, seed), epochs + 10, [at, later])


def test_architecture_verdict_judges_the_guess_against_the_mlp(root):
    assert "have not finished" in study_report.architecture_verdict_markdown()
    # the MLP: UOTM ahead of the GAN on the raw generator only
    for seed in (0, 1, 2):
        _mlp_run(root, "gan", seed, raw=100.0 + seed, ema=50.0 + seed)
        _mlp_run(root, "uot-exp", seed, raw=60.0 + seed, ema=70.0 + seed)
    # one seed of each conv run: a provisional verdict
    _arch_run(root, "gan-conv", 0, raw=300.0, ema=300.0)
    _arch_run(root, "uotm-conv", 0, raw=200.0, ema=200.0)
    text = study_report.architecture_verdict_markdown()
    assert text.count("With the MLP at the same epoch") == 2
    assert "a ratio of 0.67" in text  # 200 / 300
    assert "Provisionally, with 1 of 3 seeds" in text
    assert text.count("one seed each: no range to compare") == 2
    assert f"ranges apart: raw, {STUDY_EMA.label}), and the MLP" in text
    assert (
        f"does not ({STUDY_EMA.label}): at equal budget the report's guess holds"
        in text
    )
    # three seeds each, with ranges that overlap: the guess does not hold
    for seed, (g, u) in enumerate(((300.0, 250.0), (240.0, 320.0)), start=1):
        _arch_run(root, "gan-conv", seed, raw=g, ema=g)
        _arch_run(root, "uotm-conv", seed, raw=u, ema=u)
        text = study_report.architecture_verdict_markdown()
        if seed == 1:
            # two seeds have ranges, which a third can only widen
            assert "Provisionally, with 2 of 3 seeds" in text
            assert "no range" not in text and "can only widen" in text
    assert "Provisionally" not in text and "the ranges overlap" in text
    assert "the report's guess does not hold here" in text
    # an unfinished seed is not counted
    assert len(study_report.final_values("architecture", "gan-conv", "raw", "fid")) == 3
    # the wider pair reads its own folder, not the small pair's
    wide = study_report.architecture_verdict_markdown("architecture-wide")
    assert "`architecture-wide` study have not finished" in wide
