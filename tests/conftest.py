"""Fixtures shared by the test modules."""

import shutil

import pytest

from uotlib import classifier as clf


@pytest.fixture
def tampered_weights(tmp_path):
    """A function that copies shipped weights and their record, then alters one byte.

    The copy keeps the shipped record, so its checksum no longer matches and
    a loader must refuse it.
    """

    def make(shipped, name):
        weights = tmp_path / name
        shutil.copy(shipped, weights)
        shutil.copy(clf.record_path(shipped), clf.record_path(weights))
        with open(weights, "ab") as handle:
            handle.write(b"\0")
        return weights

    return make
