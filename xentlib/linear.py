"""Cross-entropy of a linear layer, chunked over the classes: the logits are never built whole.

A language model ends with a classifier: each hidden state ``h`` (``D``
features) meets ``V`` rows of weights, one per token of the vocabulary. With
``V`` in the hundred thousands the logits ``hidden @ classifier.T`` are the
largest array of a training step, and the loss only needs three numbers per
item from them. Here they exist one chunk of classes at a time:

- the loss walks the chunks once, merging each chunk's (max, sum of
  exponentials) into a running pair per item, the online softmax of Milakov &
  Gimelshein, and picks up the label's logit in the chunk that holds it;
- the gradient walks them again, recomputes each chunk's logits, turns them
  into ``g``, the gradient with respect to those logits (the log-sum-exp of
  the first walk normalizes them), and accumulates ``grad_hidden += g @ W``
  and ``grad_classifier[chunk] = g.T @ hidden``.

The options mean what they mean in `xentlib.cross_entropy`: a class index
``y`` is read as the target distribution ``q = (1 - eps) w[y] e_y + (eps/C) w``
and each item's loss is ``sum_k q_k (LSE - z_k) + c LSE**2``.

A running log-sum-exp is kept as ``(m, r)``: ``m`` the max of the logits seen
so far and ``1 + r`` the sum of ``exp(z - m)`` (shifted by 0 where ``m`` is
not finite). The largest term is exactly 1, so carrying ``r`` and taking
``log1p(r)`` at the end keeps an almost certain item's tiny loss, as the dense
path does.
"""

from typing import Any

from . import _blocked, _checks
from ._lse import finite_shift, grad_coefficient, item_losses, merge_partials, split_top
from ._namespace import errstate, in_row_blocks, namespace_of
from ._targets import (
    ClassIndices,
    chunk_labels,
    dense_dot,
    index_cross,
    reduce_losses,
    reduction_divisor,
)
from ._typing import ArrayLike, FloatArray, Loss, Reduction

__all__ = ["linear_cross_entropy", "linear_cross_entropy_with_grad"]

# The default chunk (`_default_chunk_size`): a sliver of the vocabulary, so the
# (items x chunk) block a walk keeps stays near 3% of the logits it never builds, but
# never so thin that a chunk's matrix product has too little work to run at full speed.
_VOCABULARY_SLICES = 32
_MIN_CHUNK_BYTES = 16 * 2**20  # of N x D x chunk multiply-adds, counted in the dtype


