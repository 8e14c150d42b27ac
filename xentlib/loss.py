"""Cross-entropy of logits against class indices or probabilities, and its gradient.

Every option is read as a target distribution ``q`` over the classes of each
item (``w`` the class weights, ``eps`` the label smoothing, ``C`` the classes):

- class index ``y``:     ``q = (1 - eps) w[y] onehot(y) + (eps / C) w``
- probabilities ``t``:   ``q = w ((1 - eps) t + eps / C)``

so one formula gives every item's loss and one its gradient::

    loss_i = sum_k q_ik (LSE_i - z_ik) + c LSE_i**2
    grad_i = (sum_k q_ik + 2 c LSE_i) softmax(z_i) - q_i

with ``c`` the z-loss coefficient; the reduction then scales both. For class
indices ``q`` is never built: the label term is gathered and scattered.
"""

from . import _checks
from ._namespace import errstate, namespace_of
from .softmax import finite_or_zero, log_sum_exp_shifted, max_shift

__all__ = ["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad", "one_hot"]


def _weighted_nll(q, shifted, s, xp):
    """``sum_k q_k (s - shifted_k)``, a term with ``q_k = 0`` counting exactly 0 (not 0 * inf)."""
    nll = s - shifted
    return xp.sum(xp.where(q == 0, 0, q * nll), axis=-1)


class _ClassIndices:
    """Targets given as class indices; items equal to ``ignore_index`` carry no mass."""

    def __init__(self, xp, labels, weight, ignore_index, label_smoothing):
        self.xp = xp
        self.valid = None if ignore_index is None else labels != ignore_index
        # An ignored item points at class 0 so that gathering stays in bounds; its mass is 0.
        self.labels = labels if self.valid is None else xp.where(self.valid, labels, 0)
        label_weight = self.on_items(weight[self.labels])
        self.count = xp.sum(label_weight)
        self.hit = (1 - label_smoothing) * label_weight
        self.spread = None
        self.mass = self.hit
        if label_smoothing > 0:
            self.spread = (label_smoothing / weight.shape[0]) * weight
            self.mass = self.hit + self.on_items(xp.sum(self.spread))

    def on_items(self, values):
        """``values`` per item, with ignored items set to 0."""
        if self.valid is None:
            return values
        return self.xp.where(self.valid, values, 0)

    def cross(self, shifted, s):
        xp = self.xp
        label_shifted = xp.take_along_axis(shifted, self.labels[..., None], axis=-1)[..., 0]
        loss = xp.where(self.hit == 0, 0, self.hit * (s[..., 0] - label_shifted))
        if self.spread is not None:
            loss = loss + _weighted_nll(self.spread, shifted, s, xp)
        return loss

    def subtract_from(self, grad, scale):
        xp = self.xp
        index = self.labels[..., None]
        label_grad = xp.take_along_axis(grad, index, axis=-1) - (scale * self.hit)[..., None]
        xp.put_along_axis(grad, index, label_grad, axis=-1)
        if self.spread is not None:
            grad -= scale * self.spread
        if self.valid is not None:
            grad[~self.valid] = 0  # ignored items, even where a NaN logit left 0 * NaN


class _Probabilities:
    """Targets given as a probability (or any non-negative mass) per class."""

    def __init__(self, xp, target, weight, label_smoothing):
        self.xp = xp
        if label_smoothing > 0:
            target = (1 - label_smoothing) * target + label_smoothing / target.shape[-1]
        self.q = target * weight
        self.mass = xp.sum(self.q, axis=-1)
        self.count = self.mass.size

    def on_items(self, values):
        return values

    def cross(self, shifted, s):
        return _weighted_nll(self.q, shifted, s, self.xp)

    def subtract_from(self, grad, scale):
        grad -= scale * self.q


def _prepare(func, logits, target, axis, weight, ignore_index, label_smoothing, z_loss, reduction,
             out=None):
    """Validate everything; return the namespace, the logits as given and with classes last, and the target."""
    xp = namespace_of(func, logits=logits, target=target, weight=weight, out=out)
    logits, target = xp.asarray(logits), xp.asarray(target)
    z = _checks.classes_last(func, logits, axis, xp)
    kind = _checks.target_kind(func, target, logits.shape, axis)
    _checks.check_ignore_index(func, ignore_index, kind)
    _checks.check_label_smoothing(func, label_smoothing)
    _checks.check_z_loss(func, z_loss)
    _checks.check_reduction(func, reduction)
    num_classes = z.shape[-1]
    if weight is None:
        weight = xp.ones(num_classes, dtype=z.dtype)
    else:
        weight = _checks.weight_vector(func, weight, num_classes, z.dtype, xp)
    if kind == "index":
        _checks.index_target(func, "target", target, num_classes, axis, ignore_index, xp)
        return xp, logits, z, _ClassIndices(xp, target, weight, ignore_index, label_smoothing)
    _checks.probability_target(func, target, xp)
    probabilities = xp.moveaxis(target, axis, -1).astype(z.dtype, copy=False)
    return xp, logits, z, _Probabilities(xp, probabilities, weight, label_smoothing)


