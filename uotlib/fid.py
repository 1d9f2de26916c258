"""Measuring generated digits: FID, precision and recall, class coverage.

Every measure here compares two sets of images through the 128-dimensional
features of the MNIST classifier of :mod:`uotlib.classifier` (not Inception):

* the Frechet distance between Gaussians fitted to the two feature clouds,
  the FID of Heusel et al. (2017) [eq. fid];
* improved precision and recall of Kynkaanniemi et al. (2019): which share
  of the generated points lies on the real manifold and which share of the
  real points lies on the generated one, each manifold being a union of
  k-nearest-neighbour balls [eq. pr-manifold], [eq. precision-recall];
* the histogram of the classifier's predicted digits on the generated images
  and its KL divergence from the predicted digits of the test set
  [eq. class-kl];
* for the outlier study only, and not through those features, the share of
  images that a second, tiny classifier (MNIST versus Fashion-MNIST) calls
  Fashion-MNIST, :func:`outlier_share`.

The protocol of the book compares 10,000 generated images with the 10,000
MNIST test images, whose features and statistics are computed once and cached
on disk (:func:`reference_statistics`). FID is biased upwards at small sample
sizes, so numbers are comparable only at equal ``n``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from uotlib.classifier import (
    DOMAIN_FASHION,
    DOMAIN_WEIGHTS_PATH,
    FEATURE_DIM,
    NUM_CLASSES,
    WEIGHTS_PATH,
    MnistCNN,
    file_sha256,
    load_classifier,
    load_domain_classifier,
    predict,
)

log = logging.getLogger(__name__)

REFERENCE_SIZE = 10_000  # the MNIST test split
MIN_SAMPLES = FEATURE_DIM + 1  # for a full-rank (d x d) sample covariance
IMAG_TOLERANCE = 1e-3  # relative size of an imaginary part still called round-off
MISSING_FRACTION = 0.1  # a digit below this share of its test share is "missing"


class ImageFormatError(ValueError):
    """Images handed to the evaluation have the wrong shape, dtype or range."""


# ---------------------------------------------------------------------------
# Frechet distance
# ---------------------------------------------------------------------------


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, name: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{name}: expected a mean of shape (d,) and a covariance of shape "
            f"(d, d), got {mu.shape} and {sigma.shape}"
        )


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
) -> float:
    """Squared Frechet (2-Wasserstein) distance of two Gaussians [eq. fid].

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

    for N(mu1, S1) and N(mu2, S2); means have shape (d,), covariances (d, d).
    The matrix square root is :func:`scipy.linalg.sqrtm`. This is the FID
    when the Gaussians are fitted to classifier features. Returns a float
    >= 0.
    """
    mu1, mu2 = (
        np.atleast_1d(mu1).astype(np.float64),
        np.atleast_1d(mu2).astype(np.float64),
    )
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    _check_gaussian(mu1, sigma1, "first Gaussian")
    _check_gaussian(mu2, sigma2, "second Gaussian")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"the Gaussians live in {mu1.shape[0]} and {mu2.shape[0]} dims"
        )

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)

    # A (nearly) singular product, e.g. from a feature that is constant on one
    # set, can make the Schur-based square root blow up. Shifting both
    # covariances by eps * I moves their eigenvalues off zero and changes d^2
    # by about 2 * eps * d, far below anything we report.
    if not np.isfinite(covmean).all():
        log.warning("sqrtm(S1 S2) is not finite; adding %g to the diagonals", eps)
        offset = eps * np.eye(sigma1.shape[0])
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))

    # S1 S2 is similar to a positive semi-definite matrix, so its square root
    # is real in exact arithmetic; round-off leaves a tiny imaginary part,
    # which we drop. A large one means the inputs are not covariances.
    if np.iscomplexobj(covmean):
        imag = np.abs(covmean.imag.diagonal()).max()
        scale = max(1.0, np.abs(covmean.real.diagonal()).max())
        if imag > IMAG_TOLERANCE * scale:
            raise ValueError(
                f"sqrtm(S1 S2) has an imaginary part of size {imag:.3g} (relative "
                f"{imag / scale:.3g}, tolerance {IMAG_TOLERANCE}); are both inputs "
                "symmetric positive semi-definite covariance matrices?"
            )
        covmean = covmean.real

    d2 = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    # the distance is >= 0; identical statistics give -1e-12 or so by round-off
    return float(max(d2, 0.0))


def feature_statistics(
    features: torch.Tensor | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d), float64, of features (N, d).

    Raises ``ValueError`` when N < d + 1: with fewer samples the sample
    covariance has rank at most N - 1 < d and the Gaussian is degenerate.
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"expected features of shape (N, d), got {features.shape}")
    n, d = features.shape
    if n < d + 1:
        raise ValueError(
            f"a full-rank covariance of {d}-dimensional features needs at least "
            f"{d + 1} samples, got {n}"
        )
    mu = features.mean(axis=0)
    sigma = np.cov(features, rowvar=False)
    return mu, sigma


# ---------------------------------------------------------------------------
# Improved precision and recall
# ---------------------------------------------------------------------------


def knn_radii(features: torch.Tensor, k: int = 3, chunk: int = 1000) -> torch.Tensor:
    """Distance from each point of (N, d) to its k-th nearest other point, (N,).

    The point itself (distance 0) is not counted as a neighbour. Distances are
    computed in chunks of ``chunk`` rows so that memory stays at
    chunk x N floats.
    """
    if not 1 <= k < features.shape[0]:
        raise ValueError(f"k must be in 1..{features.shape[0] - 1}, got {k}")
    radii = []
    for rows in features.split(chunk):
        dist = torch.cdist(rows, features)
        # k + 1 smallest: the first is the point itself
        radii.append(dist.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def precision_recall(
    real_feats: torch.Tensor | np.ndarray,
    fake_feats: torch.Tensor | np.ndarray,
    k: int = 3,
    chunk: int = 1000,
    real_radii: torch.Tensor | None = None,
) -> tuple[float, float]:
    """Improved precision and recall of Kynkaanniemi et al. [eq. precision-recall].

    Each set's manifold is the union of balls around its points, of radius
    the distance to the point's k-th nearest neighbour in the same set.

    * precision: share of fake points inside the real manifold;
    * recall: share of real points inside the fake manifold.

    Features have shapes (N_real, d) and (N_fake, d). Distances use
    :func:`torch.cdist` in row chunks, so 10,000 x 10,000 takes about a
    second per pass and ``chunk`` x 10,000 floats of memory. ``real_radii``
    (N_real,), if given, must be :func:`knn_radii` of ``real_feats`` with the
    same ``k``; the reference set passes its cached radii and saves a pass.
    """
    real = torch.as_tensor(real_feats, dtype=torch.float32)
    fake = torch.as_tensor(fake_feats, dtype=torch.float32)
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"expected features (N_real, d) and (N_fake, d), got {tuple(real.shape)} "
            f"and {tuple(fake.shape)}"
        )
    if real_radii is None:
        real_radii = knn_radii(real, k, chunk)
    elif real_radii.shape != (real.shape[0],):
        raise ValueError(
            f"real_radii must have shape ({real.shape[0]},), got "
            f"{tuple(real_radii.shape)}"
        )
    fake_radii = knn_radii(fake, k, chunk)

    # one pass over the cross distances serves both directions
    fake_on_real = torch.zeros(fake.shape[0], dtype=torch.bool)
    real_on_fake = torch.zeros(real.shape[0], dtype=torch.bool)
    for start in range(0, fake.shape[0], chunk):
        rows = fake[start : start + chunk]
        dist = torch.cdist(rows, real)  # (chunk, N_real)
        fake_on_real[start : start + chunk] = (dist <= real_radii[None, :]).any(dim=1)
        radii = fake_radii[start : start + chunk, None]
        real_on_fake |= (dist <= radii).any(dim=0)
    return fake_on_real.double().mean().item(), real_on_fake.double().mean().item()


# ---------------------------------------------------------------------------
# Class coverage
# ---------------------------------------------------------------------------


def class_histogram(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Counts (10,) int64 of each predicted digit 0..9 in ``labels`` (N,)."""
    labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be digits 0..{NUM_CLASSES - 1}")
    return np.bincount(labels, minlength=NUM_CLASSES)


