"""The helpers behind the experiment chapters: shares, tables, orderings."""

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from uotlib import report
from uotlib.ema import EMA
from uotlib.experiments import ROWS, Row, summarise


def test_initial_weight_share_matches_an_ema_run():
    # an EMA of a constant network that starts at 0 and jumps to 1 holds
    # exactly the share 1 - (share of the start) at every step
    for warmup in (False, True):
        net = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            net.weight.fill_(0.0)
        ema = EMA(net, decay=0.99, warmup=warmup)
        with torch.no_grad():
            net.weight.fill_(1.0)
        for _ in range(50):
            ema.update(net)
        share = report.initial_weight_share(0.99, np.array([50]), warmup)[0]
        assert ema.module.weight.item() == pytest.approx(1 - share, rel=1e-6)


def test_initial_weight_share_without_warmup_is_a_power():
    steps = np.array([0, 10, 23400])
    assert np.allclose(report.initial_weight_share(0.9999, steps), 0.9999**steps)


def _fake_results(tmp_path, fids):
    for seed, offset in ((0, 0.0), (1, 2.0)):
        for run, table in fids.items():
            evals = [
                {"epoch": epoch, **{g: {"fid": v + offset} for g, v in gens.items()}}
                for epoch, gens in table.items()
            ]
            folder = tmp_path / run / f"seed{seed}"
            folder.mkdir(parents=True)
            metrics = {"config": {"epochs": 100}, "epochs": [], "evals": evals}
            (folder / "metrics.json").write_text(json.dumps(metrics))


def test_ordering_table_ranks_and_spearman(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "results_root", lambda: tmp_path)
    _fake_results(
        tmp_path,
        {
            "gan": {100: {"raw": 10.0}},
            "uot": {60: {"raw": 40.0}, 100: {"raw": 30.0}},
        },
    )
    text = report.ordering_markdown(ROWS[:3], seeds=(0, 1))
    assert "| GAN baseline | 1 | 1 | 1.00 | 1.00 |" in text
    # ours: 11, 41, 31 over the two seeds, ranks 1, 3, 2 against 1, 2, 3
    assert f"| {31 / 11:.2f} |" in text
    assert "Spearman rank correlation over 3 rows: 0.50; 1 of 3 rows" in text


def test_summary_reads_rows_from_shared_runs(tmp_path):
    _fake_results(tmp_path, {"uot": {60: {"raw": 20.0}, 100: {"raw": 30.0}}})
    summary = {e["row"]: e for e in summarise(tmp_path, seeds=(0, 1))}
    row60 = summary["UOT baseline, 60 epochs"]
    assert row60["fid_mean"] == pytest.approx(21.0)
    assert row60["fid_std"] == pytest.approx(np.std([20.0, 22.0], ddof=1))
    assert summary["GAN baseline"]["seeds"] == []


def test_row_value_reads_the_named_generator():
    metrics = {"evals": [{"epoch": 50, "raw": {"fid": 3.0}, "ema0.9999": {"fid": 9.0}}]}
    row = Row("x", 1.0, "uot-exp", 50, "ema0.9999")
    from uotlib.experiments import row_value

    assert row_value(metrics, row) == 9.0
    assert row_value(metrics, Row("x", 1.0, "uot-exp", 60)) is None


def test_prune_snapshots_keeps_what_the_book_reads(tmp_path):
    from uotlib.experiments import prune_snapshots, run_dir

    for seed in (0, 1):
        folder = run_dir(tmp_path, "uot-exp", seed)
        folder.mkdir(parents=True)
        for epoch in (50, 70):
            gens = {g: {"w": torch.zeros(2)} for g in ("raw", "ema0.9999", "ema0.999")}
            torch.save({"generators": gens}, folder / f"generator_e{epoch}.pt")
        prune_snapshots(tmp_path, "uot-exp", seed)
    kept = torch.load(run_dir(tmp_path, "uot-exp", 0) / "generator_e50.pt")
    assert set(kept["generators"]) == {"raw", "ema0.9999"}
    assert not (run_dir(tmp_path, "uot-exp", 0) / "generator_e70.pt").exists()
    assert not list(run_dir(tmp_path, "uot-exp", 1).glob("*.pt"))
    # the book reads the GAN's EMA too, but a snapshot made before the run
    # kept one is pruned to what it has
    folder = run_dir(tmp_path, "gan", 0)
    folder.mkdir(parents=True)
    torch.save({"generators": {"raw": {}}}, folder / "generator_e100.pt")
    prune_snapshots(tmp_path, "gan", 0)
    assert set(torch.load(folder / "generator_e100.pt")["generators"]) == {"raw"}