def _item_losses(xp, z, target, z_loss):
    """Each item's loss, plus what the gradient reuses: shifted logits, log-sum, LSE."""
    m, shifted = max_shift(z, xp)
    s = log_sum_exp_shifted(shifted, xp)
    s0 = finite_or_zero(s, xp)
    lse = (m + s)[..., 0]
    # -inf logits make 0 * inf in branches that `where` then discards, and +inf
    # logits make the NaN the docs promise: neither is worth a warning.
    with errstate(xp, invalid="ignore"):
        loss = target.cross(shifted, s0)
        if z_loss:
            loss = loss + z_loss * lse**2
        # A +inf logit leaves the distribution undefined; say so with NaN, on that item only.
        loss = target.on_items(xp.where(xp.isposinf(s[..., 0]), xp.nan, loss))
    return loss, (shifted, s0, lse)


def _scale(xp, target, reduction, dtype):
    """The factor that turns the sum of item losses into the requested reduction."""
    if reduction in ("none", "sum"):
        return 1
    if reduction != "mean":
        return 1 / reduction
    # Nothing to average gives 0 with a zero gradient, where torch gives NaN.
    count = xp.asarray(target.count, dtype=dtype)
    return xp.where(count == 0, 0, 1 / xp.where(count == 0, 1, count))


def _reduce(xp, loss, scale, reduction):
    if reduction == "none":
        return loss
    return (xp.sum(loss) * scale).astype(loss.dtype)


def _write_gradient(xp, target, saved, scale, z_loss, grad):
    """Write ``scale * ((mass + 2 c LSE) softmax - q)`` into ``grad``, classes last.

    ``grad`` may share memory with the logits: only the saved shifted logits
    are read from here on.
    """
    shifted, s0, lse = saved
    coefficient = target.mass + 2 * z_loss * lse if z_loss else target.mass
    with errstate(xp, invalid="ignore"):  # NaN only in items with +inf or NaN logits
        xp.subtract(shifted, s0, out=grad)
        xp.exp(grad, out=grad)
        grad *= (scale * coefficient)[..., None]
        target.subtract_from(grad, scale)


def _loss_and_grad(func, logits, target, out, axis, options):
    xp, logits, z, q = _prepare(func, logits, target, axis, out=out, **options)
    grad_dtype = _checks.result_dtype(logits.dtype, xp)
    if out is None:
        out = xp.empty(logits.shape, dtype=grad_dtype)
    else:
        _checks.check_out(func, out, logits.shape, grad_dtype)
    reduction, z_loss = options["reduction"], options["z_loss"]
    item_losses, saved = _item_losses(xp, z, q, z_loss)
    scale = _scale(xp, q, reduction, z.dtype)
    grad = xp.moveaxis(out, axis, -1)
    if grad.dtype == z.dtype:
        _write_gradient(xp, q, saved, scale, z_loss, grad)
    else:  # half precision: computed in float32, stored in the input's dtype
        work = xp.empty(z.shape, dtype=z.dtype)
        _write_gradient(xp, q, saved, scale, z_loss, work)
        grad[...] = work
    return _reduce(xp, item_losses, scale, reduction), out


def cross_entropy(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    z_loss=0.0,
    reduction="mean",
):
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
        backends are mixed.

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
    batch that teaches nothing should not poison the parameters.

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
    xp, _, z, q = _prepare("cross_entropy", logits, target, axis, **options)
    item_losses, _ = _item_losses(xp, z, q, z_loss)
    return _reduce(xp, item_losses, _scale(xp, q, reduction, z.dtype), reduction)


def cross_entropy_grad(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    z_loss=0.0,
    reduction="mean",
):
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
    logits,
    target,
    *,
    out=None,
    axis=-1,
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    z_loss=0.0,
    reduction="mean",
):
    """Compute ``cross_entropy`` and ``cross_entropy_grad`` in one pass.

    The log-sum-exp of each item is computed once and serves both; the
    gradient can be written into a buffer the caller owns, including the
    logits themselves.

    Parameters
    ----------
    logits, target, axis, weight, ignore_index, label_smoothing, z_loss, reduction
        As for `cross_entropy`.
    out : array, optional
        Where to write the gradient: shape of ``logits`` and its dtype (float64
        for integer logits). ``out=logits`` overwrites the logits with their
        gradient, the training-loop idiom that needs no second logits-sized
        array.

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
        for a buffer that does not fit.

    See Also
    --------
    cross_entropy, cross_entropy_grad

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 0.0]])
    >>> labels = np.array([0, 2])
    >>> loss, grad = xentlib.cross_entropy_with_grad(logits, labels)
    >>> print(round(float(loss), 4), np.allclose(grad, xentlib.cross_entropy_grad(logits, labels)))
    1.6681 True
    >>> work = logits.copy()
    >>> _, g = xentlib.cross_entropy_with_grad(work, labels, out=work)
    >>> g is work
    True
    """
    options = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                   z_loss=z_loss, reduction=reduction)
    return _loss_and_grad("cross_entropy_with_grad", logits, target, out, axis, options)


def one_hot(labels, num_classes, dtype=None):
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
    labels = xp.asarray(labels)
    if labels.dtype.kind not in "iu":
        msg = f"one_hot: labels has dtype {labels.dtype}; expected integer class indices"
        raise TypeError(msg)
    _checks.check_num_classes("one_hot", num_classes)
    _checks.index_target("one_hot", "labels", labels, num_classes, None, None, xp)
    classes = xp.arange(num_classes)
    return (labels[..., None] == classes).astype(xp.float64 if dtype is None else dtype)