def class_kl(counts_generated: Sequence[int], counts_reference: Sequence[int]) -> float:
    """KL(p_generated || p_reference) of two class histograms [eq. class-kl].

    KL(p || q) = sum_c p_c log(p_c / q_c), with 0 log 0 = 0.

    This direction stays finite without any smoothing: the reference (the
    classifier's predictions on the MNIST test set) has every digit at about
    a tenth, and an empty generated bin contributes 0. It still sees dropped
    classes, because the remaining mass is concentrated on fewer digits:
    drawing the digits of a set S with their reference frequencies gives
    exactly -log q(S), about log 2 = 0.69 nats for digits 0-4. The reverse
    direction would be infinite for every dropped class and need an arbitrary
    smoothing constant that then dominates the value. Raises ``ValueError``
    if the reference has an empty bin where the generated one does not.
    """
    p = np.asarray(counts_generated, dtype=np.float64)
    q = np.asarray(counts_reference, dtype=np.float64)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError(
            f"expected two non-empty histograms of equal length, got {p} and {q}"
        )
    p, q = p / p.sum(), q / q.sum()
    support = p > 0
    if (q[support] == 0).any():
        raise ValueError(f"reference histogram {q} is empty where {p} is not")
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def missing_classes(
    counts_generated: Sequence[int],
    counts_reference: Sequence[int],
    fraction: float = MISSING_FRACTION,
) -> list[int]:
    """Digits whose generated share is below ``fraction`` of their reference share.

    A share of exactly zero is the wrong test: the classifier errs on about
    0.6% of real digits, so among 10,000 samples a few land in every bin
    even when the generator never draws that digit. With the default 0.1, a
    digit counts as missing below about 1% of the samples instead of the
    10% it has in the test set.
    """
    p = np.asarray(counts_generated, dtype=np.float64)
    q = np.asarray(counts_reference, dtype=np.float64)
    share_p, share_q = p / p.sum(), q / q.sum()
    return [int(c) for c in np.flatnonzero(share_p < fraction * share_q)]