def _default_chunk_size(items: int, features: int, classes: int, itemsize: int) -> int:
    """Classes per chunk when ``chunk_size`` is None: ``V / 32``, or more for thin products.

    ``max(V // 32, 16 MiB / (N D itemsize), 1)``, at most ``V``. The first
    term bounds the memory by a fixed share of the logits, whatever the
    vocabulary; the second gives each chunk's ``(N, D) @ (D, chunk)`` product
    at least 16 MiB worth of multiply-adds, so the per-chunk overhead stays
    small when there are few items or features.
    """
    thin = _MIN_CHUNK_BYTES // max(1, items * features * itemsize)
    return max(1, min(classes, max(classes // _VOCABULARY_SLICES, thin)))


class _Linear:
    """``hidden @ classifier.T + bias``, served one chunk of classes at a time."""

    def __init__(self, xp, hidden, classifier, bias, dtype, chunk_size):
        self.xp, self.dtype = xp, dtype
        self.hidden_shape = hidden.shape
        # The gradients come back in their inputs' dtypes (float64 for integers).
        self.grad_dtypes = [_checks.result_dtype(x.dtype, xp) if x is not None else None
                            for x in (hidden, classifier, bias)]
        self.hidden = hidden.reshape(-1, hidden.shape[-1]).astype(dtype, copy=False)
        self.classifier = classifier
        self.bias = None if bias is None else bias.astype(dtype, copy=False)
        items, classes = self.hidden.shape[0], classifier.shape[0]
        if chunk_size is None:
            chunk_size = _default_chunk_size(items, self.hidden.shape[1], classes, dtype.itemsize)
        self.chunk = min(chunk_size, classes)
        self._buffer = xp.empty(items * self.chunk, dtype=dtype)

    def chunks(self):
        """The ``(lo, hi)`` class range of every chunk, in order."""
        classes = self.classifier.shape[0]
        return ((lo, min(lo + self.chunk, classes)) for lo in range(0, classes, self.chunk))

    def rows(self, lo, hi):
        """The classifier's rows ``lo:hi`` in the working dtype (a copy of them only for half)."""
        return self.classifier[lo:hi].astype(self.dtype, copy=False)

    def logits(self, lo, hi):
        """The logits of classes ``lo:hi``, shape (N, hi - lo), in a buffer every chunk reuses."""
        z = self._buffer[: self.hidden.shape[0] * (hi - lo)].reshape(-1, hi - lo)
        self.xp.matmul(self.hidden, self.rows(lo, hi).T, out=z)
        if self.bias is not None:
            z += self.bias[lo:hi]
        return z


def _prepare(func, hidden, classifier, target, bias, chunk_size, options):
    """Validate everything; return the namespace, the chunked layer and the target."""
    xp = namespace_of(func, hidden=hidden, classifier=classifier, target=target, bias=bias,
                      weight=options["weight"])
    hidden = _checks.as_array(func, "hidden", hidden, xp)
    classifier = _checks.as_array(func, "classifier", classifier, xp)
    target = _checks.as_array(func, "target", target, xp)
    bias = None if bias is None else _checks.as_array(func, "bias", bias, xp)
    named = {"hidden": hidden, "classifier": classifier, "bias": bias}
    dtype = xp.result_type(*(
        _checks.work_dtype(func, name, x.dtype, xp) for name, x in named.items() if x is not None
    ))
    _checks.check_linear_shapes(func, hidden, classifier, bias)
    classes = classifier.shape[0]
    _checks.class_indices_only(func, target, hidden.shape[:-1], classes)
    label_smoothing, z_loss, reduction = _checks.options(
        func, "index", options["ignore_index"], options["label_smoothing"], options["z_loss"],
        options["reduction"])
    _checks.check_chunk_size(func, chunk_size)
    weight = options["weight"]
    if weight is not None:
        weight = _checks.weight_vector(func, weight, classes, dtype, xp)
    _checks.index_target(func, "target", target, classes, None, options["ignore_index"], xp)
    labels = ClassIndices(xp, target, weight, classes, options["ignore_index"], label_smoothing,
                          dtype)
    linear = _Linear(xp, hidden, classifier, bias, dtype, chunk_size)
    return xp, linear, labels, target.shape, z_loss, reduction


def _pick(xp, target, z, lo, picked, items):
    """``picked``, with the logit of each of the ``items`` whose label is in the chunk ``z``.

    ``z`` holds the ``items`` (a slice) and the classes from ``lo``.
    """
    owned, index = chunk_labels(xp, target.labels[items], lo, z.shape[-1])
    return xp.where(owned, xp.take_along_axis(z, index[:, None], axis=-1)[:, 0], picked)


def _subtract_target(xp, g, target, lo, divisor, items):
    """Subtract ``q / divisor`` from the gradient rows ``g`` of a chunk, in place.

    ``g`` holds the ``items`` (a slice) and the classes ``lo, lo + 1, ...``.
    """
    owned, index = chunk_labels(xp, target.labels[items], lo, g.shape[-1])
    index = index[:, None]
    hit = xp.where(owned, target.hit[items] / divisor, 0)
    label_grad = xp.take_along_axis(g, index, axis=-1)[:, 0] - hit
    xp.put_along_axis(g, index, label_grad[:, None], axis=-1)
    if target.spread is not None:
        g -= target.spread_of(lo, lo + g.shape[-1]) / divisor
    if target.valid is not None:
        g[~target.valid[items]] = 0  # ignored items, even where a NaN logit left 0 * NaN


def _chunk_gradient(xp, g, target, lo, saved, divisor, items):
    """Turn logits ``g`` of a chunk into their gradient, ``coefficient e^(z - t - s0) - q``.

    In place; ``g`` holds the ``items`` (a slice) and the classes from ``lo``,
    and ``q`` is divided by ``divisor``.
    """
    t, s0, coefficient, dead, undefined = saved
    g -= t[items, None]
    g -= s0[items, None]
    xp.exp(g, out=g)
    g *= coefficient[items, None]
    g[undefined[items]] = xp.nan
    _subtract_target(xp, g, target, lo, divisor, items)
    g[dead[items]] = 0


def _chunk_partial(xp, z, m):
    """The ``(m, r)`` of one chunk whose logits ``z`` are already shifted by its own max ``m``.

    ``z`` is overwritten with its exponentials; the largest is taken out of the
    sum, so ``r`` keeps what lies below 1 exactly.
    """
    xp.exp(z, out=z)
    top_term, others = split_top(z, xp.argmax(z, axis=-1), xp)
    return m, (top_term - 1) + others


def _row_blocks(xp, linear):
    """Slices of the items, each a block of a chunk that stays in a core's cache.

    The elementwise work on each chunk goes block by block on xentlib's
    threads, as the dense pass does, while the BLAS runs the products on
    threads of its own. CuPy takes every item at once.
    """
    items = linear.hidden.shape[0]
    rows = (_blocked.rows_per_block(linear.chunk * linear.dtype.itemsize) if in_row_blocks(xp)
            else items)
    return [slice(start, start + rows) for start in range(0, items, rows)]


def _quiet(xp):
    """One thread's error state, for the overflows and NaNs that are the documented result.

    Logits spanning more than the float range overflow a shift to inf, and
    +inf or NaN logits leave NaN in their own items only.
    """
    return errstate(xp, invalid="ignore", over="ignore")


def _forward(xp, linear, target):
    """One walk over the chunks: each item's shift, rest, shifted label logit and spread term."""
    items, dtype = linear.hidden.shape[0], linear.dtype
    m = xp.full(items, -xp.inf, dtype=dtype)
    rest = xp.full(items, -1, dtype=dtype)
    label_logit = xp.zeros(items, dtype=dtype)
    spread = target.spread
    spread_shifted: Any = None if spread is None else xp.zeros(items, dtype=dtype)
    spread_seen = 0
    blocks = _row_blocks(xp, linear)
    with _quiet(xp):
        for lo, hi in linear.chunks():
            z = linear.logits(lo, hi)
            s = None if spread is None else target.spread_of(lo, hi)
            total: Any = None if s is None else xp.sum(s)

            def work(block, _, z=z, lo=lo, s=s, total=total, seen=spread_seen):
                """Merge one row block of the chunk into the items' running statistics."""
                zb = z[block]
                label_logit[block] = _pick(xp, target, zb, lo, label_logit[block], block)
                m_chunk = xp.max(zb, axis=-1)
                t_chunk = finite_shift(m_chunk, xp)
                zb -= t_chunk[:, None]
                if s is not None:
                    chunk_term = xp.empty(len(zb), dtype=dtype)
                    dense_dot(xp, s, zb, chunk_term)
                    t_old = finite_shift(m[block], xp)
                m_new, rest[block] = merge_partials(xp, (m[block], rest[block]),
                                                    _chunk_partial(xp, zb, m_chunk))
                if s is not None:
                    # Both parts' spread terms move to the new shift, as their sums move to the
                    # new max.
                    t_new = finite_shift(m_new, xp)
                    spread_shifted[block] += (seen * (t_old - t_new) + chunk_term
                                              + total * (t_chunk - t_new))
                m[block] = m_new

            _blocked.for_each_block(blocks, work, lambda: None, lambda: _quiet(xp))
            if s is not None:
                spread_seen = spread_seen + total
    t = finite_shift(m, xp)
    return t, rest, label_logit - t, spread_shifted


def _backward(xp, linear, target, saved, divisor, grads):
    """The second walk: each chunk's gradient ``g`` of the logits, pushed through the layer.

    A fully masked item's row is 0; an item with a +inf or NaN logit is NaN throughout.
    """
    t, s0, coefficient, dead = saved
    per_item = (t, s0, coefficient, dead, ~xp.isfinite(s0))
    grad_hidden, grad_classifier, grad_bias = grads
    blocks = _row_blocks(xp, linear)

    # Row blocks of the product g @ W[chunk] half the size of a chunk of logits: the walk's
    # extra memory stays within 1.5 chunks. Much thinner blocks starve the BLAS: 512 rows
    # of a (4096, 1024) @ (1024, 1024) product took 2.6 times as long as 2048 rows.
    step = max(1, len(t) * linear.chunk // (2 * grad_hidden.shape[1]))
    with _quiet(xp):
        for lo, hi in linear.chunks():
            g = linear.logits(lo, hi)

            def work(block, _, g=g, lo=lo):
                """The gradient of one row block of the chunk."""
                _chunk_gradient(xp, g[block], target, lo, per_item, divisor, block)

            _blocked.for_each_block(blocks, work, lambda: None, lambda: _quiet(xp))
            rows = linear.rows(lo, hi)
            # A row block at a time: the whole (N, D) product would be a temporary as
            # large as hidden, which NumPy cannot add into grad_hidden in place.
            for start in range(0, len(g), step):
                grad_hidden[start : start + step] += g[start : start + step] @ rows
            if grad_classifier.dtype == linear.dtype:
                xp.matmul(g.T, linear.hidden, out=grad_classifier[lo:hi])
            else:
                grad_classifier[lo:hi] = g.T @ linear.hidden
            if grad_bias is not None:
                grad_bias[lo:hi] = xp.sum(g, axis=0)


def _losses(func, hidden, classifier, target, bias, chunk_size, options):
    """Validate, walk once; return the reduced loss and what the gradient walk needs."""
    xp, linear, labels, batch_shape, z_loss, reduction = _prepare(
        func, hidden, classifier, target, bias, chunk_size, options)
    t, rest, label_shifted, spread_shifted = _forward(xp, linear, labels)

    def cross(s0):
        """The target's part of each item's loss."""
        return index_cross(xp, labels.hit, label_shifted, labels.spread_mass, spread_shifted, s0)

    with errstate(xp, invalid="ignore", divide="ignore"):
        loss, s0, lse = item_losses(xp, t, rest, cross, z_loss)
    divisor = reduction_divisor(xp, labels.count, reduction, linear.dtype)
    loss = reduce_losses(labels.on_items(loss).reshape(batch_shape), divisor, reduction)
    coefficient = grad_coefficient(labels.mass, lse, z_loss, divisor)
    dead = rest == -1  # every logit -inf: not even the max's term 1 is there
    return loss, (xp, linear, labels, (t, s0, coefficient, dead), divisor)


def linear_cross_entropy(
    hidden: ArrayLike,
    classifier: ArrayLike,
    target: ArrayLike,
    /,
    *,
    bias: ArrayLike | None = None,
    chunk_size: int | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: Reduction = "mean",
) -> Loss:
    """Compute the cross-entropy of a linear layer's logits without ever holding them all.

    Equal to ``cross_entropy(hidden @ classifier.T + bias, target)``, computed
    one chunk of classes at a time: each chunk's (max, sum of exponentials)
    per item is merged into a running pair, the online softmax, so the extra
    memory is one (items x chunk) block instead of the (items x classes) logits.

    Parameters
    ----------
    hidden : array_like, shape (N, D) or (..., D)
        The features of each item (a language model's last hidden states).
        float16 and bfloat16 are computed in float32, integers in float64.
    classifier : array_like, shape (V, D)
        One row of weights per class, as ``torch.nn.Linear(D, V).weight``.
        Never copied; half precision is converted one chunk at a time.
    target : array_like of int, shape (N,) or ``hidden.shape[:-1]``
        Class indices in ``[0, V)`` or ``ignore_index``. Probability targets
        are refused: they would be as large as the logits this avoids.
    bias : array_like, shape (V,), optional
        Added to every item's logits.
    chunk_size : int, optional
        Classes per chunk. By default ``max(V // 32, 16 MiB / (N D itemsize))``,
        at most ``V``: the extra memory stays near 1/32 of the logits, and
        every chunk's matrix product has enough work to run at full speed.
    weight, ignore_index, label_smoothing, z_loss, reduction
        As for `xentlib.cross_entropy` with class-index targets (smoothing
        spreads ``eps`` over all ``V`` classes).

    Returns
    -------
    loss : array
        0-d for 'mean', 'sum' or a number; ``target``'s shape for 'none'.
        float32 for half-precision input, float64 for integers, otherwise
        the dtype of ``hidden @ classifier.T``.

    Raises
    ------
    ValueError
        "classifier has shape ...", "bias has shape ..." for shapes that do
        not fit ``hidden``; "target[i] = v is outside [0, V)"; "chunk_size =
        ..."; and the option errors of `xentlib.cross_entropy`.
    TypeError
        "target has shape (N, V), probabilities ..." for probability
        targets; "target has dtype float..."; mixed NumPy and CuPy arrays.

    See Also
    --------
    linear_cross_entropy_with_grad : the loss and the gradients of the layer.
    xentlib.cross_entropy : the same loss of logits you already hold.
    xentlib.sharded.cross_entropy : logits split over the classes in Dask chunks.

    Notes
    -----
    After the chunks ``1..j``, item ``i`` holds the max ``m`` and the sum
    ``d`` of ``exp(z - m)`` of its logits so far; chunk ``j + 1`` with its own
    ``(m', d')`` updates them to

    .. math::

        m \\leftarrow \\max(m, m'), \\qquad
        d \\leftarrow d\\, e^{m_{\\text{old}} - m} + d'\\, e^{m' - m},

    and in the end :math:`\\operatorname{LSE} = m + \\log d`. With the target
    distribution ``q`` of `xentlib.cross_entropy` the loss of an item is
    :math:`\\sum_k q_k (\\operatorname{LSE} - z_k) + c \\operatorname{LSE}^2`:
    the label's logit is picked up in the chunk that holds it and the
    smoothing term is accumulated chunk by chunk. Conventions (nothing to
    average gives 0.0; -inf in ``bias`` masks a class) are those of
    `xentlib.cross_entropy`.

    References
    ----------
    .. [1] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", 2018. https://arxiv.org/abs/1805.02867
    .. [2] E. Wijmans et al., "Cut your losses in large-vocabulary language
       models", ICLR 2025. https://arxiv.org/abs/2411.09009

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> rng = np.random.default_rng(0)
    >>> hidden = rng.normal(size=(4, 8))           # 4 tokens, 8 features
    >>> classifier = rng.normal(size=(10, 8))      # 10 classes
    >>> labels = np.array([3, 0, 9, 3])
    >>> loss = xentlib.linear_cross_entropy(hidden, classifier, labels,
    ...                                     chunk_size=3)
    >>> dense = xentlib.cross_entropy(hidden @ classifier.T, labels)
    >>> print(round(float(loss), 4), round(float(dense), 4))
    4.541 4.541
    """
    options = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                   z_loss=z_loss, reduction=reduction)
    return _losses("linear_cross_entropy", hidden, classifier, target, bias, chunk_size, options)[0]


def linear_cross_entropy_with_grad(
    hidden: ArrayLike,
    classifier: ArrayLike,
    target: ArrayLike,
    /,
    *,
    bias: ArrayLike | None = None,
    chunk_size: int | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: Reduction = "mean",
) -> tuple[Loss, FloatArray, FloatArray] | tuple[Loss, FloatArray, FloatArray, FloatArray]:
    """Compute `linear_cross_entropy` and its gradients with respect to the layer.

    A first walk over the chunks of classes gives each item's log-sum-exp; a
    second recomputes each chunk's logits, turns them into the gradient ``g``
    of the loss with respect to them, and pushes it through the layer:
    ``grad_hidden += g @ classifier[chunk]``, ``grad_classifier[chunk] = g.T @ hidden``.

    Parameters
    ----------
    hidden, classifier, target, bias, chunk_size
        As for `linear_cross_entropy`.
    weight, ignore_index, label_smoothing, z_loss, reduction
        As for `linear_cross_entropy`.

    Returns
    -------
    loss : array
        As `linear_cross_entropy` returns it.
    grad_hidden : array
        Shape and dtype of ``hidden`` (float64 for integers). With
        ``reduction='none'`` row ``i`` is item ``i``'s own gradient.
    grad_classifier : array
        Shape and dtype of ``classifier``; the gradient of the sum of the
        items' losses with ``reduction='none'``.
    grad_bias : array
        Shape and dtype of ``bias``; only when a bias is given.

    Raises
    ------
    ValueError, TypeError
        As for `linear_cross_entropy`, naming this function.

    See Also
    --------
    linear_cross_entropy : the loss alone, in one walk.
    xentlib.cross_entropy_grad : the gradient with respect to logits you hold.

    Notes
    -----
    With ``p`` the softmax of an item's logits and ``q`` its target
    distribution, the gradient with respect to its logits is
    :math:`g = (\\sum_k q_k + 2 c \\operatorname{LSE}) p - q`, scaled by the
    reduction; chunk by chunk, ``p = exp(z - LSE)`` needs only the LSE of the
    first walk. Besides the returned gradients the extra memory is about two
    (items x chunk) blocks: the classifier and hidden states are read, never
    copied (half precision is converted a chunk at a time, hidden once).

    References
    ----------
    .. [1] E. Wijmans et al., "Cut your losses in large-vocabulary language
       models", ICLR 2025. https://arxiv.org/abs/2411.09009

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> rng = np.random.default_rng(0)
    >>> hidden, classifier = rng.normal(size=(4, 8)), rng.normal(size=(10, 8))
    >>> labels = np.array([3, 0, 9, 3])
    >>> loss, grad_hidden, grad_classifier = (
    ...     xentlib.linear_cross_entropy_with_grad(hidden, classifier, labels,
    ...                                            chunk_size=3))
    >>> g = xentlib.cross_entropy_grad(hidden @ classifier.T, labels)
    >>> print(np.allclose(grad_hidden, g @ classifier),
    ...       np.allclose(grad_classifier, g.T @ hidden))
    True True
    """
    options = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                   z_loss=z_loss, reduction=reduction)
    loss, (xp, linear, labels, saved, divisor) = _losses(
        "linear_cross_entropy_with_grad", hidden, classifier, target, bias, chunk_size, options)
    hidden_dtype, classifier_dtype, bias_dtype = linear.grad_dtypes
    grad_hidden = xp.zeros(linear.hidden.shape, dtype=linear.dtype)
    grad_classifier = xp.empty(linear.classifier.shape, dtype=classifier_dtype)
    grad_bias = None
    if bias_dtype is not None:
        grad_bias = xp.empty(linear.classifier.shape[0], dtype=bias_dtype)
    _backward(xp, linear, labels, saved, divisor, (grad_hidden, grad_classifier, grad_bias))
    grad_hidden = grad_hidden.reshape(linear.hidden_shape).astype(hidden_dtype, copy=False)
    if grad_bias is None:
        return loss, grad_hidden, grad_classifier
    return loss, grad_hidden, grad_classifier, grad_bias
