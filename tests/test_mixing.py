"""Training sets with outliers or a rare digit, and the domain classifier."""

import re
from types import SimpleNamespace

import pytest
import torch

from uotlib import classifier as clf
from uotlib import data, fid
from uotlib.config import TrainConfig
from uotlib.data import (
    MNIST_TRAIN_LABEL_COUNTS,
    OUTLIER_LABEL_OFFSET,
    is_outlier,
    load_fashion_mnist,
    load_mnist,
    outlier_count,
    training_set,
)

needs_fashion = pytest.mark.skipif(
    not data.DEBIAN_FASHION_DIR.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)


def spec(**fields):
    """The four data fields of a config, unvalidated (to reach the data checks)."""
    defaults = dict(
        outlier_fraction=0.0, minority_digit=-1, minority_keep=1.0, data_seed=0
    )
    return SimpleNamespace(**{**defaults, **fields})


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(train=True)


@pytest.fixture(scope="module")
def fashion():
    return load_fashion_mnist(train=True)


@pytest.fixture(scope="module")
def with_outliers():
    return training_set(TrainConfig(outlier_fraction=0.01))


@pytest.fixture(scope="module")
def rare_three():
    return training_set(TrainConfig(minority_digit=3, minority_keep=0.1))


# ------------------------------------------------------------ training_set


def test_defaults_give_exactly_the_mnist_training_set(mnist):
    default = training_set(TrainConfig())
    assert torch.equal(default.images, mnist.images)
    assert torch.equal(default.labels, mnist.labels)


def test_outlier_count_makes_the_requested_share():
    assert outlier_count(0.01, 60_000) == 606
    for f in (0.001, 0.01, 0.1, 0.3):
        n_out = outlier_count(f, 60_000)
        assert abs(n_out / (60_000 + n_out) - f) < 1 / 60_000


@needs_fashion
def test_outliers_are_fashion_images_drawn_without_replacement(
    mnist, fashion, with_outliers
):
    assert len(with_outliers) == 60_000 + 606
    outlier = is_outlier(with_outliers.labels)
    assert outlier.sum().item() == 606
    assert not outlier[:60_000].any()  # digits first, in MNIST's order
    assert torch.equal(with_outliers.images[:60_000], mnist.images)
    assert torch.equal(with_outliers.labels[:60_000], mnist.labels)

    # each outlier is a distinct Fashion-MNIST training image with its class
    index = {
        image.numpy().tobytes(): i
        for i, image in enumerate(data.unit_to_uint8(fashion.images))
    }
    found = [
        index[image.numpy().tobytes()]
        for image in data.unit_to_uint8(with_outliers.images[60_000:])
    ]
    assert len(set(found)) == 606
    classes = with_outliers.labels[60_000:] - OUTLIER_LABEL_OFFSET
    assert torch.equal(classes, fashion.labels[found])


@needs_fashion
def test_outlier_draw_depends_only_on_the_data_seed(with_outliers):
    again = training_set(TrainConfig(outlier_fraction=0.01, seed=7))
    assert torch.equal(again.images, with_outliers.images)
    other = training_set(TrainConfig(outlier_fraction=0.01, data_seed=1))
    assert len(other) == len(with_outliers)
    assert not torch.equal(other.images[60_000:], with_outliers.images[60_000:])


def test_minority_digit_keeps_its_share_and_every_other_digit(mnist, rare_three):
    counts = list(MNIST_TRAIN_LABEL_COUNTS)
    counts[3] = round(0.1 * counts[3])
    assert counts[3] == 613
    assert torch.bincount(rare_three.labels).tolist() == counts

    # the other digits unchanged and in order, the threes a subset in order
    others = mnist.labels != 3
    assert torch.equal(rare_three.images[rare_three.labels != 3], mnist.images[others])
    position = {
        image.numpy().tobytes(): i
        for i, image in enumerate(data.unit_to_uint8(mnist.images[~others]))
    }
    kept = data.unit_to_uint8(rare_three.images[rare_three.labels == 3])
    positions = torch.tensor([position[image.numpy().tobytes()] for image in kept])
    assert (positions.diff() > 0).all()


