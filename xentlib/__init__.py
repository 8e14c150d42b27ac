"""Cross-entropy done carefully, on NumPy and CuPy: the xentlib package.

The companion package of the book "Why is cross-entropy written like that?".
Every function takes NumPy or CuPy arrays and answers in the same library;
CuPy is never imported unless the caller already did, and Dask only by
``xentlib.sharded``, which is loaded on first use.
"""

import importlib

from . import naive
from ._namespace import default_namespace, get_namespace, to_numpy
from .gradcheck import numerical_gradient
from .linear import linear_cross_entropy, linear_cross_entropy_with_grad
from .loss import cross_entropy, cross_entropy_grad, cross_entropy_with_grad, one_hot
from .softmax import log_softmax, logsumexp, softmax

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "one_hot",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_with_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "numerical_gradient",
    "get_namespace",
    "default_namespace",
    "to_numpy",
    "naive",
]

__version__ = "0.1.0"


def __getattr__(name):
    # xentlib.sharded needs Dask: it is imported when first used, never by `import xentlib`.
    if name == "sharded":
        return importlib.import_module(".sharded", __name__)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
