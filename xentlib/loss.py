"""Cross-entropy of logits against class indices or probabilities, and its gradient.

The public functions validate their input once (`xentlib._checks`), read the
target as a distribution over the classes (`xentlib._targets`), and hand both
to one fused pass over the logits (`xentlib._pass`), which every backend runs.
"""

import functools
from collections.abc import Callable

from . import _checks
from ._namespace import namespace_of
from ._pass import Pass
from ._targets import ClassIndices, Probabilities, reduction_divisor
from ._typing import ArrayLike, DTypeLike, FloatArray, Loss, Reduction

__all__ = ["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad", "one_hot"]


def _prepare(func, logits, target, axis, weight, ignore_index, label_smoothing, z_loss, reduction,
             out=None):
    """Validate everything; return the namespace, the logits with classes last, the dtype to
    compute in, the target, and the z-loss and reduction as checked."""
    xp = namespace_of(func, logits=logits, target=target, weight=weight, out=out)
    logits = _checks.as_array(func, "logits", logits, xp)
    target = _checks.as_array(func, "target", target, xp)
    dtype = _checks.logits_dtype(func, logits, axis, xp)
    # moveaxis costs microseconds of Python even when it has nothing to move
    z = logits if axis in (-1, logits.ndim - 1) else xp.moveaxis(logits, axis, -1)
    kind = _checks.target_kind(func, target, logits.shape, axis)
    label_smoothing, z_loss, reduction = _checks.options(func, kind, ignore_index,
                                                         label_smoothing, z_loss, reduction)
    num_classes = z.shape[-1]
    if weight is not None:
        weight = _checks.weight_vector(func, weight, num_classes, dtype, xp)
    if out is not None:
        _checks.check_out(func, out, logits, xp, target=target, weight=weight)
    if kind == "index":
        _checks.index_target(func, "target", target, num_classes, axis, ignore_index, xp)
        q = ClassIndices(xp, target, weight, num_classes, ignore_index, label_smoothing, dtype)
        return xp, z, dtype, q, z_loss, reduction
    check: Callable[[], None] | None = functools.partial(_checks.probability_target, func,
                                                          target, xp)
    if out is not None and _checks.is_same_view(out, logits):  # check before overwriting them
        _checks.probability_target(func, target, xp)
        check = None
    probabilities = xp.moveaxis(target, axis, -1)
    soft = Probabilities(xp, probabilities, weight, label_smoothing, check)
    return xp, z, dtype, soft, z_loss, reduction


