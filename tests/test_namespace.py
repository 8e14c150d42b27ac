"""Choosing the backend.

default_namespace from XENTLIB_BACKEND, to_numpy, results on the input's backend.
"""

import numpy as np
import pytest

import xentlib

from .helpers import backend


@pytest.mark.parametrize("value", [None, "numpy", " NumPy "])
def test_default_is_numpy(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("XENTLIB_BACKEND", raising=False)
    else:
        monkeypatch.setenv("XENTLIB_BACKEND", value)
    assert xentlib.default_namespace() is np


def test_unknown_backend(monkeypatch):
    monkeypatch.setenv("XENTLIB_BACKEND", "torch")
    with pytest.raises(
        ValueError, match=r"XENTLIB_BACKEND = 'torch'; expected 'numpy', 'cupy' or 'auto'"
    ):
        xentlib.default_namespace()


def test_auto_falls_back_to_numpy_without_a_gpu(monkeypatch):
    monkeypatch.setenv("XENTLIB_BACKEND", "auto")
    try:
        import cupy

        has_gpu = cupy.cuda.is_available()
    except ImportError:
        has_gpu = False
    assert xentlib.default_namespace().__name__ == ("cupy" if has_gpu else "numpy")


def test_to_numpy_is_a_no_op_for_numpy():
    a = np.arange(3.0)
    assert xentlib.to_numpy(a) is a
    assert isinstance(xentlib.to_numpy(2.5), np.ndarray)


@pytest.mark.parametrize(
    "call",
    [
        lambda xp, z, y: xentlib.softmax(z),
        lambda xp, z, y: xentlib.log_softmax(z),
        lambda xp, z, y: xentlib.logsumexp(z),
        lambda xp, z, y: xentlib.one_hot(y, 3),
        lambda xp, z, y: xentlib.cross_entropy(z, y),
        lambda xp, z, y: xentlib.cross_entropy_grad(z, y),
        lambda xp, z, y: xentlib.cross_entropy_with_grad(z, y)[1],
        lambda xp, z, y: xentlib.numerical_gradient(lambda v: xentlib.cross_entropy(v, y), z),
    ],
)
def test_results_stay_on_the_input_backend(xp, call):
    z = xp.asarray([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0]])
    assert backend(call(xp, z, xp.asarray([2, 0]))) == backend(z)