# ---------------------------------------------------------------------------
# Images -> features
# ---------------------------------------------------------------------------


def as_unit_images(images: torch.Tensor | np.ndarray, min_samples: int = MIN_SAMPLES):
    """Validate images and return float32 (N, 1, 28, 28) in [-1, 1] on the CPU.

    Accepted: uint8 pixels 0..255 of shape (N, 28, 28) or (N, 1, 28, 28), as
    stored in an ``.npy`` file; or floats in [-1, 1] of shape (N, 1, 28, 28),
    as a generator produces them. Anything else, and fewer than
    ``min_samples`` images, raises :class:`ImageFormatError` saying what was
    expected.
    """
    from uotlib.data import uint8_to_unit

    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise ImageFormatError(
            "expected a torch.Tensor or numpy array of images, got "
            f"{type(images).__name__}"
        )
    images = images.detach()
    shape = tuple(images.shape)

    if images.dtype == torch.uint8:
        if images.dim() == 3 and shape[1:] == (28, 28):
            images = images.unsqueeze(1)
        elif not (images.dim() == 4 and shape[1:] == (1, 28, 28)):
            raise ImageFormatError(
                f"expected uint8 images of shape (N, 28, 28) or (N, 1, 28, 28), "
                f"got {shape}"
            )
        images = uint8_to_unit(images.cpu())
    elif images.is_floating_point():
        if not (images.dim() == 4 and shape[1:] == (1, 28, 28)):
            raise ImageFormatError(
                f"expected float images of shape (N, 1, 28, 28), got {shape}"
            )
        images = images.float().cpu()
        if not torch.isfinite(images).all():
            raise ImageFormatError("float images contain NaN or infinite values")
        low, high = (
            (images.min().item(), images.max().item()) if len(images) else (0, 0)
        )
        if low < -1.0 or high > 1.0:
            raise ImageFormatError(
                f"expected float images with values in [-1, 1], got values in "
                f"[{low:.4g}, {high:.4g}] (uint8 images should keep dtype uint8)"
            )
    else:
        raise ImageFormatError(
            "expected uint8 pixels 0..255 or floats in [-1, 1], got dtype "
            f"{images.dtype}"
        )

    if images.shape[0] < min_samples:
        raise ImageFormatError(
            f"expected at least {min_samples} images (feature dimension "
            f"{FEATURE_DIM} + 1, for a full-rank covariance), got {images.shape[0]}"
        )
    return images


