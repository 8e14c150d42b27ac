"""Softmax, log-softmax and log-sum-exp along one axis, safe from overflow.

All three shift each slice by its maximum (so no ``exp`` exceeds 1) and, for
the logarithms, take ``log1p`` of the terms below the maximum, so a slice that
is almost certain keeps its tiny probability mass exactly: the steps of
`xentlib._lse`, which the losses use too.
"""

from . import _checks
from ._lse import max_shift, split_top
from ._namespace import errstate, namespace_of
from ._typing import ArrayLike, FloatArray, Loss

__all__ = ["softmax", "log_softmax", "logsumexp"]


def _log_sum_exp_shifted(shifted, xp):
    """``log(sum(exp(shifted)))`` along the last axis, kept as an axis, with the max's 1 apart.

    ``shifted`` comes from `max_shift`, so its largest entry contributes
    exactly 1. A fully masked slice gives -inf; one with +inf or NaN gives +inf or NaN.
    """
    e = xp.exp(shifted)
    rows = e.reshape(-1, e.shape[-1])
    e_top, rest = split_top(rows, xp.argmax(rows, axis=-1), xp)
    with errstate(xp, divide="ignore", invalid="ignore"):
        return xp.log1p((e_top - 1) + rest).reshape(*shifted.shape[:-1], 1)


def _prepare(func, x, axis, empty_ok=False):
    """Validate; return the namespace, ``x`` with the axis last, and the result's dtype."""
    xp = namespace_of(func, x=x)
    x = _checks.as_array(func, "x", x, xp)
    z = _checks.classes_last(func, x, axis, xp, empty_ok)
    return xp, z, _checks.result_dtype(x.dtype, xp)


def _restore(result, axis, dtype, xp):
    """Put the class axis back where it was, in the result's dtype."""
    return xp.moveaxis(result, -1, axis).astype(dtype, copy=False)


def softmax(x: ArrayLike, axis: int = -1) -> FloatArray:
    """Compute the softmax along ``axis``: exponentials normalized to sum to 1.

    Each slice along ``axis`` is shifted by its maximum before ``exp``, which
    leaves the result unchanged and keeps every exponential at most 1.

    Parameters
    ----------
    x : array_like
        Logits, any shape. Integers are promoted to float64; float16 and
        bfloat16 are computed in float32.
    axis : int, optional
        The class axis, normalized over (default -1). Same as ``dim`` of
        ``torch.softmax``; unlike ``scipy.special.softmax`` there is no
        ``axis=None`` (a softmax over a whole batch is the bug that
        ``xentlib.naive.batch_softmax`` shows).

    Returns
    -------
    p : array
        Same shape as ``x``, entries in [0, 1], each slice summing to 1, in the
        dtype of ``x`` (float64 for integer input).

    Raises
    ------
    TypeError
        If ``x`` is not real-valued, or ``axis`` is not an integer.
    ValueError
        If ``x`` is 0-dimensional, ``axis`` is out of range, or the class axis
        is empty.

    See Also
    --------
    log_softmax : the logarithm, computed without taking ``log`` of ``p``.
    xentlib.naive.softmax : the textbook formula that overflows.

    Notes
    -----
    .. math:: \\operatorname{softmax}(x)_j = \\frac{e^{x_j - m}}{\\sum_k e^{x_k - m}},
              \\quad m = \\max_k x_k

    A class with logit -inf gets probability 0. A slice that is entirely -inf
    has no probability to share out and gives 0 everywhere; a slice holding
    +inf or NaN gives NaN.

    References
    ----------
    .. [1] J. S. Bridle, "Probabilistic interpretation of feedforward
       classification network outputs, with relationships to statistical
       pattern recognition", Neurocomputing, 1990.
       https://doi.org/10.1007/978-3-642-76153-9_28

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> x = np.array([1000.0, 999.0, 0.0])
    >>> with np.errstate(over="ignore", invalid="ignore"):
    ...     print(np.exp(x) / np.exp(x).sum())
    [nan nan  0.]
    >>> print(np.round(xentlib.softmax(x), 4))
    [0.7311 0.2689 0.    ]
    """
    xp, z, out_dtype = _prepare("softmax", x, axis)
    with errstate(xp, over="ignore", invalid="ignore"):  # -3e38 - 3e38 is -inf: exp makes it 0
        _, shifted = max_shift(z, xp)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=-1, keepdims=True)
        # A slice holding +inf sums to inf: NaN throughout, as documented; all -inf gives 0.
        p = xp.where(xp.isfinite(total), e / xp.where(total == 0, 1, total), xp.nan)
    return _restore(p, axis, out_dtype, xp)