@needs_fashion
def test_rare_digit_and_outliers_together(rare_three):
    both = training_set(
        TrainConfig(minority_digit=3, minority_keep=0.1, outlier_fraction=0.01)
    )
    n_digits = 60_000 - 6131 + 613
    n_out = outlier_count(0.01, n_digits)
    assert n_out == 550
    assert len(both) == n_digits + n_out
    assert is_outlier(both.labels).sum().item() == n_out
    # the digits kept do not depend on whether outliers are added
    assert torch.equal(both.images[:n_digits], rare_three.images)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(outlier_fraction=1.0), "outlier_fraction must lie in [0, 1), got 1.0"),
        (dict(outlier_fraction=-0.1), "got -0.1"),
        (dict(minority_digit=10), "minority_digit must be a digit 0-9"),
        (dict(minority_digit=3, minority_keep=0.0), "minority_keep must lie in"),
        (dict(minority_digit=3, minority_keep=1.5), "got 1.5"),
        (dict(data_seed=-1), "data_seed must be a non-negative integer, got -1"),
        (dict(minority_digit=3, minority_keep=1e-5), "keeps round(1e-05 * 6131) = 0"),
        (dict(outlier_fraction=1e-6), "outlier_fraction=1e-06 adds round("),
    ],
)
def test_impossible_requests_name_the_value(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        training_set(spec(**fields))


def test_training_uses_the_mixed_set_and_asks_for_the_outlier_share(
    tmp_path, monkeypatch, mnist
):
    from uotlib import train as train_module

    tiny = data.ImageSet(mnist.images[:128].clone(), mnist.labels[:128].clone())
    asked = {}

    def fake_training_set(config, device="cpu"):
        asked["outlier_fraction"] = config.outlier_fraction
        return tiny

    def fake_evaluator(n, device, with_outlier_share=False, embed=None):
        asked["with_outlier_share"] = with_outlier_share
        asked["embed"] = embed
        return lambda generator, sample_source: {}

    monkeypatch.setattr(train_module, "training_set", fake_training_set)
    monkeypatch.setattr(train_module, "default_evaluator", fake_evaluator)
    config = TrainConfig(
        epochs=1,
        batch_size=64,
        g_hidden=(16,),
        d_hidden=(16,),
        ema=[],
        snapshot_epochs=[],
        device="cpu",
        outlier_fraction=0.01,
    )
    train_module.train(config, tmp_path, progress=False)
    embed = asked.pop("embed")
    assert asked == {"outlier_fraction": 0.01, "with_outlier_share": True}
    # the evaluator also gets the noise embedding, for the transport cost
    assert embed(torch.zeros(2, 784)).shape == (2, 1, 28, 28)


# ------------------------------------------------------------ domain classifier


def test_domain_classifier_matches_its_record():
    record = clf.read_record(clf.DOMAIN_WEIGHTS_PATH)
    assert clf.file_sha256(clf.DOMAIN_WEIGHTS_PATH) == record["sha256"]
    assert clf.DOMAIN_WEIGHTS_PATH.stat().st_size < 1_000_000
    assert record["test_accuracy"] >= clf.DOMAIN_MIN_TEST_ACCURACY
    model = clf.load_domain_classifier("cpu")
    assert isinstance(model, clf.DomainCNN)
    assert record["parameters"] == sum(p.numel() for p in model.parameters())


def test_domain_classifier_refuses_foreign_weights(tampered_weights):
    weights = tampered_weights(clf.DOMAIN_WEIGHTS_PATH, "domain_cnn.pt")
    with pytest.raises(clf.ClassifierWeightsError, match="train-domain-classifier"):
        clf.load_domain_classifier("cpu", weights)


def _test_subsample(images: torch.Tensor, n: int = 2000) -> torch.Tensor:
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order[:n]]


def test_outlier_share_of_mnist_is_about_zero():
    digits = _test_subsample(load_mnist(train=False).images)
    assert fid.outlier_share(digits) <= 0.005
    # uint8 pixels give the same answer as floats
    assert fid.outlier_share(data.unit_to_uint8(digits)) == fid.outlier_share(digits)


@needs_fashion
def test_domain_classifier_tells_digits_from_garments():
    digits = _test_subsample(load_mnist(train=False).images)
    garments = _test_subsample(load_fashion_mnist(train=False).images)
    model = clf.load_domain_classifier("cpu")
    images = torch.cat([digits, garments])
    labels = torch.tensor([clf.DOMAIN_MNIST] * 2000 + [clf.DOMAIN_FASHION] * 2000)
    assert clf.accuracy(model, images, labels) >= 99.0
    assert fid.outlier_share(garments) >= 0.995
    # a 1% mixture is measured as about 1%
    mixture = torch.cat([digits[:1980], garments[:20]])
    assert fid.outlier_share(mixture) == pytest.approx(0.01, abs=0.005)


def test_cli_registers_the_domain_classifier():
    from uotlib.cli import build_parser

    args = build_parser().parse_args(["train-domain-classifier", "--epochs", "2"])
    assert args.train_fn is clf.train_domain_classifier
    assert args.epochs == 2 and args.out == clf.DOMAIN_WEIGHTS_PATH
    args = build_parser().parse_args(["train-classifier"])
    assert args.train_fn is clf.train_classifier
    assert args.epochs == clf.DEFAULT_EPOCHS
