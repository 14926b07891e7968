"""Fixtures of the dataset tests."""
import pytest

from fastmim.datasets import fetch_fashion_mnist


@pytest.fixture(scope='session')
def real_root():
    """The real Fashion-MNIST files: installed, cached, or fetched now (apt-get download +
    dpkg -x, 31 MB, once per machine); a failed fetch fails the test with the command's
    stderr."""
    return fetch_fashion_mnist()