def log_softmax(x: ArrayLike, axis: int = -1) -> FloatArray:
    """Compute the logarithm of the softmax along ``axis``, as ``x - logsumexp(x)``.

    Never takes ``log`` of a probability, so a class far behind the leader gets
    its true (very negative) log-probability instead of ``log(0) = -inf``.

    Parameters
    ----------
    x : array_like
        Logits, any shape. Integers are promoted to float64; float16 and
        bfloat16 are computed in float32.
    axis : int, optional
        The class axis (default -1), as ``dim`` of
        ``torch.nn.functional.log_softmax``.

    Returns
    -------
    log_p : array
        Same shape and dtype as ``x`` (float64 for integer input), entries <= 0.

    Raises
    ------
    TypeError
        If ``x`` is not real-valued, or ``axis`` is not an integer.
    ValueError
        If ``x`` is 0-dimensional, ``axis`` is out of range, or the class axis
        is empty.

    See Also
    --------
    softmax : the probabilities themselves.
    logsumexp : what is subtracted from each logit.
    xentlib.naive.log_softmax : ``log(softmax(x))``, which underflows.

    Notes
    -----
    .. math:: \\log \\operatorname{softmax}(x)_j = (x_j - m)
              - \\log \\sum_k e^{x_k - m}, \\quad m = \\max_k x_k

    A class with logit -inf gets -inf; a slice that is entirely -inf gives -inf
    everywhere (nothing in it is possible); +inf or NaN give NaN.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing
       the log-sum-exp and softmax functions", IMA Journal of Numerical
       Analysis 41(4), 2021. https://doi.org/10.1093/imanum/draa038

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> x = np.array([0.0, -1000.0])
    >>> with np.errstate(divide="ignore"):
    ...     print(np.log(xentlib.softmax(x)))
    [  0. -inf]
    >>> print(xentlib.log_softmax(x))
    [    0. -1000.]
    """
    xp, z, out_dtype = _prepare("log_softmax", x, axis)
    with errstate(xp, over="ignore", invalid="ignore"):
        _, shifted = max_shift(z, xp)
        s = _log_sum_exp_shifted(shifted, xp)
        # A fully masked slice (s = -inf) stays -inf; +inf or NaN in it make it NaN throughout.
        log_p = xp.where(xp.isfinite(s), shifted - s, xp.where(xp.isneginf(s), shifted, xp.nan))
    return _restore(log_p, axis, out_dtype, xp)


def logsumexp(x: ArrayLike, axis: int = -1, keepdims: bool = False) -> Loss:
    """Compute ``log(sum(exp(x)))`` along ``axis`` without overflow.

    The maximum ``m`` is taken out first: ``m + log(sum(exp(x - m)))``, with the
    sum of the terms below the maximum passed through ``log1p``.

    Parameters
    ----------
    x : array_like
        Any shape. Integers are promoted to float64; float16 and bfloat16 are
        computed in float32.
    axis : int, optional
        The axis to reduce (default -1), as ``dim`` of ``torch.logsumexp``.
    keepdims : bool, optional
        Keep the reduced axis with length 1 (default False).

    Returns
    -------
    lse : array
        ``x``'s shape without ``axis`` (or with length 1 there), in the dtype
        of ``x`` (float64 for integer input). A slice that is entirely -inf
        gives -inf, and so does an empty one (as in scipy); +inf gives +inf;
        NaN gives NaN. A NumPy scalar where the result has no axes left.

    Raises
    ------
    TypeError
        If ``x`` is not real-valued, or ``axis`` is not an integer.
    ValueError
        If ``x`` is 0-dimensional or ``axis`` is out of range.

    See Also
    --------
    log_softmax : ``x - logsumexp(x, keepdims=True)``.
    numpy.logaddexp : the same for two arguments.
    scipy.special.logsumexp : with weights and signs, for any number of axes.
    xentlib.naive.logsumexp : the formula as written, which overflows.

    Notes
    -----
    .. math:: \\operatorname{LSE}(x) = m + \\log \\sum_k e^{x_k - m},
              \\quad m = \\max_k x_k

    Its gradient is the softmax.

    References
    ----------
    .. [1] P. Blanchard, D. J. Higham and N. J. Higham, "Accurately computing
       the log-sum-exp and softmax functions", IMA Journal of Numerical
       Analysis 41(4), 2021. https://doi.org/10.1093/imanum/draa038

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> x = np.array([1000.0, 1000.0])
    >>> with np.errstate(over="ignore"):
    ...     print(np.log(np.sum(np.exp(x))))
    inf
    >>> print(round(float(xentlib.logsumexp(x)), 4))
    1000.6931
    """
    xp, z, out_dtype = _prepare("logsumexp", x, axis, empty_ok=True)
    if z.shape[-1] == 0:  # the log of an empty sum, as scipy
        lse = xp.full((*z.shape[:-1], 1), -xp.inf, dtype=z.dtype)
    else:
        with errstate(xp, over="ignore", invalid="ignore"):
            m, shifted = max_shift(z, xp)
            lse = m + _log_sum_exp_shifted(shifted, xp)
    if keepdims:
        return _restore(lse, axis, out_dtype, xp)
    return lse[..., 0].astype(out_dtype, copy=False)[()]
