"""The studies beyond the report: their runs, data and bookkeeping."""

import pytest
import torch

from uotlib import studies
from uotlib.cli import main
from uotlib.config import ConfigError
from uotlib.data import ImageSet, load_mnist
from uotlib.marginals import load_potential

DATA_KEYS = ("outlier_fraction", "minority_digit", "minority_keep", "data_seed")
NET_KEYS = ("g_arch", "d_arch", "g_hidden", "d_hidden", "g_channels", "d_channels")


@pytest.mark.parametrize("name", list(studies.STUDIES))
def test_runs_of_a_study_share_data_networks_and_budget(name):
    study = studies.get_study(name)
    configs = [study.config(run, 0).to_dict() for run in study.run_names]
    for key in DATA_KEYS + NET_KEYS + ("epochs", "batch_size", "lr_g", "lr_d", "tau"):
        assert len({str(c[key]) for c in configs}) == 1, (name, key)


def test_studies_ask_what_the_issue_asks():
    outliers = studies.get_study("outliers")
    assert outliers.run_names == ["gan", "otm", "uotm"]
    assert outliers.config("otm", 0).psi2 == "linear"
    assert outliers.config("gan", 0).outlier_fraction == 0.01
    imbalance = studies.get_study("imbalance").config("uotm", 1)
    assert (imbalance.minority_keep, imbalance.seed) == (0.1, 1)
    arch = studies.get_study("architecture")
    assert {arch.config(r, 0).method for r in arch.run_names} == {"gan", "uot"}
    assert all(arch.config(r, 0).g_arch == "conv" for r in arch.run_names)
    # the wider pair changes the channels and nothing else
    wide = studies.get_study("architecture-wide")
    assert wide.run_names == arch.run_names
    for run in arch.run_names:
        narrow, broad = arch.config(run, 0), wide.config(run, 0)
        assert broad.d_channels[0] > narrow.d_channels[0]
        assert broad.g_channels[0] > narrow.g_channels[0]
        same = broad.replace(g_channels=narrow.g_channels, d_channels=narrow.d_channels)
        assert same == narrow, run


def test_bad_names_are_named():
    with pytest.raises(ConfigError, match="'nope'"):
        studies.get_study("nope")
    with pytest.raises(ConfigError, match="no run 'bad'"):
        studies.run_study(studies.get_study("outliers"), runs=["bad"])


def test_shortened_runs_never_land_in_committed_results(capsys):
    assert main(["study", "outliers", "--epochs", "1"]) == 2
    assert "--results" in capsys.readouterr().err


def test_run_study_trains_resumes_and_keeps_seed0_ema(tmp_path, monkeypatch):
    full = load_mnist(train=True)
    tiny = ImageSet(full.images[:128].clone(), full.labels[:128].clone())
    small = studies._MLP.replace(
        epochs=1, batch_size=64, g_hidden=(16,), d_hidden=(16,), eval_every=1
    )
    study = studies.Study("tiny", studies._methods(small)[:2], seeds=(0, 1))
    calls = []

    def evaluator(generator, sample_source):
        calls.append(1)
        return {"fid": 1.0}

    studies.run_study(study, tmp_path, evaluator=evaluator, data=tiny)
    # two runs x two seeds x (raw + EMA)
    assert len(calls) == 8
    for run in ("gan", "otm"):
        snap = studies.study_dir(tmp_path, "tiny", run, 0) / "generator_e1.pt"
        generators = torch.load(snap, weights_only=False)["generators"]
        assert set(generators) == {studies.STUDY_EMA.label}
        seed1 = studies.study_dir(tmp_path, "tiny", run, 1)
        assert not list(seed1.glob("generator_e*.pt"))
        # seed 0 keeps its last potential, and it is the checkpoint's
        seed0 = studies.study_dir(tmp_path, "tiny", run, 0)
        critic, config = load_potential(seed0 / "potential_e1.pt")
        state = torch.load(seed0 / "checkpoint.pt", weights_only=False)["critic"]
        for key, value in critic.state_dict().items():
            torch.testing.assert_close(value, state[key], atol=1e-2, rtol=1e-3)
        assert config.method == ("gan" if run == "gan" else "uot")
        assert not list(seed1.glob("potential_e*.pt"))
        assert studies.study_metrics(tmp_path, "tiny", run, 1)["config"]["seed"] == 1
    # a finished run without its potential (trained before they were kept)
    # gets it when the study is run again, without training anything
    (studies.study_dir(tmp_path, "tiny", "gan", 0) / "potential_e1.pt").unlink()
    studies.run_study(study, tmp_path, evaluator=evaluator, data=tiny)
    assert len(calls) == 8
    assert (studies.study_dir(tmp_path, "tiny", "gan", 0) / "potential_e1.pt").is_file()
