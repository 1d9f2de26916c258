"""The measures of uotlib.fid: closed forms, independent computations, ladder.

The Frechet distance is checked against its closed forms and against a
second computation through symmetric eigendecompositions; precision and
recall against brute force; the shipped classifier against its record; the
sanity ladder against the orderings the book claims; the ``evaluate``
command against its error messages.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from uotlib import classifier as clf
from uotlib import evaluate, fid

RNG = np.random.default_rng(0)


def random_spd(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or 2 * d))
    return a @ a.T / a.shape[1]


def frechet_by_eigh(mu1, sigma1, mu2, sigma2) -> float:
    """Independent d^2: Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}.

    S1^{1/2} S2 S1^{1/2} is symmetric positive semi-definite and similar to
    S1 S2, so the trace of the square root is the sum of the square roots of
    its eigenvalues; no general (non-symmetric) matrix square root is used.
    """
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt


# ---------------------------------------------------------------- distance


def test_equal_covariances_give_squared_distance_of_means():
    sigma = random_spd(16, RNG)
    mu1, mu2 = RNG.standard_normal(16), RNG.standard_normal(16)
    expected = np.sum((mu1 - mu2) ** 2)
    assert fid.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, 1e-6)


def test_one_dimensional_gaussians():
    # W2^2(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 + (s1 - s2)^2
    m1, s1, m2, s2 = 0.3, 1.7, -1.1, 0.4
    d2 = fid.frechet_distance([m1], [[s1**2]], [m2], [[s2**2]])
    assert d2 == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-10)


def test_diagonal_covariances():
    a, b = RNG.uniform(0.1, 2, 8), RNG.uniform(0.1, 2, 8)
    zero = np.zeros(8)
    d2 = fid.frechet_distance(zero, np.diag(a), zero, np.diag(b))
    assert d2 == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-8)


def test_symmetric_and_zero_on_identical_statistics():
    s1, s2 = random_spd(32, RNG), random_spd(32, RNG)
    m1, m2 = RNG.standard_normal(32), RNG.standard_normal(32)
    forward = fid.frechet_distance(m1, s1, m2, s2)
    assert forward == pytest.approx(fid.frechet_distance(m2, s2, m1, s1), rel=1e-8)
    assert forward > 1.0
    assert fid.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("rank", [None, 20])
def test_agrees_with_eigendecomposition(rank):
    # rank 20 < d = 40: both covariances singular, the guarded path
    s1, s2 = random_spd(40, RNG, rank), random_spd(40, RNG, rank)
    m1, m2 = RNG.standard_normal(40), RNG.standard_normal(40)
    expected = frechet_by_eigh(m1, s1, m2, s2)
    assert fid.frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, abs=1e-4)


def test_non_finite_square_root_is_retried_with_an_offset(monkeypatch):
    # older SciPy returned inf/nan for near-singular products; imitate that once
    calls = []
    real_sqrtm = fid.linalg.sqrtm

    def flaky_sqrtm(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fid.linalg, "sqrtm", flaky_sqrtm)
    s1, s2 = random_spd(10, RNG, 4), random_spd(10, RNG, 4)
    m1, m2 = np.zeros(10), np.ones(10)
    eps = 1e-6
    offset = eps * np.eye(10)
    expected = frechet_by_eigh(m1, s1 + offset, m2, s2 + offset) - 2 * eps * 10
    assert fid.frechet_distance(m1, s1, m2, s2, eps=eps) == pytest.approx(
        expected, abs=1e-6
    )
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))


def test_not_covariances_is_an_error():
    # S1 S2 = diag(1, -1) has the square root diag(1, i): not negligible
    with pytest.raises(ValueError, match="imaginary part"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"\(d, d\)"):
        fid.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


def test_feature_statistics():
    x = RNG.standard_normal((300, 5))
    mu, sigma = fid.feature_statistics(torch.from_numpy(x))
    np.testing.assert_allclose(mu, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.T), atol=1e-12)
    with pytest.raises(ValueError, match="at least 129 samples, got 128"):
        fid.feature_statistics(np.zeros((128, 128)))


# ------------------------------------------------------- precision, recall


def brute_force_pr(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def dists(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    r_real = np.sort(dists(real, real), axis=1)[:, k]
    r_fake = np.sort(dists(fake, fake), axis=1)[:, k]
    cross = dists(fake, real)
    precision = (cross <= r_real[None, :]).any(1).mean()
    recall = (cross <= r_fake[:, None]).any(0).mean()
    return precision, recall


def test_precision_recall_simple_cases():
    x = torch.randn(400, 8, generator=torch.Generator().manual_seed(1))
    assert fid.precision_recall(x, x.clone()) == (1.0, 1.0)
    assert fid.precision_recall(x, x + 100.0) == (0.0, 0.0)
    # half the fake points are real points, half far away: precision exactly 1/2
    fake = torch.cat([x[:200], x[200:] + 100.0])
    precision, _ = fid.precision_recall(x, fake)
    assert precision == 0.5


def test_precision_recall_matches_brute_force():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((300, 6)).astype(np.float32)
    fake = (1.5 * rng.standard_normal((250, 6)) + 0.7).astype(np.float32)
    expected = brute_force_pr(real.astype(np.float64), fake.astype(np.float64), k=3)
    # small chunks exercise the chunked loops
    got = fid.precision_recall(real, fake, k=3, chunk=37)
    assert got == pytest.approx(expected, abs=1 / 250)
    assert 0.1 < got[0] < 0.9 and 0.1 < got[1] < 0.99


def test_missing_classes():
    reference = [1000] * 10
    assert fid.missing_classes([1000] * 10, reference) == []
    # 5 of 5000 samples is 0.1%, below a tenth of the reference's 10%
    counts = [995, 1000, 1000, 1000, 1000, 5, 0, 0, 0, 0]
    assert fid.missing_classes(counts, reference) == [5, 6, 7, 8, 9]
    # 100 of 9100 is 1.1%, just above the threshold
    assert fid.missing_classes([100] + [1000] * 9, reference) == []


def test_class_kl():
    uniform = [100] * 10
    assert fid.class_kl(uniform, uniform) == 0.0
    # all the mass on five of ten equally likely digits: KL = log 2
    assert fid.class_kl([1] * 5 + [0] * 5, uniform) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="empty"):
        fid.class_kl(uniform, [0] + [1] * 9)


# ------------------------------------------------------------ classifier


def test_classifier_matches_its_record():
    from uotlib.data import load_mnist

    record = clf.read_record()
    assert clf.file_sha256(clf.WEIGHTS_PATH) == record["sha256"]
    assert clf.WEIGHTS_PATH.stat().st_size < 5_000_000
    model = clf.load_classifier("cpu")
    test = load_mnist(train=False)
    accuracy = clf.accuracy(model, test.images, test.labels)
    assert accuracy >= clf.MIN_TEST_ACCURACY
    assert abs(accuracy - record["test_accuracy"]) <= 0.05
    assert model.features(test.images[:7]).shape == (7, clf.FEATURE_DIM)


def test_classifier_refuses_foreign_or_missing_weights(tmp_path, tampered_weights):
    weights = tampered_weights(clf.WEIGHTS_PATH, "mnist_cnn.pt")
    with pytest.raises(clf.ClassifierWeightsError, match="sha256.*train-classifier"):
        clf.load_classifier("cpu", weights)
    with pytest.raises(clf.ClassifierWeightsError, match="missing.*train-classifier"):
        clf.load_classifier("cpu", tmp_path / "absent.pt")


def test_reference_cache_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setattr(fid, "_REFERENCE", {})
    first = fid.reference_statistics(cache_dir=tmp_path)
    (cached,) = tmp_path.glob("mnist_test_*.npz")
    assert first.sha256[:16] in cached.name
    monkeypatch.setattr(fid, "_REFERENCE", {})
    second = fid.reference_statistics(cache_dir=tmp_path)
    assert torch.equal(first.features, second.features)
    assert len(second) == 10_000 and second.class_counts.sum() == 10_000
    np.testing.assert_array_equal(first.sigma, second.sigma)


# ---------------------------------------------------------- sanity ladder


def increasing(values: list[float]) -> bool:
    return all(a < b for a, b in zip(values[:-1], values[1:], strict=True))


@pytest.fixture(scope="module")
def ladder():
    return fid.sanity_ladder(n=2000, noise_levels=(0.1, 0.2, 0.4, 0.8), seed=0)


def test_ladder_orders_the_rungs(ladder):
    train, low, noise = ladder["train"], ladder["digits_0_4"], ladder["pure_noise"]
    noise_fids = [rung["fid"] for rung in ladder["noise"]]
    recalls = [train["recall"], *[rung["recall"] for rung in ladder["noise"]]]
    assert increasing([train["fid"], *noise_fids])
    assert increasing([-r for r in recalls])
    assert 10 * train["fid"] < low["fid"] < noise["fid"]
    assert noise["fid"] > 3 * low["fid"]
    assert train["precision"] > 0.6 and train["recall"] > 0.6
    assert train["missing_classes"] == [] and train["class_kl"] < 0.02


def test_ladder_sees_the_dropped_digits(ladder):
    low = ladder["digits_0_4"]
    histogram = np.array(low["class_histogram"])
    assert histogram.sum() == 2000
    # bins 5-9 hold only the classifier's mistakes on digits 0-4
    assert histogram[5:].sum() <= 0.01 * 2000
    assert low["missing_classes"] == [5, 6, 7, 8, 9]
    assert low["recall"] < low["precision"] - 0.2
    # digits of a set S drawn with their real relative frequencies:
    # KL(p || q) = -log q(S), here q(S) = about 0.51
    q = fid.reference_statistics().class_counts / 10_000
    assert low["class_kl"] == pytest.approx(-math.log(q[:5].sum()), abs=0.05)


# -------------------------------------------------------------------- CLI


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="uotlib")
    evaluate.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((200, 28, 27), np.uint8), r"uint8 images of shape \(N, 28, 28\)"),
        (
            np.zeros((200, 28, 28), np.float32),
            r"float images of shape \(N, 1, 28, 28\)",
        ),
        (np.full((200, 1, 28, 28), 2.0), r"values in \[-1, 1\]"),
        (np.zeros((200, 28, 28), np.int64), "got dtype torch.int64"),
        (np.zeros((50, 28, 28), np.uint8), "at least 129 images"),
        (np.array([{"a": 1}], dtype=object), "not a plain .npy array"),
    ],
)
def test_cli_rejects_bad_images(tmp_path, capsys, array, message):
    path = tmp_path / "images.npy"
    np.save(path, array, allow_pickle=True)
    assert run_cli(["evaluate", "--images", str(path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert __import__("re").search(message, err), err


def test_cli_missing_file_and_no_traceback(tmp_path):
    # a separate interpreter shows what a user sees: one line, exit code 2
    code = (
        "import argparse, sys; from uotlib import evaluate; "
        "p = argparse.ArgumentParser(); evaluate.add_parser(p.add_subparsers()); "
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
    )
    missing = tmp_path / "absent.npy"
    proc = subprocess.run(
        [sys.executable, "-c", code, "evaluate", "--images", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"images file {missing} not found" in proc.stderr


def test_cli_scores_test_images(tmp_path, capsys):
    from uotlib.data import load_mnist, unit_to_uint8

    test = load_mnist(train=False)
    path = tmp_path / "test.npy"
    np.save(path, unit_to_uint8(test.images[:500]).squeeze(1).numpy())
    stats = tmp_path / "stats.npz"
    argv = ["evaluate", "--images", str(path), "--json", "--save-stats", str(stats)]
    assert run_cli([*argv, "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 500 and sum(result["class_histogram"]) == 500
    assert result["precision"] > 0.9 and result["recall"] > 0.5
    with np.load(stats) as data:
        assert data["mu"].shape == (128,) and data["sigma"].shape == (128, 128)


# -------------------------------------------------------------- generator


def test_generator_protocol_is_fixed_by_the_seed():
    torch.manual_seed(0)
    generator = torch.nn.Sequential(
        torch.nn.Linear(16, 784), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 28, 28))
    )
    generator.train()

    def sample_source(n: int, rng: torch.Generator) -> torch.Tensor:
        return torch.randn(n, 16, generator=rng)

    images = fid.generate_images(generator, sample_source, n=300, seed=5)
    again = fid.generate_images(generator, sample_source, n=300, seed=5, batch_size=7)
    other = fid.generate_images(generator, sample_source, n=300, seed=6)
    # same noise; batched matrix products may differ in the last bits
    torch.testing.assert_close(images, again, rtol=0, atol=1e-6)
    assert (images - other).abs().max() > 0.1
    assert generator.training  # the caller's mode is restored

    result = fid.evaluate_generator(generator, sample_source, n=300, seed=5)
    assert result["seed"] == 5 and result["n"] == 300
    assert result["fid"] == fid.evaluate_images(images)["fid"]


def test_sq_distance_is_the_mean_squared_move_of_the_noise():
    from uotlib.fid import MIN_SAMPLES, evaluate_generator
    from uotlib.train import Source

    source = Source("image", 10)

    class Shrink(torch.nn.Module):
        def forward(self, z):
            return (0.5 * z).clamp(-1, 1).view(-1, 1, 28, 28)

    n = MIN_SAMPLES
    result = evaluate_generator(Shrink(), source.sample, n=n, embed=source.embed)
    z = source.sample(n, torch.Generator().manual_seed(0)).view(-1, 1, 28, 28)
    expected = (z - (0.5 * z).clamp(-1, 1)).pow(2).flatten(1).sum(1).mean()
    assert result["sq_distance"] == pytest.approx(expected.item(), rel=1e-5)
    assert "sq_distance" not in evaluate_generator(Shrink(), source.sample, n=n)
