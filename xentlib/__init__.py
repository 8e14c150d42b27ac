"""xentlib: cross-entropy done carefully, on NumPy and CuPy.

The companion package of the book "Why is cross-entropy written like that?".
Every function takes NumPy or CuPy arrays and answers in the same library;
CuPy is never imported unless the caller already did.
"""

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
