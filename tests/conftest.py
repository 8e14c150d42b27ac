"""The ``xp`` fixture: every backend test runs on NumPy, read-only NumPy and CuPy."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# The first call on a GPU is slow, and hypothesis tests take the xp fixture.
settings.register_profile(
    "xentlib", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# `make test-slow`: HYPOTHESIS_PROFILE=ci pytest -m slow, every property at 3000 examples.
settings.register_profile("ci", parent=settings.get_profile("xentlib"), max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "xentlib"))


class ReadOnlyNumPy:
    """NumPy whose ``asarray`` hands out read-only arrays.

    A function that writes into its input then fails with NumPy's own
    "assignment destination is read-only" instead of passing unnoticed.
    """

    __name__ = "numpy"

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asarray(x, dtype=None):
        array = np.array(x, dtype=dtype, copy=True)
        array.flags.writeable = False
        return array


def _cupy_with_device():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    if not cupy.cuda.is_available():
        pytest.skip("no CUDA device available")
    return cupy


@pytest.fixture(
    params=["numpy", "numpy:readonly", pytest.param("cupy", marks=pytest.mark.gpu)]
)
def xp(request):
    if request.param == "numpy":
        return np
    if request.param == "numpy:readonly":
        return ReadOnlyNumPy()
    return _cupy_with_device()
