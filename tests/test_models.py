"""Networks: shapes, ranges, per-image independence, R1's double backward, and
that the architecture chosen by the config survives a checkpoint."""

import pytest
import torch

from uotlib.config import TrainConfig
from uotlib.data import ImageSet
from uotlib.models import (
    ConvCritic,
    ConvGenerator,
    MLPCritic,
    MLPGenerator,
    count_parameters,
)
from uotlib.penalty import r1_penalty
from uotlib.train import (
    CHECKPOINT,
    Source,
    Trainer,
    build_models,
    load_generator_from_checkpoint,
    train,
)

CONV = dict(
    method="uot",
    g_arch="conv",
    d_arch="conv",
    epochs=1,
    batch_size=64,
    n_eval=64,
    ema=[{"decay": 0.9}],
    device="cpu",
)


@pytest.fixture(scope="module")
def tiny_data():
    # random images in [-1, 1]: the round trip needs data, not digits
    rng = torch.Generator().manual_seed(0)
    images = torch.rand(256, 1, 28, 28, generator=rng) * 2 - 1
    return ImageSet(images, torch.zeros(256, dtype=torch.long))


@pytest.mark.parametrize("g_arch", ["mlp", "conv"])
@pytest.mark.parametrize("source", ["image", "upsample"])
def test_generator_maps_noise_to_images_in_the_tanh_range(g_arch, source):
    config = TrainConfig(g_arch=g_arch, source=source, device="cpu")
    generator, _ = build_models(config)
    z = Source(config.source, config.z_side).sample(5, torch.Generator())
    assert z.shape == (5, config.z_dim)
    images = generator(z)
    assert images.shape == (5, 1, 28, 28)
    assert images.abs().max() <= 1 and images.std() > 0


def test_conv_generator_reads_flat_and_image_shaped_noise_alike():
    generator = ConvGenerator(28 * 28)
    z = torch.randn(3, 1, 28, 28)
    assert torch.equal(generator(z), generator(z.flatten(1)))


@pytest.mark.parametrize("make", [MLPCritic, ConvCritic])
def test_critic_gives_one_unbounded_scalar_per_image(make):
    critic = make()
    y = torch.rand(6, 1, 28, 28) * 2 - 1
    values = critic(y)
    assert values.shape == (6,)
    # no batch statistic: each image's value is the value of that image alone
    alone = torch.cat([critic(y[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(values, alone)
    # no final activation: a scaled last layer scales the output past [-1, 1]
    with torch.no_grad():
        last = critic.net[-1]
        last.weight.mul_(1e4)
        last.bias.zero_()
    assert critic(y).abs().max() > 1


@pytest.mark.parametrize("make", [MLPCritic, ConvCritic])
def test_r1_gradient_wrt_critic_parameters_matches_finite_differences(make):
    # R1's gradient wrt the parameters is a double backward through v; a
    # central difference of the penalty along a random parameter direction d
    # checks it in float64, where the kinks of LeakyReLU are not hit by eps
    torch.manual_seed(0)
    critic = make().double()
    y = torch.rand(4, 1, 28, 28, dtype=torch.float64) * 2 - 1
    params = list(critic.parameters())

    # the last bias shifts v but not its gradient in y, so R1 does not see it
    penalty = r1_penalty(critic, y, 1.0)
    grads = torch.autograd.grad(penalty, params, allow_unused=True)
    assert grads[-1] is None
    grads = [
        torch.zeros_like(p) if g is None else g
        for g, p in zip(grads, params, strict=True)
    ]
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0

    direction = [torch.randn_like(p) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction, strict=True))
    eps = 1e-6
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * eps * d)
        values.append(r1_penalty(critic, y, 1.0).item())
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert numeric == pytest.approx(analytic.item(), rel=1e-5)


@pytest.mark.parametrize(
    "g_arch, d_arch, g_cls, d_cls",
    [
        ("mlp", "mlp", MLPGenerator, MLPCritic),
        ("mlp", "conv", MLPGenerator, ConvCritic),
        ("conv", "mlp", ConvGenerator, MLPCritic),
        ("conv", "conv", ConvGenerator, ConvCritic),
    ],
)
def test_build_models_picks_the_classes_the_config_names(g_arch, d_arch, g_cls, d_cls):
    config = TrainConfig(g_arch=g_arch, d_arch=d_arch)
    generator, critic = build_models(config)
    assert type(generator) is g_cls and type(critic) is d_cls


def test_conv_channels_come_from_the_config():
    config = TrainConfig(
        g_arch="conv", d_arch="conv", g_channels=(8, 4), d_channels=(4, 8)
    )
    generator, critic = build_models(config)
    assert generator.channels == (8, 4) and critic.channels == (4, 8)
    # Linear(784, 8*49) + ConvT(8, 4, 4) + ConvT(4, 1, 4), weights and biases
    assert count_parameters(generator) == (784 + 1) * 392 + 8 * 4 * 16 + 4 + 4 * 16 + 1
    # Conv(1, 4, 4) + Conv(4, 8, 4) + Linear(8*49, 1)
    assert count_parameters(critic) == 16 * 4 + 4 + 4 * 8 * 16 + 8 + 392 + 1


def test_default_parameter_counts_match_the_docstrings():
    assert count_parameters(ConvGenerator(784)) == 1_239_345
    assert count_parameters(ConvGenerator(100)) == 166_833
    assert count_parameters(ConvCritic()) == 10_065


def test_conv_run_loads_back_as_the_generator_it_trained(tmp_path, tiny_data):
    config = TrainConfig(**CONV)
    train(config, tmp_path, lambda g, s: {}, tiny_data, progress=False)

    # the same epoch replayed here: training is deterministic on the CPU
    trainer = Trainer(config)
    trainer.train_epoch(tiny_data)
    trainer.generator.eval()
    z = trainer.sample_source(8, torch.Generator().manual_seed(1))

    for ema, trained in ((False, trainer.generator), (True, trainer.emas["ema0.9"])):
        trained = getattr(trained, "module", trained)
        loaded, sample = load_generator_from_checkpoint(tmp_path / CHECKPOINT, ema)
        assert type(loaded) is ConvGenerator
        assert sample(8, torch.Generator().manual_seed(1)).shape == z.shape
        with torch.no_grad():
            assert torch.equal(loaded(z), trained(z))

    # the final snapshot holds half-precision weights, so agreement is approximate
    loaded, _ = load_generator_from_checkpoint(tmp_path / "generator_e1.pt")
    assert type(loaded) is ConvGenerator
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), trainer.generator(z), atol=2e-2, rtol=0)


def test_checkpoint_from_before_the_arch_keys_loads_as_mlp(tmp_path, tiny_data):
    config = TrainConfig(
        **{**CONV, "g_arch": "mlp", "d_arch": "mlp", "g_hidden": (32,)}
    )
    train(config, tmp_path, lambda g, s: {}, tiny_data, progress=False)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    for key in ("g_arch", "d_arch", "g_channels", "d_channels"):
        del state["config"][key]
    torch.save(state, tmp_path / "old.pt")
    generator, _ = load_generator_from_checkpoint(tmp_path / "old.pt")
    assert type(generator) is MLPGenerator
    torch.testing.assert_close(
        generator.net[0].weight, state["generator"]["net.0.weight"], rtol=0, atol=0
    )
