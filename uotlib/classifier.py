"""A small CNN that classifies MNIST digits: the feature network of our FID.

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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import file_sha256

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


class ClassifierWeightsError(RuntimeError):
    """The classifier's weights are missing or differ from the recorded ones."""


class MnistCNN(nn.Module):
    """Digit classifier whose penultimate layer serves as the FID embedding.

    Input: images of shape (N, 1, 28, 28) with values in [-1, 1], the
    convention of :mod:`uotlib.data`. ``forward`` returns logits (N, 10) and
    :meth:`features` the (N, 128) embedding.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.Flatten(),
        )
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
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(
                f"expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}"
            )
        return self.fc(self.conv(x))

    def logits_from_features(self, h: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10) from the (N, 128) output of :meth:`features`."""
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.features(x))


def record_path(weights: Path) -> Path:
    """The JSON record that sits next to a weights file (same stem)."""
    return Path(weights).with_suffix(".json")


def read_record(weights: Path = WEIGHTS_PATH) -> dict:
    """The JSON record (sha256, test accuracy, seed, ...) of a weights file."""
    path = record_path(weights)
    if not path.is_file():
        raise ClassifierWeightsError(
            f"no record {path} for {weights}; {REGENERATE_HINT}"
        )
    return json.loads(path.read_text())


@torch.no_grad()
def predict(
    model: MnistCNN, images: torch.Tensor, batch_size: int = 2000
) -> torch.Tensor:
    """Predicted digit (N,) int64 for images (N, 1, 28, 28) in [-1, 1]."""
    model.eval()
    device = next(model.parameters()).device
    labels = [
        model(chunk.to(device)).argmax(dim=1) for chunk in images.split(batch_size)
    ]
    return torch.cat(labels).cpu()


def accuracy(model: MnistCNN, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of ``images`` whose predicted digit equals ``labels``."""
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


def train_classifier(
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    out: Path | str = WEIGHTS_PATH,
    batch_size: int = 128,
    lr: float = 2e-3,
    threads: int = 1,
) -> dict:
    """Train :class:`MnistCNN` on MNIST's training split; write weights and record.

    Deterministic on CPU for a given seed, machine and thread count: the
    initialisation, the shuffling, the shifts and the dropout masks all come
    from RNGs seeded with ``seed`` (the global RNG is restored afterwards).
    It runs on ``threads`` CPU threads (default one): on a two-core machine
    shared with other jobs, two-threaded backward passes were measured four
    times slower than one thread, and a fixed count keeps the run repeatable.
    Adam with a cosine learning-rate decay to zero; each batch is augmented
    by random shifts of up to :data:`MAX_SHIFT` pixels. The state_dict
    (float32) goes to ``out`` and a JSON record with its sha256, the test
    accuracy, the seed, the epochs and the torch version to ``out`` with the
    suffix ``.json``. Raises ``RuntimeError`` if the test accuracy is below
    :data:`MIN_TEST_ACCURACY`, before anything is written.
    """
    from uotlib.data import load_mnist

    if epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}")
    out = Path(out)
    train = load_mnist(train=True)
    test = load_mnist(train=False)
    start = time.perf_counter()

    with _num_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = MnistCNN()
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

    model.eval()
    test_accuracy = accuracy(model, test.images, test.labels)
    seconds = time.perf_counter() - start
    if test_accuracy < MIN_TEST_ACCURACY:
        raise RuntimeError(
            f"test accuracy {test_accuracy:.2f}% is below the required "
            f"{MIN_TEST_ACCURACY}%; train longer (epochs={epochs}) or change the seed"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out)
    record = {
        "sha256": file_sha256(out),
        "test_accuracy": round(test_accuracy, 2),
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "max_shift": MAX_SHIFT,
        "torch_version": torch.__version__,
        "threads": threads,
        "train_seconds": round(seconds, 1),
        "feature_dim": FEATURE_DIM,
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": "conv5x5/2(32)-relu-conv5x5/2(64)-relu-fc128-relu-fc10",
    }
    record_path(out).write_text(json.dumps(record, indent=2) + "\n")
    _LOADED.clear()  # a network loaded earlier from ``out`` is stale now
    log.info("wrote %s (test accuracy %.2f%%)", out, test_accuracy)
    return record


_LOADED: dict[tuple[str, str], MnistCNN] = {}


def load_classifier(
    device: torch.device | str = "cpu", weights: Path | str = WEIGHTS_PATH
) -> MnistCNN:
    """The trained :class:`MnistCNN` in eval mode, frozen, on ``device``.

    The file's sha256 is checked against its JSON record first, so a
    truncated or foreign file fails here with a clear message instead of
    giving silently different FIDs; loading uses ``weights_only=True``.
    Loaded networks are cached per (file, device).
    """
    weights = Path(weights)
    key = (str(weights.resolve()), str(torch.device(device)))
    if key in _LOADED:
        return _LOADED[key]
    if not weights.is_file():
        raise ClassifierWeightsError(
            f"classifier weights {weights} are missing; {REGENERATE_HINT}"
        )
    expected = read_record(weights).get("sha256")
    actual = file_sha256(weights)
    if actual != expected:
        raise ClassifierWeightsError(
            f"classifier weights {weights} have sha256 {actual}, but "
            f"{record_path(weights)} records {expected}; {REGENERATE_HINT}"
        )

    model = MnistCNN()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval().requires_grad_(False)
    model.to(device)
    _LOADED[key] = model
    return model


def _run_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    record = train_classifier(seed=args.seed, epochs=args.epochs, out=args.out)
    print(
        f"test accuracy {record['test_accuracy']:.2f}% after {record['epochs']} "
        f"epochs ({record['train_seconds']} s); wrote {args.out} and "
        f"{record_path(args.out)}"
    )
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train-classifier`` on the CLI's argparse subparsers."""
    parser = subparsers.add_parser(
        "train-classifier",
        help="train the MNIST CNN whose features define the FID",
        description=(
            "Train the MNIST classifier used as the FID feature network and write "
            "its weights with a JSON record (sha256, test accuracy)."
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_EPOCHS,
        help=f"training epochs (default {DEFAULT_EPOCHS})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=WEIGHTS_PATH,
        help="weights file; the record goes next to it as .json "
        "(default: the shipped uotlib/weights/mnist_cnn.pt)",
    )
    parser.set_defaults(func=_run_train)
    return parser
