"""Finite differences: the independent check of every analytic gradient."""

import itertools
import numbers
from collections.abc import Callable
from typing import Any

from . import _checks
from ._namespace import namespace_of
from ._typing import ArrayLike, FloatArray

__all__ = ["numerical_gradient"]


def numerical_gradient(
    f: Callable[[Any], Any], x: ArrayLike, eps: float | None = None
) -> FloatArray:
    """Estimate the gradient of a scalar function by central differences.

    Each entry is ``(f(x + h e_i) - f(x - h e_i)) / (2 h)``, with ``2 h`` the
    step actually taken in floating point. Two evaluations of ``f`` per entry:
    meant for checking gradients on small arrays, not for training.

    Parameters
    ----------
    f : callable
        Takes an array shaped like ``x`` and returns a scalar (a Python number
        or a 0-d array).
    x : array_like
        The point. Use float64: in float32 the round-off term below swamps
        the estimate. Never modified; ``f`` is called on a working copy.
    eps : float, optional
        The step ``h``. By default ``h_i = eps_mach**(1/3) * max(1, |x_i|)``,
        which balances the truncation error (``O(h**2)``) against round-off
        (``O(eps_mach / h)``).

    Returns
    -------
    grad : array
        Shape of ``x``, in its floating dtype (float64 for integers).

    Raises
    ------
    ValueError
        "eps = ...; expected a positive number".

    See Also
    --------
    cross_entropy_grad : the analytic gradient this checks.

    Notes
    -----
    .. math:: \\frac{\\partial f}{\\partial x_i} \\approx
              \\frac{f(x + h e_i) - f(x - h e_i)}{2h},
              \\quad \\text{error} = O(h^2) + O(\\epsilon_{\\text{mach}} / h)

    References
    ----------
    .. [1] J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed.,
       Springer 2006, section 8.1.

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> logits = np.array([[2.0, 0.5, -1.0]])
    >>> labels = np.array([0])
    >>> def loss(z):
    ...     return xentlib.cross_entropy(z, labels)
    >>> numeric = xentlib.numerical_gradient(loss, logits)
    >>> analytic = xentlib.cross_entropy_grad(logits, labels)
    >>> print(np.abs(numeric - analytic).max() < 1e-9)
    True
    """
    xp = namespace_of("numerical_gradient", x=x)
    array = _checks.as_array("numerical_gradient", "x", x, xp)
    dtype = _checks.result_dtype(array.dtype, xp)
    _checks.work_dtype("numerical_gradient", "x", array.dtype, xp)
    if eps is not None and not (
        isinstance(eps, numbers.Real) and not isinstance(eps, bool) and 0 < eps < float("inf")
    ):
        msg = f"numerical_gradient: eps = {eps!r}; expected a positive number"
        raise ValueError(msg)
    point = array.astype(dtype, copy=True)
    if eps is None:
        steps = float(xp.finfo(dtype).eps) ** (1 / 3) * xp.maximum(1, xp.abs(point))
    else:
        steps = xp.full(point.shape, eps, dtype=dtype)
    grad = xp.empty_like(point)
    for i in itertools.product(*map(range, point.shape)):
        centre = point[i].copy()
        point[i] = centre + steps[i]
        forward_x, forward_f = point[i].copy(), float(f(point))
        point[i] = centre - steps[i]
        backward_x, backward_f = point[i].copy(), float(f(point))
        point[i] = centre
        grad[i] = (forward_f - backward_f) / (forward_x - backward_x)
    return grad
