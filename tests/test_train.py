"""Training loop: resume identity, divergence stop, configs, CLI."""

import json

import numpy as np
import pytest
import torch

from uotlib.cli import main
from uotlib.config import ConfigError, TrainConfig, from_dict, load_config
from uotlib.data import ImageSet, load_mnist
from uotlib.experiments import RUNS
from uotlib.train import (
    CHECKPOINT,
    TrainingDiverged,
    load_generator_from_checkpoint,
    train,
)

TINY = dict(
    epochs=3,
    batch_size=64,
    g_hidden=(32,),
    d_hidden=(32,),
    n_eval=64,
    eval_every=2,
    ema=[{"decay": 0.9}],
    snapshot_epochs=[2],
    device="cpu",
)


def no_eval(generator, sample_source):
    return {}


@pytest.fixture(scope="module")
def tiny_data():
    full = load_mnist(train=True)
    return ImageSet(full.images[:256].clone(), full.labels[:256].clone())


@pytest.mark.parametrize("method", ["uot", "gan"])
def test_killed_run_resumes_bit_identical(tmp_path, tiny_data, method):
    config = TrainConfig(method=method, **TINY)
    whole = train(config, tmp_path / "a", no_eval, tiny_data, progress=False)

    train(config, tmp_path / "b", no_eval, tiny_data, progress=False, stop_after=1)
    state = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)
    assert state["epoch"] == 1
    resumed = train(config, tmp_path / "b", no_eval, tiny_data, progress=False)

    a = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=False)
    b = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)
    for key in ("generator", "critic"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    for name, tensor in a["emas"]["ema0.9"].items():
        assert torch.equal(tensor, b["emas"]["ema0.9"][name])
    losses = [{k: e[k] for k in ("loss_d", "loss_g")} for e in whole["epochs"]]
    assert losses == [
        {k: e[k] for k in ("loss_d", "loss_g")} for e in resumed["epochs"]
    ]


def test_outputs_of_a_run(tmp_path, tiny_data):
    config = TrainConfig(method="uot", **TINY)
    metrics = train(config, tmp_path, lambda g, s: {"n": 1}, tiny_data, progress=False)
    assert [e["epoch"] for e in metrics["evals"]] == [2, 3]
    assert set(metrics["evals"][0]) == {"epoch", "raw", "ema0.9"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    for name in ("samples.png", "samples_ema0.9.png", "generator_e2.pt"):
        assert (tmp_path / name).is_file()
    generator, sample = load_generator_from_checkpoint(
        tmp_path / "generator_e2.pt", True
    )
    images = generator(sample(5, torch.Generator().manual_seed(0)))
    assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, tiny_data):
    config = TrainConfig(method="uot", **TINY)
    train(config, tmp_path, no_eval, tiny_data, progress=False, stop_after=1)
    good = torch.load(tmp_path / CHECKPOINT, weights_only=False)

    poisoned = ImageSet(tiny_data.images.clone(), tiny_data.labels)
    poisoned.images[:] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"loss_d = nan at epoch 2, step 5"):
        train(config, tmp_path, no_eval, poisoned, progress=False)
    kept = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert kept["epoch"] == 1
    assert torch.equal(
        kept["generator"]["net.0.weight"], good["generator"]["net.0.weight"]
    )


def test_resume_with_another_config_is_refused(tmp_path, tiny_data):
    train(
        TrainConfig(**TINY), tmp_path, no_eval, tiny_data, progress=False, stop_after=1
    )
    with pytest.raises(ValueError, match="different config"):
        train(TrainConfig(**{**TINY, "tau": 0.5}), tmp_path, no_eval, tiny_data)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"psi1": "hinge"}, "psi1 = 'hinge'.*linear, softplus, exp, kl, chi2"),
        ({"method": "wgan"}, "method = 'wgan' is not valid"),
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"tau": -1.0}, "tau = -1.0"),
        ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
        ({"bf16": "yes"}, "bf16 must be true or false"),
        ({"taux": 1.0}, "unknown TrainConfig key.*taux"),
        ({"ema": [{"decay": 0.9, "warm": True}]}, "unknown EMASpec key.*warm"),
        ({"snapshot_epochs": [200]}, "snapshot epoch 200 is outside 1..100"),
    ],
)
def test_config_errors_name_the_bad_value(change, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(change)


def test_toml_config_round_trip_and_errors(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('method = "gan"\nepochs = 7\n[[ema]]\ndecay = 0.99\n')
    config = load_config(path)
    assert config.method == "gan" and config.epochs == 7
    assert config.ema[0].decay == 0.99
    path.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_every_named_run_is_a_valid_config():
    for name, config in RUNS.items():
        assert from_dict(config.to_dict()) == config, name


def test_cli_sample_writes_uint8_digits(tmp_path, tiny_data):
    train(TrainConfig(**TINY), tmp_path, no_eval, tiny_data, progress=False)
    out = tmp_path / "s.npy"
    code = main(
        ["sample", "--checkpoint", str(tmp_path / CHECKPOINT), "--n", "7"]
        + ["--seed", "3", "--out", str(out), "--ema"]
    )
    assert code == 0
    array = np.load(out)
    assert array.shape == (7, 28, 28) and array.dtype == np.uint8


def test_cli_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["train", "no-such-run"]) == 2
    assert f"neither a run name ({', '.join(RUNS)})" in capsys.readouterr().err
    code = main(
        ["sample", "--checkpoint", str(tmp_path / "x.pt"), "--n", "2"]
        + ["--out", str(tmp_path / "o.npy")]
    )
    assert code == 2
    assert "x.pt does not exist" in capsys.readouterr().err


def test_a_run_in_progress_cannot_be_trained_twice(tmp_path, tiny_data):
    from uotlib.train import run_lock

    with run_lock(tmp_path):
        with pytest.raises(RuntimeError, match="being trained by another process"):
            train(TrainConfig(**TINY), tmp_path, no_eval, tiny_data, progress=False)
    # released: the run can start now
    train(
        TrainConfig(**TINY), tmp_path, no_eval, tiny_data, progress=False, stop_after=1
    )