def _loss_and_grad(func, logits, target, out, axis, options):
    """The reduced loss and the gradient, written into ``out`` (a new array by default)."""
    xp, z, dtype, q, z_loss, reduction = _prepare(func, logits, target, axis, out=out, **options)
    if out is None:
        grad = xp.empty(z.shape, dtype=_checks.result_dtype(z.dtype, xp))
        out = xp.moveaxis(grad, -1, axis)
    else:
        grad = xp.moveaxis(out, axis, -1)
    divisor = reduction_divisor(xp, q.count, reduction, dtype)
    return Pass(xp, z, q, dtype, z_loss, grad, divisor).reduced(reduction), out


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: Reduction = "mean",
) -> Loss:
    """Compute the cross-entropy between softmax(logits) and a target.

    For class indices this is ``logsumexp(z) - z[y]``, the negative
    log-likelihood of the label, gathered without ever forming ``softmax`` or
    its logarithm in full; for probabilities it is ``-sum_j t_j log p_j``.
    Options follow ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    logits : array_like, shape (N, C), (N, C, d1, ...) with axis=1, or (B, T, C)
        Unnormalized scores. Integers are promoted to float64; float16 and
        bfloat16 are computed in float32.
    target : array_like
        Either integer class indices with the shape of ``logits`` minus the
        class axis, or floating probabilities with the shape of ``logits``
        (soft labels; rows need not sum to 1).
    axis : int, optional
        The class axis of ``logits`` (default -1). torch's class axis is 1.
    weight : array_like, shape (C,), optional
        A weight per class, applied to each class's share of the target (so
        with label smoothing every class's smoothed mass is weighted, as torch).
    ignore_index : int, optional
        Class indices equal to it contribute nothing and leave the mean's
        denominator. Default None, where torch's default is -100. Only for
        class-index targets.
    label_smoothing : float in [0, 1], optional
        Mix the target with the uniform distribution: ``(1 - eps) q + eps / C``.
    z_loss : float >= 0, optional
        Add ``z_loss * logsumexp(logits)**2`` to every non-ignored item,
        unweighted (PaLM's auxiliary loss; torch has no such option).
    reduction : {'mean', 'sum', 'none'} or positive number, optional
        ``'mean'`` divides the sum by the summed weight ``w[y]`` of the
        non-ignored items (class indices) or by the number of items
        (probabilities), as torch. A number divides the sum by it: a fixed
        token count makes gradient accumulation over micro-batches exact.

    Returns
    -------
    loss : array
        0-d for 'mean', 'sum' or a number; the target's batch shape for
        'none'. float32 for float16/bfloat16 logits (so a mean cannot
        overflow), float64 for integers, otherwise the logits' dtype.

    Raises
    ------
    ValueError
        "target[i] = v is outside [0, C)" for a class index that is neither a
        class nor ``ignore_index``; "target[i, j] = v is negative" for a
        probability below 0; "target has shape ..." for a shape that fits
        neither kind; "weight has n entries; expected one per class";
        "label_smoothing = ...", "z_loss = ...", "reduction = ..." for values
        out of range; "ignore_index ... applies to class-index targets only".
    TypeError
        "target has dtype float..." for floating labels shaped like class
        indices; "logits is cupy.ndarray but target is numpy.ndarray" when
        backends are mixed; "logits is torch.Tensor; expected a NumPy or CuPy
        array" for another library's array (Dask, JAX, ...), which is never
        converted silently, and for ``np.matrix`` or a masked array.

    See Also
    --------
    cross_entropy_grad : its gradient with respect to ``logits``.
    cross_entropy_with_grad : both in one pass.
    xentlib.naive.cross_entropy_onehot : ``-sum(y * log(softmax(z)))`` as
        textbooks write it, NaN when a probability underflows.

    Notes
    -----
    With ``w`` the class weights, ``eps`` the label smoothing and ``c`` the
    z-loss, each item's target distribution ``q`` and loss are

    .. math::

        q = (1 - \\epsilon)\\, w_y\\, e_y + \\tfrac{\\epsilon}{C} w
        \\quad\\text{or}\\quad
        q = w \\odot \\big((1 - \\epsilon) t + \\tfrac{\\epsilon}{C}\\big),

        \\ell = \\sum_k q_k \\big(\\operatorname{LSE}(z) - z_k\\big)
                + c \\operatorname{LSE}(z)^2 .

    Conventions: a logit of -inf masks its class (probability 0; a masked
    class with zero target mass adds nothing, where torch gives NaN). A +inf
    or NaN logit makes that item's loss NaN and leaves the others alone.
    Nothing to average (an empty batch, every item ignored, or weights summing
    to 0) gives a mean of 0.0 and a zero gradient, where torch gives NaN: a
    batch that teaches nothing should not poison the parameters. A row whose
    every logit is -inf costs +inf where it carries target mass and 0 where it
    carries none; its gradient is 0 either way, and the z-loss adds nothing to
    it. One limit, shared with torch: with label smoothing or probability
    targets, logits that span more than the largest float (``1e308`` and
    ``-1e308`` in one float64 row) make a term ``z_k - LSE`` overflow, and the
    loss is inf though the exact loss may be finite.

    References
    ----------
    .. [1] C. E. Shannon, "A mathematical theory of communication", Bell
       System Technical Journal 27, 1948.
    .. [2] C. Szegedy et al., "Rethinking the Inception architecture for
       computer vision", CVPR 2016 (label smoothing).
       https://arxiv.org/abs/1512.00567
    .. [3] A. Chowdhery et al., "PaLM: scaling language modeling with
       pathways", JMLR 24, 2023 (z-loss). https://arxiv.org/abs/2204.02311

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 0.0]])
    >>> labels = np.array([0, 2])
    >>> print(round(float(xentlib.cross_entropy(logits, labels)), 4))
    1.6681
    >>> p = xentlib.softmax(logits)
    >>> print(round(float(-np.log(p[np.arange(2), labels]).mean()), 4))
    1.6681

    Soft labels give the same number when they are one-hot:

    >>> onehot = xentlib.one_hot(labels, 3)
    >>> print(round(float(xentlib.cross_entropy(logits, onehot)), 4))
    1.6681
    >>> print(np.round(xentlib.cross_entropy(logits, labels, reduction="none"), 4))
    [0.2413 3.0949]
    """
    options = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                   z_loss=z_loss, reduction=reduction)
    xp, z, dtype, q, z_loss, reduction = _prepare("cross_entropy", logits, target, axis, **options)
    divisor = reduction_divisor(xp, q.count, reduction, dtype)
    return Pass(xp, z, q, dtype, z_loss, divisor=divisor).reduced(reduction)


def cross_entropy_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: Reduction = "mean",
) -> FloatArray:
    """Compute the gradient of ``cross_entropy`` with respect to ``logits``.

    Analytic, not automatic: ``softmax(z) - y`` for one-hot targets, scaled by
    the reduction (``1/N`` for the mean), with the options' terms added.

    Parameters
    ----------
    logits, target, axis, weight, ignore_index, label_smoothing, z_loss, reduction
        As for `cross_entropy`. With ``reduction='none'`` each item's slice
        holds that item's own gradient (the gradient of the sum).

    Returns
    -------
    grad : array
        Shape of ``logits``, in its dtype (float64 for integer logits).

    Raises
    ------
    ValueError, TypeError
        As for `cross_entropy`, naming this function.

    See Also
    --------
    cross_entropy_with_grad : loss and gradient in one pass.
    numerical_gradient : central differences, to check this one.

    Notes
    -----
    With ``q`` the item's target distribution (see `cross_entropy`) and
    ``p = softmax(z)``,

    .. math:: \\frac{\\partial \\ell}{\\partial z} =
              \\Big(\\sum_k q_k + 2 c \\operatorname{LSE}(z)\\Big) p - q ,

    which is ``p - y`` for a one-hot target because ``sum_k y_k = 1``. Each row
    of a one-hot gradient without smoothing or z-loss therefore sums to 0.

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 0.0]])
    >>> labels = np.array([0, 2])
    >>> grad = xentlib.cross_entropy_grad(logits, labels)
    >>> p = xentlib.softmax(logits)
    >>> print(np.allclose(grad, (p - xentlib.one_hot(labels, 3)) / 2))
    True
    """
    options = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                   z_loss=z_loss, reduction=reduction)
    return _loss_and_grad("cross_entropy_grad", logits, target, None, axis, options)[1]