def test_target_check_needs_ratio_separation_and_every_seed(tmp_path, monkeypatch):
    from uotlib.experiments import TUNED_ROW

    monkeypatch.setattr(report, "results_root", lambda: tmp_path)
    _fake_results(
        tmp_path,
        {"gan": {100: {"raw": 10.0}}, "uot-exp": {100: {"ema0.999": 5.0}}},
    )
    check = report.target_check(TUNED_ROW, ROWS[0], seeds=(0, 1))
    assert check["ratio"] == pytest.approx(6 / 11)
    assert not check["overlap"] and check["verdict"] == "met"
    assert "The goal is met." in report.target_markdown(TUNED_ROW, ROWS[0], (0, 1))
    # a third seed that has not run leaves the question open
    assert report.target_check(TUNED_ROW, ROWS[0])["verdict"] == "undecided"
    # a ratio below the goal is not enough when the ranges overlap
    check = report.target_check(TUNED_ROW, ROWS[0], seeds=(0, 1), target=0.9)
    assert check["verdict"] == "met"
    check = report.target_check(TUNED_ROW, ROWS[0], seeds=(0, 1), target=0.5)
    assert check["verdict"] == "not met"


def test_overlapping_ranges_fail_the_target(tmp_path, monkeypatch):
    from uotlib.experiments import TUNED_ROW

    monkeypatch.setattr(report, "results_root", lambda: tmp_path)
    _fake_results(
        tmp_path,
        {"gan": {100: {"raw": 10.0}}, "uot-exp": {100: {"ema0.999": 10.5}}},
    )
    check = report.target_check(TUNED_ROW, ROWS[0], seeds=(0, 1), target=2.0)
    assert check["overlap"] and check["verdict"] == "not met"


def test_report_verdict_turns_on_the_matched_gans(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "results_root", lambda: tmp_path)
    fids = {
        "gan": {100: {"raw": 10.0, "ema0.999": 8.0}},
        "uot-exp": {100: {"raw": 12.0, "ema0.999": 4.0}},
        "gan-lr5e-4": {100: {"ema0.999": 6.0}},
        # seeds 5.9 and 7.9 against the GAN's 6 and 8: the ranges overlap
        "uot-lr5e-4": {100: {"ema0.999": 5.9}},
    }
    _fake_results(tmp_path, fids)
    text = report.report_verdict_markdown(seeds=(0, 1))
    assert "does not hold here. 1 of 2 tuned UOT settings" in text
    assert "ratio 0.56, ranges apart" in text and "ranges overlapping" in text
    # the untuned exp run is behind the GAN, so nothing is said of the ordering
    assert "rank UOT first" not in text
    # the asterisk of Ψ* is escaped so that it does not end the emphasis
    assert r"*Tuned UOT: Ψ\* = exp + EMA 0.999*" in text
    # a third seed that has not run leaves the verdict open
    assert "not tested yet" in report.report_verdict_markdown()

    fids["uot-exp"][100]["ema0.999"] = 7.5
    for folder in tmp_path.iterdir():
        shutil.rmtree(folder)
    _fake_results(tmp_path, fids)
    assert "verdict holds here" in report.report_verdict_markdown(seeds=(0, 1))


def test_figure_rows_draws_each_seed_and_stops_at_the_row_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "results_root", lambda: tmp_path)
    _fake_results(tmp_path, {"uot": {60: {"raw": 40.0}, 100: {"raw": 30.0}}})
    lines = report.figure_rows([ROWS[1]]).axes[0].lines
    # two seeds thin, then the mean; the row reads epoch 60, so 100 is left out
    assert len(lines) == 3
    mean = lines[-1]
    assert list(mean.get_xdata()) == [60] and list(mean.get_ydata()) == [41.0]
    assert mean.get_label() == ROWS[1].label
    # no results: a note instead of lines
    assert not report.figure_rows([ROWS[0]]).axes[0].lines


def test_best_tuned_row_waits_for_every_seed(tmp_path, monkeypatch):
    from uotlib.experiments import LR_TUNED_ROW, TUNED_ROW

    monkeypatch.setattr(report, "results_root", lambda: tmp_path)
    # nothing finished: the first tuned row stands
    assert report.best_tuned_row(seeds=(0, 1)) == TUNED_ROW
    _fake_results(
        tmp_path,
        {"uot-exp": {100: {"ema0.999": 20.0}}, "uot-lr5e-4": {100: {"ema0.999": 8.0}}},
    )
    assert report.best_tuned_row(seeds=(0, 1)) == LR_TUNED_ROW
    # with a third seed asked for, neither row is complete
    assert report.best_tuned_row(seeds=(0, 1, 2)) == TUNED_ROW
    (tmp_path / "uot-exp").rename(tmp_path / "elsewhere")
    assert report.best_tuned_row(seeds=(0, 1)) == LR_TUNED_ROW


def test_reproducing_some_seeds_keeps_the_others_in_the_summary(tmp_path):
    from uotlib import cli

    _fake_results(tmp_path, {"gan": {100: {"raw": 10.0}}})
    for seed in (0, 1):
        path = tmp_path / "gan" / f"seed{seed}" / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["epochs"] = [{"epoch": e} for e in range(1, 101)]
        path.write_text(json.dumps(metrics))
    # both seeds are finished, so this trains nothing and only summarises
    assert (
        cli.main(
            ["reproduce", "--runs", "gan", "--seeds", "1", "--results", str(tmp_path)]
        )
        == 0
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    gan = next(e for e in summary if e["row"] == "GAN baseline")
    assert gan["seeds"] == [0, 1]
    assert gan["fid_mean"] == pytest.approx(11.0)
    assert gan["command"] == "python -m uotlib reproduce --runs gan --seeds 0 1 2"