@torch.no_grad()
def classifier_outputs(
    images: torch.Tensor,
    classifier: MnistCNN,
    batch_size: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, 128) float32 and predicted digits (N,) int64, on the CPU.

    ``images`` must already be float (N, 1, 28, 28) in [-1, 1]; they are
    moved to the classifier's device batch by batch.
    """
    classifier.eval()
    device = next(classifier.parameters()).device
    feats, labels = [], []
    for chunk in images.split(batch_size):
        h = classifier.features(chunk.to(device))
        feats.append(h.float().cpu())
        labels.append(classifier.logits_from_features(h).argmax(dim=1).cpu())
    return torch.cat(feats), torch.cat(labels)


# ---------------------------------------------------------------------------
# Reference statistics of the MNIST test set
# ---------------------------------------------------------------------------


@dataclass
class ReferenceStats:
    """Features and Gaussian of the real images that generated ones are compared to.

    ``features`` (N, 128) float32 and ``labels`` (N,) the classifier's
    predicted digits, ``mu`` (128,) and ``sigma`` (128, 128) float64 their
    statistics, ``sha256`` the classifier's weights that produced them.
    """

    features: torch.Tensor
    labels: torch.Tensor
    mu: np.ndarray
    sigma: np.ndarray
    sha256: str
    _radii: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_features(
        cls, features: torch.Tensor, labels: torch.Tensor, sha256: str
    ) -> ReferenceStats:
        mu, sigma = feature_statistics(features)
        return cls(features, labels, mu, sigma, sha256)

    def __len__(self) -> int:
        return self.features.shape[0]

    def knn_radii(self, k: int = 3) -> torch.Tensor:
        """:func:`knn_radii` of the features, computed once per ``k``."""
        if k not in self._radii:
            self._radii[k] = knn_radii(self.features, k)
        return self._radii[k]

    @property
    def class_counts(self) -> np.ndarray:
        """Counts (10,) of the predicted digits."""
        return class_histogram(self.labels)

    def subset(self, n: int, seed: int = 0) -> ReferenceStats:
        """A random subset of ``n`` reference images, statistics recomputed."""
        if not MIN_SAMPLES <= n <= len(self):
            raise ValueError(
                f"subset size must be in {MIN_SAMPLES}..{len(self)}, got {n}"
            )
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=generator)[:n]
        return ReferenceStats.from_features(
            self.features[index], self.labels[index], self.sha256
        )


_REFERENCE: dict[str, ReferenceStats] = {}


def fid_cache_dir() -> Path:
    """Folder of cached reference features: ``<data root>/fid_cache``."""
    from uotlib.data import default_root

    return default_root() / "fid_cache"


def reference_statistics(
    device: torch.device | str = "cpu",
    weights: Path | str = WEIGHTS_PATH,
    cache_dir: Path | str | None = None,
) -> ReferenceStats:
    """Features, mean, covariance and class counts of the 10,000 MNIST test images.

    Computed once per classifier and cached as ``mnist_test_<sha256>.npz``
    under :func:`fid_cache_dir` (no pickles), keyed by the sha256 of the
    classifier's weights, so retrained weights never meet stale statistics.
    Also cached in memory for the running process.
    """
    weights = Path(weights)
    classifier = load_classifier(device, weights)  # checks the sha256
    sha = file_sha256(weights)
    if sha in _REFERENCE:
        return _REFERENCE[sha]

    cache_dir = Path(cache_dir) if cache_dir is not None else fid_cache_dir()
    path = cache_dir / f"mnist_test_{sha[:16]}.npz"
    reference = None
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if str(data["sha256"]) == sha:
                reference = ReferenceStats.from_features(
                    torch.from_numpy(data["features"]),
                    torch.from_numpy(data["labels"]),
                    sha,
                )

    if reference is None:
        from uotlib.data import load_mnist

        log.info("computing MNIST test-set features; caching them in %s", path)
        test = load_mnist(train=False)
        feats, labels = classifier_outputs(test.images, classifier)
        reference = ReferenceStats.from_features(feats, labels, sha)
        cache_dir.mkdir(parents=True, exist_ok=True)
        # write-then-rename so that a concurrent reader never sees half a file
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp, features=feats.numpy(), labels=labels.numpy(), sha256=np.str_(sha)
        )
        os.replace(tmp, path)

    _REFERENCE[sha] = reference
    return reference


# ---------------------------------------------------------------------------
# Outlier share
# ---------------------------------------------------------------------------


def outlier_share(
    images: torch.Tensor | np.ndarray,
    device: torch.device | str = "cpu",
    weights: Path | str = DOMAIN_WEIGHTS_PATH,
) -> float:
    """Share of ``images`` that the domain classifier calls Fashion-MNIST.

    ``images``: uint8 (N, 28, 28) or (N, 1, 28, 28), or float (N, 1, 28, 28)
    in [-1, 1], as for :func:`evaluate_images`. The judge is
    :class:`uotlib.classifier.DomainCNN`; it errs on 0.02% of the MNIST and
    0.09% of the Fashion-MNIST test images, so shares of about 1% (the
    outlier study's training share) are resolved. It counts noisy digits,
    blank images and noise as Fashion-MNIST too (numbers in ``DomainCNN``'s
    docstring), so a noisy generator reads as one with outliers.
    """
    images = as_unit_images(images, min_samples=1)
    classifier = load_domain_classifier(device, weights)
    return (predict(classifier, images) == DOMAIN_FASHION).float().mean().item()


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def evaluate_images(
    images: torch.Tensor | np.ndarray,
    device: torch.device | str = "cpu",
    k: int = 3,
    reference: ReferenceStats | None = None,
    weights: Path | str = WEIGHTS_PATH,
    return_statistics: bool = False,
    with_outlier_share: bool = False,
) -> dict:
    """FID, precision, recall and class coverage of ``images`` against MNIST test.

    ``images``: uint8 (N, 28, 28) or (N, 1, 28, 28), or float (N, 1, 28, 28)
    in [-1, 1]; see :func:`as_unit_images`. ``reference`` defaults to all
    10,000 test images. Returns a JSON-ready dict with keys ``fid``,
    ``precision``, ``recall``, ``class_histogram`` (10 counts),
    ``class_kl`` (KL(p_generated || p_test) in nats), ``missing_classes``
    (see :func:`missing_classes`),
    ``n``, ``n_reference``, ``k`` and ``classifier_sha256``; with
    ``return_statistics`` also the arrays ``mu`` and ``sigma``; with
    ``with_outlier_share`` also ``outlier_share`` (:func:`outlier_share`, the
    outlier study's measure, off by default since ordinary runs have no use
    for it).
    """
    images = as_unit_images(images)
    if reference is None:
        reference = reference_statistics(device, weights)
    classifier = load_classifier(device, weights)

    feats, labels = classifier_outputs(images, classifier)
    mu, sigma = feature_statistics(feats)
    fid = frechet_distance(mu, sigma, reference.mu, reference.sigma)
    precision, recall = precision_recall(
        reference.features, feats, k=k, real_radii=reference.knn_radii(k)
    )
    counts = class_histogram(labels)

    result = {
        "fid": fid,
        "precision": precision,
        "recall": recall,
        "class_histogram": [int(c) for c in counts],
        "class_kl": class_kl(counts, reference.class_counts),
        "missing_classes": missing_classes(counts, reference.class_counts),
        "n": int(images.shape[0]),
        "n_reference": len(reference),
        "k": k,
        "classifier_sha256": reference.sha256,
    }
    if with_outlier_share:
        result["outlier_share"] = outlier_share(images, device)
    if return_statistics:
        result["mu"], result["sigma"] = mu, sigma
    return result


SampleSource = Callable[[int, torch.Generator], torch.Tensor]


def _module_device(module: torch.nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def generate_images(
    generator: torch.nn.Module,
    sample_source: SampleSource,
    n: int = REFERENCE_SIZE,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_size: int = 500,
) -> torch.Tensor:
    """``n`` images T(x) (n, 1, 28, 28) on the CPU, with a fixed noise protocol.

    All ``n`` noise samples are drawn at once, ``sample_source(n, g)`` with a
    CPU ``torch.Generator`` g seeded with ``seed``, so the noise depends
    neither on ``batch_size`` nor on the device (CPU and CUDA generators give
    different streams); the images do only up to floating-point round-off.
    They are pushed through ``generator`` on ``device`` (default: where its
    parameters are) in batches, in eval mode; its previous mode is restored
    afterwards.
    """
    device = _module_device(generator) if device is None else device
    noise = sample_source(n, torch.Generator().manual_seed(seed))
    if noise.shape[0] != n:
        raise ValueError(f"sample_source({n}, g) returned {noise.shape[0]} samples")

    was_training = generator.training
    generator.eval()
    try:
        batches = [
            generator(x.to(device)).float().cpu() for x in noise.split(batch_size)
        ]
    finally:
        generator.train(was_training)
    return torch.cat(batches)


def evaluate_generator(
    generator: torch.nn.Module,
    sample_source: SampleSource,
    n: int = REFERENCE_SIZE,
    seed: int = 0,
    device: torch.device | str | None = None,
    k: int = 3,
    weights: Path | str = WEIGHTS_PATH,
    return_statistics: bool = False,
    with_outlier_share: bool = False,
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict:
    """:func:`evaluate_images` of ``n`` samples of ``generator`` (default 10,000).

    The samples come from :func:`generate_images` with sampling seed
    ``seed``; the result also records ``seed``. ``with_outlier_share`` adds
    the share of samples that look like Fashion-MNIST (:func:`outlier_share`).
    ``embed`` maps noise to image space, where the transport cost is taken
    (``uotlib.train.Source.embed``); with it the result also holds
    ``sq_distance``, the mean of ||x - T(x)||^2 summed over the 784 pixels,
    so that the mean transport cost of the generator is tau times it.
    """
    device = _module_device(generator) if device is None else device
    images = generate_images(generator, sample_source, n, seed, device)
    sq_distance = None
    if embed is not None:
        # the same noise as generate_images draws: the same seed, all at once
        noise = sample_source(n, torch.Generator().manual_seed(seed))
        x = embed(noise).float().cpu()
        sq_distance = (x - images).pow(2).flatten(1).sum(dim=1).mean().item()
    result = evaluate_images(
        images,
        device,
        k=k,
        weights=weights,
        return_statistics=return_statistics,
        with_outlier_share=with_outlier_share,
    )
    result["seed"] = seed
    if sq_distance is not None:
        result["sq_distance"] = sq_distance
    return result


# ---------------------------------------------------------------------------
# Sanity ladder
# ---------------------------------------------------------------------------


def ladder_image_sets(
    n: int = 2000,
    noise_levels: Sequence[float] = (0.1, 0.2, 0.4, 0.8),
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The image sets of the sanity ladder, each (n, 1, 28, 28) in [-1, 1].

    Keys, from best to worst: ``train`` (``n`` random MNIST training
    images), ``noise=<s>`` for each level s (the same images plus Gaussian
    pixel noise of standard deviation s, in units of the [-1, 1] range,
    clipped to [-1, 1]), ``digits_0_4`` (``n`` random training images of
    digits 0-4 only) and ``pure_noise`` (pixels uniform in [-1, 1]).
    """
    from uotlib.data import load_mnist

    train = load_mnist(train=True)
    if not MIN_SAMPLES <= n <= len(train) // 2:
        raise ValueError(f"n must be in {MIN_SAMPLES}..{len(train) // 2}, got {n}")
    generator = torch.Generator().manual_seed(seed)
    clean = train.images[torch.randperm(len(train), generator=generator)[:n]]
    low = torch.nonzero(train.labels <= 4).squeeze(1)
    low = low[torch.randperm(len(low), generator=generator)[:n]]

    sets = {"train": clean}
    for level in noise_levels:
        noisy = clean + level * torch.randn(clean.shape, generator=generator)
        sets[f"noise={level:g}"] = noisy.clamp(-1.0, 1.0)
    sets["digits_0_4"] = train.images[low]
    sets["pure_noise"] = torch.rand(clean.shape, generator=generator) * 2.0 - 1.0
    return sets


def sanity_ladder(
    n: int = 2000,
    noise_levels: Sequence[float] = (0.1, 0.2, 0.4, 0.8),
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict:
    """The measures on image sets of known quality (:func:`ladder_image_sets`).

    Each set of ``n`` images is scored against ``n`` random test images (all
    10,000 when ``n`` = 10,000), so the numbers are comparable along the
    ladder. What a trustworthy measure must show: a small FID for training
    images; an FID that grows with the noise level; for digits 0-4 only a
    large FID, recall well below precision and five missing classes (their
    bins hold only the classifier's mistakes); for pure noise a very large
    FID.

    Returns ``{"n", "seed", "noise_levels", "train", "noise": [...],
    "digits_0_4", "pure_noise"}``; each rung is the dict of
    :func:`evaluate_images`, the noise rungs with their ``sigma`` added.
    """
    full = reference_statistics(device)
    reference = full if n == len(full) else full.subset(n, seed=seed + 1)
    sets = ladder_image_sets(n, noise_levels, seed)

    def score(name: str) -> dict:
        return evaluate_images(sets[name], device, reference=reference)

    return {
        "n": n,
        "seed": seed,
        "noise_levels": [float(level) for level in noise_levels],
        "train": score("train"),
        "noise": [
            {"sigma": float(level), **score(f"noise={level:g}")}
            for level in noise_levels
        ],
        "digits_0_4": score("digits_0_4"),
        "pure_noise": score("pure_noise"),
    }