def cross_entropy_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    out: FloatArray | None = None,
    axis: int = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: Reduction = "mean",
) -> tuple[Loss, FloatArray]:
    """Compute ``cross_entropy`` and ``cross_entropy_grad`` in one pass.

    The log-sum-exp of each item is computed once and serves both; the
    gradient can be written into a buffer the caller owns, including the
    logits themselves.

    Parameters
    ----------
    logits, target
        As for `cross_entropy`.
    out : array, optional
        Where to write the gradient: shape of ``logits`` and its dtype (float64
        for integer logits). ``out=logits`` overwrites the logits with their
        gradient, the training-loop idiom that needs no second logits-sized
        array. Any other ``out`` must share no memory with the logits, the
        target or the weights. Probabilities are checked before
        ``out=logits`` is written; a separate ``out`` may hold part of a
        gradient when they fail.
    axis, weight, ignore_index, label_smoothing, z_loss, reduction
        As for `cross_entropy`.

    Returns
    -------
    loss : array
        As `cross_entropy` returns it.
    grad : array
        As `cross_entropy_grad` returns it; ``out`` itself when given.

    Raises
    ------
    ValueError, TypeError
        As for `cross_entropy`, and "out has shape ..." or "out has dtype ..."
        for a buffer that does not fit; "out shares memory with target" (or
        weight) or "out overlaps logits without being logits itself" for one
        that would be written while it is read.

    See Also
    --------
    cross_entropy : the loss alone.
    cross_entropy_grad : the gradient alone.

    Notes
    -----
    One ``exp`` per logit serves both results: each row's exponentials are
    written into the gradient buffer, summed for the loss, then scaled in
    place. On NumPy the rows go in blocks of about 1 MiB on two threads
    (``xentlib._blocked.BLOCK_BYTES`` and ``THREADS``), each block adding up
    its own items' losses, so with ``out=logits`` the extra memory is a few
    blocks whatever the batch; on CuPy the pass takes the whole array at once.
    ``python -m xentlib.bench`` measures both against torch.

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 0.0]])
    >>> labels = np.array([0, 2])
    >>> loss, grad = xentlib.cross_entropy_with_grad(logits, labels)
    >>> separate = xentlib.cross_entropy_grad(logits, labels)
    >>> print(round(float(loss), 4), np.allclose(grad, separate))
    1.6681 True
    >>> work = logits.copy()
    >>> _, g = xentlib.cross_entropy_with_grad(work, labels, out=work)
    >>> g is work
    True
    """
    options = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                   z_loss=z_loss, reduction=reduction)
    return _loss_and_grad("cross_entropy_with_grad", logits, target, out, axis, options)


def one_hot(labels: ArrayLike, num_classes: int, dtype: DTypeLike | None = None) -> FloatArray:
    """Turn class indices into one-hot rows: 1 at the label, 0 elsewhere.

    Parameters
    ----------
    labels : array_like of int
        Class indices, any shape, each in ``[0, num_classes)``.
    num_classes : int
        The number of classes ``C``, at least 1.
    dtype : dtype, optional
        Of the result; float64 by default, like ``numpy.eye``.

    Returns
    -------
    onehot : array, shape ``labels.shape + (num_classes,)``
        1 where the last index equals the label, 0 elsewhere.

    Raises
    ------
    TypeError
        "labels has dtype ..." for non-integer labels.
    ValueError
        "labels[i] = v is outside [0, C)"; "num_classes = ..." when not a
        positive integer. (NumPy's ``eye(C)[labels]`` would wrap a negative
        label to the last class without a word.)

    See Also
    --------
    cross_entropy : accepts the labels directly; the one-hot matrix is only
        needed for probability targets.

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> print(xentlib.one_hot(np.array([2, 0]), 3))
    [[0. 0. 1.]
     [1. 0. 0.]]
    """
    xp = namespace_of("one_hot", labels=labels)
    indices = _checks.as_array("one_hot", "labels", labels, xp)
    if indices.dtype.kind not in "iu":
        msg = f"one_hot: labels has dtype {indices.dtype}; expected integer class indices"
        raise TypeError(msg)
    _checks.check_num_classes("one_hot", num_classes)
    _checks.index_target("one_hot", "labels", indices, num_classes, None, None, xp)
    classes = xp.arange(num_classes)
    return (indices[..., None] == classes).astype(xp.float64 if dtype is None else dtype)
