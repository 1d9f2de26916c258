"""Two small CNNs trained by uotlib: the digit classifier and the domain classifier.

The usual Frechet Inception Distance embeds images with an Inception network
trained on ImageNet. Those weights cannot be fetched here, and a network that
has never seen a handwritten digit is a questionable judge of digits anyway,
so this project embeds images with a small convolutional network trained on
the MNIST training split, in the open: :func:`train_classifier` rebuilds the
shipped weights from a seed in a few minutes on a CPU, and
``uotlib/weights/mnist_cnn.json`` records their sha256 and test accuracy.

Architecture (:class:`MnistCNN`), for an image in [-1, 1]^(1x28x28):

* conv 5x5, 32 channels, stride 2, ReLU: 32 x 14 x 14;
* conv 5x5, 64 channels, stride 2, ReLU: 64 x 7 x 7;
* fully connected 3136 -> 128, the *feature layer*;
* ReLU, dropout 0.3 (training only), fully connected 128 -> 10 logits.

Strided convolutions replace max-pooling because they cost a quarter of the
arithmetic and keep the evaluation of 10,000 images well under a second.

The outlier study trains on MNIST with a few Fashion-MNIST images mixed in
and asks how many of the generated images look like clothes. That needs a
second, much smaller judge, :class:`DomainCNN`, which tells a digit from a
Fashion-MNIST image (weights ``uotlib/weights/domain_cnn.pt``, rebuilt by
:func:`train_domain_classifier`). Both networks share the training loop, the
record format and the sha256-checked loading below.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSet, file_sha256

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_PATH = WEIGHTS_DIR / "mnist_cnn.pt"
FEATURE_DIM = 128
NUM_CLASSES = 10
MIN_TEST_ACCURACY = 99.0  # percent; below this the weights are not shipped
DEFAULT_EPOCHS = 6
MAX_SHIFT = 2  # pixels of random translation used as training augmentation

REGENERATE_HINT = (
    "regenerate them with 'python -m uotlib train-classifier' (a few minutes on a CPU)"
)

DOMAIN_WEIGHTS_PATH = WEIGHTS_DIR / "domain_cnn.pt"
DOMAIN_MNIST, DOMAIN_FASHION = 0, 1  # the domain classifier's two classes
DOMAIN_MIN_TEST_ACCURACY = 99.5  # percent, on the 20,000 test images of both sets
DOMAIN_EPOCHS = 1
DOMAIN_REGENERATE_HINT = (
    "regenerate them with 'python -m uotlib train-domain-classifier' "
    "(under a minute on a CPU)"
)


class ClassifierWeightsError(RuntimeError):
    """The classifier's weights are missing or differ from the recorded ones."""


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(
            f"expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}"
        )


