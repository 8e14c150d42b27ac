"""The textbook formulas, kept unsafe on purpose.

Each function here is what tutorials write first, and each fails in the way
the book shows: overflow, ``log(0)``, ``0 * inf``, a sum over the wrong axis.
Tests prove that every one fails exactly as claimed; the safe versions live in
`xentlib.softmax` and `xentlib.loss`. Do not use these for real work.
"""

from ._namespace import get_namespace
from ._typing import ArrayLike, FloatArray, IntArray, Loss

__all__ = [
    "batch_softmax",
    "cross_entropy_gather",
    "cross_entropy_onehot",
    "log_softmax",
    "logsumexp",
    "softmax",
]


def softmax(x: ArrayLike) -> FloatArray:
    """``exp(x) / sum(exp(x))`` per row, with no max shift: overflows to NaN.

    Parameters
    ----------
    x : array_like
        Logits, classes along the last axis.

    Returns
    -------
    p : array
        Same shape as ``x``. Where a logit passes ~709 (float64), ``exp``
        overflows to inf, ``inf / inf`` gives NaN, and the rest of its row 0.

    Examples
    --------
    >>> import numpy as np
    >>> from xentlib import naive
    >>> with np.errstate(over="ignore", invalid="ignore"):
    ...     print(naive.softmax(np.array([[1.0, 1000.0]])))
    [[ 0. nan]]
    """
    xp = get_namespace(x)
    e = xp.exp(x)
    return e / xp.sum(e, axis=-1, keepdims=True)


def batch_softmax(x: ArrayLike) -> FloatArray:
    """``exp(x) / sum(exp(x))`` with the sum over the whole batch, not each row.

    Rows then sum to their share of the batch instead of to 1.

    Parameters
    ----------
    x : array_like
        Logits, classes along the last axis.

    Returns
    -------
    p : array
        Same shape as ``x``, the whole array summing to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from xentlib import naive
    >>> print(naive.batch_softmax(np.zeros((2, 2))).sum(axis=1))
    [0.5 0.5]
    """
    xp = get_namespace(x)
    e = xp.exp(x)
    return e / xp.sum(e)


def log_softmax(x: ArrayLike) -> FloatArray:
    """``log(softmax(x))``: a class far behind gets ``log(0) = -inf``.

    Parameters
    ----------
    x : array_like
        Logits, classes along the last axis.

    Returns
    -------
    log_p : array
        Same shape as ``x``; -inf where the probability underflowed to 0, NaN
        where `softmax` overflowed.

    Examples
    --------
    >>> import numpy as np
    >>> from xentlib import naive
    >>> with np.errstate(divide="ignore"):
    ...     print(naive.log_softmax(np.array([[0.0, -1000.0]])))
    [[  0. -inf]]
    """
    xp = get_namespace(x)
    return xp.log(softmax(x))


def logsumexp(x: ArrayLike) -> Loss:
    """``log(sum(exp(x)))`` per row, as written: inf once a logit passes ~709 (float64).

    Parameters
    ----------
    x : array_like
        Logits, classes along the last axis.

    Returns
    -------
    lse : array
        Shape of ``x`` without its last axis.

    Examples
    --------
    >>> import numpy as np
    >>> from xentlib import naive
    >>> with np.errstate(over="ignore"):
    ...     print(naive.logsumexp(np.array([[1000.0, 1000.0]])))
    [inf]
    """
    xp = get_namespace(x)
    return xp.log(xp.sum(xp.exp(x), axis=-1))


def cross_entropy_onehot(probs: ArrayLike, onehot: ArrayLike) -> Loss:
    """Mean of ``-sum(onehot * log(probs))`` per row: NaN once a probability is 0.

    The zeros of the one-hot row are meant to remove the other classes' terms,
    but ``0 * log(0)`` is ``0 * -inf = nan``, not 0.

    Parameters
    ----------
    probs : array_like
        Probabilities, classes along the last axis.
    onehot : array_like
        One-hot targets, the shape of ``probs``.

    Returns
    -------
    loss : array
        The mean of the rows' losses, a scalar.

    Examples
    --------
    >>> import numpy as np
    >>> from xentlib import naive
    >>> probs = np.array([[1.0, 0.0]])
    >>> with np.errstate(divide="ignore", invalid="ignore"):
    ...     print(naive.cross_entropy_onehot(probs, np.array([[1.0, 0.0]])))
    nan
    """
    xp = get_namespace(probs, onehot)
    return xp.mean(-xp.sum(onehot * xp.log(probs), axis=-1))


def cross_entropy_gather(probs: FloatArray, labels: IntArray) -> Loss:
    """Mean of ``-log(probs[range(n), labels])``: the gather on probabilities.

    Right for moderate probabilities, ``inf`` once the label's probability
    underflows to 0, and NumPy wraps a negative label to the last class
    without a word.

    Parameters
    ----------
    probs : array_like
        Probabilities, shape ``(n, C)``.
    labels : array_like
        Integer class indices, shape ``(n,)``.

    Returns
    -------
    loss : array
        The mean of the rows' losses, a scalar.

    Examples
    --------
    >>> import numpy as np
    >>> from xentlib import naive
    >>> probs = np.array([[0.25, 0.75], [0.5, 0.5]])
    >>> print(round(float(naive.cross_entropy_gather(probs, np.array([1, 0]))), 4))
    0.4904
    """
    xp = get_namespace(probs, labels)
    rows = xp.arange(probs.shape[0])
    return xp.mean(-xp.log(probs[rows, labels]))