def _strided_convs(c0: int, c1: int) -> list[nn.Module]:
    """Two 5x5 stride-2 convolutions with ReLU: (N, 1, 28, 28) -> (N, c1, 7, 7).

    Both classifiers start this way; the layer indices (and so the names in
    their state dicts) are those of the list.
    """
    return [
        nn.Conv2d(1, c0, kernel_size=5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(c0, c1, kernel_size=5, stride=2, padding=2),
        nn.ReLU(),
    ]


class MnistCNN(nn.Module):
    """Digit classifier whose penultimate layer serves as the FID embedding.

    Input: images of shape (N, 1, 28, 28) with values in [-1, 1], the
    convention of :mod:`uotlib.data`. ``forward`` returns logits (N, 10) and
    :meth:`features` the (N, 128) embedding.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(*_strided_convs(32, 64), nn.Flatten())
        self.fc = nn.Linear(64 * 7 * 7, FEATURE_DIM)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Dropout(0.3), nn.Linear(FEATURE_DIM, NUM_CLASSES)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations, shape (N, 1, 28, 28) -> (N, 128).

        These are the outputs of the fully connected 3136 -> 128 layer, the
        last layer before the logits, taken *before* its ReLU. The last layer
        before the logits is where the network has summarised the stroke
        shapes that decide the class, without yet collapsing them into ten
        class scores; with 128 dimensions a full-rank covariance (128 x 129 / 2
        = 8,256 free entries) is well estimated from 10,000 samples. Taking
        the values before the ReLU keeps every unit continuous: after it, a
        unit is exactly zero on a large share of the images, a point mass that
        a Gaussian fits badly and that can make the covariance singular.
        """
        _check_images(x)
        return self.fc(self.conv(x))

    def logits_from_features(self, h: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10) from the (N, 128) output of :meth:`features`."""
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))


class DomainCNN(nn.Module):
    """MNIST (class 0) versus Fashion-MNIST (class 1), for the outlier study.

    Input: images (N, 1, 28, 28) in [-1, 1]; ``forward`` returns logits (N, 2).
    The task is easy (a digit is a thin stroke on an empty background, a
    garment a filled silhouette), so the network is tiny, 4,994 parameters:

    * conv 5x5, 8 channels, stride 2, ReLU: 8 x 14 x 14;
    * conv 5x5, 16 channels, stride 2, ReLU: 16 x 7 x 7;
    * fully connected 784 -> 2 logits.

    Known shortcoming: it has seen only real digits and real garments, and
    what is neither it tends to call a garment. Of 2,000 MNIST test images
    with Gaussian pixel noise of standard deviation 0.2, 0.4 and 0.8 (units
    of the [-1, 1] range, clipped) it calls 0.05%, 1.2% and 18% Fashion-MNIST,
    and it calls uniform noise and blank images Fashion-MNIST every time. An
    outlier share near the study's 1% is therefore trustworthy only for
    samples that look clean; for noisy ones, look at the samples too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *_strided_convs(8, 16), nn.Flatten(), nn.Linear(16 * 7 * 7, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x)
        return self.net(x)


def record_path(weights: Path) -> Path:
    """The JSON record that sits next to a weights file (same stem)."""
    return Path(weights).with_suffix(".json")


def read_record(weights: Path = WEIGHTS_PATH, hint: str = REGENERATE_HINT) -> dict:
    """The JSON record (sha256, test accuracy, seed, ...) of a weights file.

    ``hint`` ends the error message when the record is missing: how to
    rebuild the weights.
    """
    path = record_path(weights)
    if not path.is_file():
        raise ClassifierWeightsError(f"no record {path} for {weights}; {hint}")
    return json.loads(path.read_text())


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = 2000
) -> torch.Tensor:
    """Predicted class (N,) int64 for images (N, 1, 28, 28) in [-1, 1]."""
    model.eval()
    device = next(model.parameters()).device
    labels = [
        model(chunk.to(device)).argmax(dim=1) for chunk in images.split(batch_size)
    ]
    return torch.cat(labels).cpu()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of ``images`` whose predicted class equals ``labels``."""
    hits = (predict(model, images) == labels.cpu()).sum().item()
    return 100.0 * hits / len(labels)


def random_shift(
    images: torch.Tensor, max_shift: int, generator: torch.Generator
) -> torch.Tensor:
    """Translate each image by its own random integer offset in pixels.

    Offsets are drawn uniformly from -max_shift..max_shift on each axis; the
    border that comes into view is background (-1). Done by indexing one
    padded tensor, so the batch never leaves tensor code.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = offsets[0][:, None] + torch.arange(h)  # (N, h)
    cols = offsets[1][:, None] + torch.arange(w)  # (N, w)
    batch = torch.arange(n)[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@contextlib.contextmanager
def _num_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit(
    make_model: Callable[[], nn.Module],
    train: ImageSet,
    test: ImageSet,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    threads: int,
) -> nn.Module:
    """The training loop shared by both classifiers; returns the model in eval mode.

    Deterministic on CPU for a given seed, machine and thread count: the
    initialisation (``make_model()`` is called after seeding), the shuffling,
    the shifts and the dropout masks all come from RNGs seeded with ``seed``
    (the global RNG is restored afterwards). It runs on ``threads`` CPU
    threads: on a two-core machine shared with other jobs, two-threaded
    backward passes were measured four times slower than one thread, and a
    fixed count keeps the run repeatable. Adam with a cosine learning-rate
    decay to zero; each batch is augmented by random shifts of up to
    :data:`MAX_SHIFT` pixels; cross-entropy on ``train.labels``. The accuracy
    on ``test`` is logged after every epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}")

    with _num_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = make_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        steps_per_epoch = math.ceil(len(train) / batch_size)
        total_steps = epochs * steps_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
        )

        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(train), generator=generator)
            running = 0.0
            for index in order.split(batch_size):
                x = random_shift(train.images[index], MAX_SHIFT, generator)
                loss = F.cross_entropy(model(x), train.labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                running += loss.item() * len(index)
            log.info(
                "epoch %d/%d: train loss %.4f, test accuracy %.2f%%",
                epoch + 1,
                epochs,
                running / len(train),
                accuracy(model, test.images, test.labels),
            )

    return model.eval()


def _fit_checked(
    cls, train, test, required: float, threads: int, **settings
) -> tuple[nn.Module, dict]:
    """:func:`_fit`, then the accuracy check; the record fields both share.

    ``settings`` are ``seed``, ``epochs``, ``batch_size`` and ``lr``.
    """
    start = time.perf_counter()
    model = _fit(
        cls,
        train,
        test,
        settings["seed"],
        settings["epochs"],
        settings["batch_size"],
        settings["lr"],
        threads,
    )
    test_accuracy = accuracy(model, test.images, test.labels)
    seconds = time.perf_counter() - start
    _check_accuracy(test_accuracy, required, settings["epochs"])
    fields = {
        "test_accuracy": round(test_accuracy, 2),
        **settings,
        "max_shift": MAX_SHIFT,
        "threads": threads,
        "train_seconds": round(seconds, 1),
    }
    return model, fields


def _check_accuracy(test_accuracy: float, required: float, epochs: int) -> None:
    if test_accuracy < required:
        raise RuntimeError(
            f"test accuracy {test_accuracy:.2f}% is below the required "
            f"{required}%; train longer (epochs={epochs}) or change the seed"
        )


def _save_weights(model: nn.Module, out: Path, fields: dict) -> dict:
    """Write the float32 state_dict to ``out`` and its JSON record next to it.

    The record is ``{"sha256": ..., **fields, "torch_version", "parameters"}``;
    networks loaded earlier from ``out`` are dropped from the cache.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out)
    record = {
        "sha256": file_sha256(out),
        **fields,
        "torch_version": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    record_path(out).write_text(json.dumps(record, indent=2) + "\n")
    _LOADED.clear()  # a network loaded earlier from ``out`` is stale now
    return record


def train_classifier(
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    out: Path | str = WEIGHTS_PATH,
    batch_size: int = 128,
    lr: float = 2e-3,
    threads: int = 1,
) -> dict:
    """Train :class:`MnistCNN` on MNIST's training split; write weights and record.

    The loop is :func:`_fit` (deterministic for a seed, machine and thread
    count). The state_dict (float32) goes to ``out`` and a JSON record with
    its sha256, the test accuracy, the seed, the epochs and the torch version
    to ``out`` with the suffix ``.json``. Raises ``RuntimeError`` if the test
    accuracy is below :data:`MIN_TEST_ACCURACY`, before anything is written.
    """
    from uotlib.data import load_mnist

    out = Path(out)
    train = load_mnist(train=True)
    test = load_mnist(train=False)
    settings = dict(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr)
    model, fields = _fit_checked(
        MnistCNN, train, test, MIN_TEST_ACCURACY, threads, **settings
    )
    test_accuracy = fields["test_accuracy"]

    record = _save_weights(
        model,
        out,
        {
            **fields,
            "feature_dim": FEATURE_DIM,
            "architecture": "conv5x5/2(32)-relu-conv5x5/2(64)-relu-fc128-relu-fc10",
            "command": (
                f"python -m uotlib train-classifier --seed {seed} --epochs {epochs}"
            ),
        },
    )
    log.info("wrote %s (test accuracy %.2f%%)", out, test_accuracy)
    return record


def domain_set(train: bool = True, root: Path | None = None) -> ImageSet:
    """MNIST images labelled :data:`DOMAIN_MNIST`, then Fashion-MNIST ones
    labelled :data:`DOMAIN_FASHION`: 120,000 training or 20,000 test images."""
    from uotlib.data import load_fashion_mnist, load_mnist

    mnist = load_mnist(train=train, root=root)
    fashion = load_fashion_mnist(train=train, root=root)
    labels = torch.cat(
        [
            torch.full((len(mnist),), DOMAIN_MNIST, dtype=torch.long),
            torch.full((len(fashion),), DOMAIN_FASHION, dtype=torch.long),
        ]
    )
    return ImageSet(torch.cat([mnist.images, fashion.images]), labels)


def train_domain_classifier(
    seed: int = 0,
    epochs: int = DOMAIN_EPOCHS,
    out: Path | str = DOMAIN_WEIGHTS_PATH,
    batch_size: int = 128,
    lr: float = 2e-3,
    threads: int = 1,
) -> dict:
    """Train :class:`DomainCNN` on the 60,000 + 60,000 training images of MNIST
    and Fashion-MNIST; write weights and record as :func:`train_classifier` does.

    One epoch is enough: the two sets are far apart. The record holds the
    accuracy on all 20,000 test images and on each set's 10,000 separately
    (``mnist_test_accuracy``: digits called digits; ``fashion_test_accuracy``:
    garments called garments). Raises ``RuntimeError`` before writing anything
    if the overall test accuracy is below :data:`DOMAIN_MIN_TEST_ACCURACY`.
    """
    out = Path(out)
    train = domain_set(train=True)
    test = domain_set(train=False)
    settings = dict(seed=seed, epochs=epochs, batch_size=batch_size, lr=lr)
    model, fields = _fit_checked(
        DomainCNN, train, test, DOMAIN_MIN_TEST_ACCURACY, threads, **settings
    )
    test_accuracy = fields["test_accuracy"]
    per_set = {
        f"{name}_test_accuracy": round(
            accuracy(
                model, test.images[test.labels == c], test.labels[test.labels == c]
            ),
            2,
        )
        for name, c in (("mnist", DOMAIN_MNIST), ("fashion", DOMAIN_FASHION))
    }

    record = _save_weights(
        model,
        out,
        {
            **fields,
            **per_set,
            "classes": {"mnist": DOMAIN_MNIST, "fashion_mnist": DOMAIN_FASHION},
            "architecture": "conv5x5/2(8)-relu-conv5x5/2(16)-relu-fc2",
            "command": (
                f"python -m uotlib train-domain-classifier --seed {seed} "
                f"--epochs {epochs}"
            ),
        },
    )
    log.info("wrote %s (test accuracy %.2f%%)", out, test_accuracy)
    return record


_LOADED: dict[tuple[str, str], nn.Module] = {}


def _load_verified(
    model_cls: type[nn.Module], weights: Path | str, device, hint: str
) -> nn.Module:
    """``model_cls`` with the weights of ``weights``, checked against its record.

    The file's sha256 is compared with its JSON record first, so a truncated
    or foreign file fails here with a clear message (ending in ``hint``)
    instead of giving silently different numbers; loading uses
    ``weights_only=True``. The network is in eval mode, frozen, on
    ``device``, and cached per (file, device).
    """
    weights = Path(weights)
    key = (str(weights.resolve()), str(torch.device(device)))
    if key in _LOADED:
        return _LOADED[key]
    if not weights.is_file():
        raise ClassifierWeightsError(
            f"classifier weights {weights} are missing; {hint}"
        )
    expected = read_record(weights, hint).get("sha256")
    actual = file_sha256(weights)
    if actual != expected:
        raise ClassifierWeightsError(
            f"classifier weights {weights} have sha256 {actual}, but "
            f"{record_path(weights)} records {expected}; {hint}"
        )

    model = model_cls()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval().requires_grad_(False)
    model.to(device)
    _LOADED[key] = model
    return model


def load_classifier(
    device: torch.device | str = "cpu", weights: Path | str = WEIGHTS_PATH
) -> MnistCNN:
    """The trained :class:`MnistCNN` in eval mode, frozen, on ``device``.

    The sha256 of ``weights`` is checked against its record before loading
    (with ``weights_only=True``); see :func:`_load_verified`.
    """
    return _load_verified(MnistCNN, weights, device, REGENERATE_HINT)


def load_domain_classifier(
    device: torch.device | str = "cpu", weights: Path | str = DOMAIN_WEIGHTS_PATH
) -> DomainCNN:
    """The trained :class:`DomainCNN` in eval mode, frozen, on ``device``.

    Checked and loaded as :func:`load_classifier` does.
    """
    return _load_verified(DomainCNN, weights, device, DOMAIN_REGENERATE_HINT)


def _run_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    record = args.train_fn(seed=args.seed, epochs=args.epochs, out=args.out)
    print(
        f"test accuracy {record['test_accuracy']:.2f}% after {record['epochs']} "
        f"epochs ({record['train_seconds']} s); wrote {args.out} and "
        f"{record_path(args.out)}"
    )
    return 0


def _add_train_parser(
    subparsers,
    name: str,
    train: Callable[..., dict],
    epochs: int,
    out: Path,
    help_text: str,
    description: str,
) -> argparse.ArgumentParser:
    """A subcommand that calls ``train(seed=, epochs=, out=)``."""
    parser = subparsers.add_parser(name, help=help_text, description=description)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=epochs,
        help=f"training epochs (default {epochs})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=out,
        help="weights file; the record goes next to it as .json "
        f"(default: the shipped uotlib/weights/{out.name})",
    )
    parser.set_defaults(func=_run_train, train_fn=train)
    return parser


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train-classifier`` on the CLI's argparse subparsers."""
    return _add_train_parser(
        subparsers,
        "train-classifier",
        train_classifier,
        DEFAULT_EPOCHS,
        WEIGHTS_PATH,
        help_text="train the MNIST CNN whose features define the FID",
        description=(
            "Train the MNIST classifier used as the FID feature network and write "
            "its weights with a JSON record (sha256, test accuracy)."
        ),
    )


def add_domain_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train-domain-classifier`` on the CLI's argparse subparsers."""
    return _add_train_parser(
        subparsers,
        "train-domain-classifier",
        train_domain_classifier,
        DOMAIN_EPOCHS,
        DOMAIN_WEIGHTS_PATH,
        help_text="train the MNIST-versus-Fashion-MNIST CNN of the outlier study",
        description=(
            "Train the classifier that tells MNIST digits from Fashion-MNIST "
            "images (it measures the outlier share of generated samples) and "
            "write its weights with a JSON record (sha256, test accuracies)."
        ),
    )
