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

from . import _checks
from ._namespace import errstate, namespace_of
from .loss import reduce_losses, reduction_scale

__all__ = ["linear_cross_entropy", "linear_cross_entropy_with_grad"]

# The (items x classes) block that one chunk works on: a few MiB is enough for
# the matrix products to run at full speed, and the peak extra memory is a
# small multiple of it whatever the vocabulary.
_BLOCK_BYTES = 2 * 2**20


def finite_shift(m, xp):
    """``m`` where finite, else 0: the shift that keeps -inf logits at -inf (not NaN)."""
    return xp.where(xp.isfinite(m), m, 0)


def merge_partials(xp, first, second):
    """Combine the ``(m, r)`` statistics of two disjoint sets of classes into those of their union.

    The part with the larger max keeps its exact 1; the other's sum ``1 + r``
    is scaled by ``exp(-|m1 - m2|) <= 1``, so nothing overflows, and the
    result does not depend on the order the parts come in.
    """
    (m1, r1), (m2, r2) = first, second
    factor = xp.exp(-xp.abs(finite_shift(m1, xp) - finite_shift(m2, xp)))
    rest = xp.where(m1 >= m2, r1 + (1 + r2) * factor, r2 + (1 + r1) * factor)
    return xp.maximum(m1, m2), rest


class ClassIndices:
    """Class-index targets as ``q = (1 - eps) w[y] e_y + (eps / C) w``; ignored items carry no mass.

    ``q`` itself is never built: ``hit`` is each item's mass on its label,
    ``spread`` the smoothing's mass per class (None without smoothing).
    """

    def __init__(self, xp, labels, weight, ignore_index, label_smoothing):
        self.xp = xp
        self.valid = None if ignore_index is None else labels != ignore_index
        # An ignored item points at class 0 so that gathering stays in bounds; its mass is 0.
        self.labels = labels if self.valid is None else xp.where(self.valid, labels, 0)
        label_weight = self.on_items(weight[self.labels])
        self.count = xp.sum(label_weight)
        self.hit = (1 - label_smoothing) * label_weight
        self.spread, self.spread_total, self.mass = None, 0, self.hit
        if label_smoothing > 0:
            self.spread = (label_smoothing / weight.shape[0]) * weight
            self.spread_total = xp.sum(self.spread)
            self.mass = self.hit + self.on_items(self.spread_total)

    def on_items(self, values):
        """``values`` per item, with ignored items set to 0."""
        return values if self.valid is None else self.xp.where(self.valid, values, 0)

    def _in_chunk(self, lo, width):
        local = self.labels - lo
        owned = (local >= 0) & (local < width)
        return owned, self.xp.clip(local, 0, width - 1)[:, None]

    def pick(self, z, lo, picked):
        """``picked``, with the logit of each item whose label is in ``z``, the chunk from class ``lo``."""
        xp = self.xp
        owned, index = self._in_chunk(lo, z.shape[-1])
        return xp.where(owned, xp.take_along_axis(z, index, axis=-1)[:, 0], picked)

    def subtract_from(self, g, lo, scale):
        """Subtract ``scale * q`` for the classes ``lo, lo + 1, ...`` of the chunk ``g``, in place."""
        xp = self.xp
        owned, index = self._in_chunk(lo, g.shape[-1])
        label_grad = xp.take_along_axis(g, index, axis=-1)[:, 0] - xp.where(owned, scale * self.hit, 0)
        xp.put_along_axis(g, index, label_grad[:, None], axis=-1)
        if self.spread is not None:
            g -= scale * self.spread[lo : lo + g.shape[-1]]
        if self.valid is not None:
            g[~self.valid] = 0  # ignored items, even where a NaN logit left 0 * NaN


def item_losses(xp, statistics, hit, spread_total, valid, z_loss):
    """Each item's loss from its statistics, with what the gradient reuses.

    ``statistics`` are ``(t, rest, label_shifted, spread_shifted)``: the shift
    ``t``, ``1 + rest`` the sum of ``exp(z - t)``, ``label_shifted = z[y] - t``
    and ``spread_shifted = sum_k spread_k (z_k - t)`` (None without
    smoothing). ``hit``, ``spread_total`` and ``valid`` are those of
    `ClassIndices`. Returns the losses, ``s0 = log(1 + rest)`` with -inf made 0
    (a fully masked item) and the log-sum-exp.
    """
    t, rest, label_shifted, spread_shifted = statistics
    with errstate(xp, divide="ignore", invalid="ignore"):
        s = xp.log1p(rest)
        s0 = xp.where(xp.isneginf(s), 0, s)
        loss = xp.where(hit == 0, 0, hit * (s0 - label_shifted))
        if spread_shifted is not None:
            loss = loss + (spread_total * s0 - spread_shifted)
        lse = t + s
        if z_loss:
            loss = loss + z_loss * lse**2
        # A +inf logit leaves the distribution undefined; say so with NaN, on that item only.
        loss = xp.where(xp.isposinf(s), xp.nan, loss)
        if valid is not None:
            loss = xp.where(valid, loss, 0)
    return loss, s0, lse


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
            chunk_size = max(1, _BLOCK_BYTES // (max(items, 1) * dtype.itemsize))
        self.chunk = min(chunk_size, classes)
        self._buffer = xp.empty(items * self.chunk, dtype=dtype)

    def chunks(self):
        classes = self.classifier.shape[0]
        return ((lo, min(lo + self.chunk, classes)) for lo in range(0, classes, self.chunk))

    def rows(self, lo, hi):
        """The classifier's rows ``lo:hi`` in the working dtype (a copy of that chunk only for half)."""
        return self.classifier[lo:hi].astype(self.dtype, copy=False)

    def logits(self, lo, hi):
        """The logits of classes ``lo:hi``, shape (N, hi - lo), in a buffer reused by every chunk."""
        z = self._buffer[: self.hidden.shape[0] * (hi - lo)].reshape(-1, hi - lo)
        self.xp.matmul(self.hidden, self.rows(lo, hi).T, out=z)
        if self.bias is not None:
            z += self.bias[lo:hi]
        return z


def _prepare(func, hidden, classifier, target, bias, chunk_size, options):
    """Validate everything; return the namespace, the chunked layer and the target."""
    xp = namespace_of(func, hidden=hidden, classifier=classifier, target=target, bias=bias,
                      weight=options["weight"])
    hidden, classifier, target = xp.asarray(hidden), xp.asarray(classifier), xp.asarray(target)
    bias = None if bias is None else xp.asarray(bias)
    named = {"hidden": hidden, "classifier": classifier, "bias": bias}
    dtype = xp.result_type(*(
        _checks.work_dtype(func, name, x.dtype, xp) for name, x in named.items() if x is not None
    ))
    _checks.check_linear_shapes(func, hidden, classifier, bias)
    classes = classifier.shape[0]
    _checks.class_indices_only(func, target, hidden.shape[:-1], classes)
    _checks.check_ignore_index(func, options["ignore_index"], "index")
    _checks.check_label_smoothing(func, options["label_smoothing"])
    _checks.check_z_loss(func, options["z_loss"])
    _checks.check_reduction(func, options["reduction"])
    _checks.check_chunk_size(func, chunk_size)
    weight = options["weight"]
    if weight is None:
        weight = xp.ones(classes, dtype=dtype)
    else:
        weight = _checks.weight_vector(func, weight, classes, dtype, xp)
    _checks.index_target(func, "target", target, classes, None, options["ignore_index"], xp)
    labels = ClassIndices(xp, target.reshape(-1), weight, options["ignore_index"],
                          options["label_smoothing"])
    return xp, _Linear(xp, hidden, classifier, bias, dtype, chunk_size), labels, target.shape


def _chunk_partial(xp, z, m):
    """The ``(m, r)`` of one chunk whose logits ``z`` are already shifted by its own max ``m``.

    ``z`` is overwritten with its exponentials; the largest is taken out of the
    sum, so ``r`` keeps what lies below 1 exactly.
    """
    xp.exp(z, out=z)
    top = xp.argmax(z, axis=-1)[:, None]
    top_term = xp.take_along_axis(z, top, axis=-1)[:, 0]
    xp.put_along_axis(z, top, 0, axis=-1)
    return m, (top_term - 1) + xp.sum(z, axis=-1)


def _forward(xp, linear, target):
    """One walk over the chunks: each item's shift, rest, shifted label logit and spread term."""
    items, dtype = linear.hidden.shape[0], linear.dtype
    m = xp.full(items, -xp.inf, dtype=dtype)
    rest = xp.full(items, -1, dtype=dtype)
    label_logit = xp.zeros(items, dtype=dtype)
    spread = target.spread
    spread_shifted, spread_seen = (None, 0) if spread is None else (xp.zeros(items, dtype=dtype), 0)
    # Spread terms skip classes of zero mass, whose logit may be -inf (0 * -inf is not 0).
    skip_zeros = spread is not None and bool(xp.any(spread == 0))
    with errstate(xp, invalid="ignore", over="ignore"):
        for lo, hi in linear.chunks():
            z = linear.logits(lo, hi)
            label_logit = target.pick(z, lo, label_logit)
            m_chunk = xp.max(z, axis=-1)
            t_chunk = finite_shift(m_chunk, xp)
            z -= t_chunk[:, None]
            if spread is not None:
                s = spread[lo:hi]
                chunk_term = xp.sum(xp.where(s == 0, 0, s * z), axis=-1) if skip_zeros else z @ s
                t_old = finite_shift(m, xp)
            m_new, rest = merge_partials(xp, (m, rest), _chunk_partial(xp, z, m_chunk))
            if spread is not None:
                # Both parts' spread terms move to the new shift, as their sums move to the new max.
                t_new, chunk_total = finite_shift(m_new, xp), xp.sum(s)
                spread_shifted = (spread_shifted + spread_seen * (t_old - t_new)
                                  + chunk_term + chunk_total * (t_chunk - t_new))
                spread_seen = spread_seen + chunk_total
            m = m_new
    t = finite_shift(m, xp)
    return t, rest, label_logit - t, spread_shifted


def _backward(xp, linear, target, saved, scale, coefficient, grads):
    """The second walk: each chunk's gradient ``g`` of the logits, pushed through the layer."""
    t, s0 = saved
    grad_hidden, grad_classifier, grad_bias = grads
    with errstate(xp, invalid="ignore", over="ignore"):  # NaN only in items with +inf or NaN logits
        for lo, hi in linear.chunks():
            g = linear.logits(lo, hi)
            g -= t[:, None]
            g -= s0[:, None]
            xp.exp(g, out=g)
            g *= coefficient[:, None]
            target.subtract_from(g, lo, scale)
            grad_hidden += g @ linear.rows(lo, hi)
            if grad_classifier.dtype == linear.dtype:
                xp.matmul(g.T, linear.hidden, out=grad_classifier[lo:hi])
            else:
                grad_classifier[lo:hi] = g.T @ linear.hidden
            if grad_bias is not None:
                grad_bias[lo:hi] = xp.sum(g, axis=0)


def _losses(func, hidden, classifier, target, bias, chunk_size, options):
    """Validate, walk once; return what the gradient walk needs and the reduced loss."""
    xp, linear, labels, batch_shape = _prepare(func, hidden, classifier, target, bias, chunk_size,
                                               options)
    statistics = _forward(xp, linear, labels)
    loss, s0, lse = item_losses(xp, statistics, labels.hit, labels.spread_total, labels.valid,
                                options["z_loss"])
    reduction = options["reduction"]
    scale = reduction_scale(xp, labels.count, reduction, linear.dtype)
    loss = reduce_losses(xp, loss.reshape(batch_shape), scale, reduction)
    return loss, (xp, linear, labels, (statistics[0], s0, lse), scale)


def linear_cross_entropy(
    hidden,
    classifier,
    target,
    /,
    *,
    bias=None,
    chunk_size=None,
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    z_loss=0.0,
    reduction="mean",
):
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
        Classes per chunk. By default as many as fit a block of about 2 MiB
        of logits (at least one), so the memory stays flat as ``V`` grows.
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
    hidden,
    classifier,
    target,
    /,
    *,
    bias=None,
    chunk_size=None,
    weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    z_loss=0.0,
    reduction="mean",
):
    """Compute `linear_cross_entropy` and its gradients with respect to the layer.

    A first walk over the chunks of classes gives each item's log-sum-exp; a
    second recomputes each chunk's logits, turns them into the gradient ``g``
    of the loss with respect to them, and pushes it through the layer:
    ``grad_hidden += g @ classifier[chunk]``, ``grad_classifier[chunk] = g.T @ hidden``.

    Parameters
    ----------
    hidden, classifier, target, bias, chunk_size, weight, ignore_index, label_smoothing, z_loss, reduction
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
    loss, (xp, linear, labels, saved, scale) = _losses(
        "linear_cross_entropy_with_grad", hidden, classifier, target, bias, chunk_size, options)
    t, s0, lse = saved
    z_loss = options["z_loss"]
    coefficient = scale * (labels.mass + 2 * z_loss * lse if z_loss else labels.mass)
    hidden_dtype, classifier_dtype, bias_dtype = linear.grad_dtypes
    grad_hidden = xp.zeros(linear.hidden.shape, dtype=linear.dtype)
    grad_classifier = xp.empty(linear.classifier.shape, dtype=classifier_dtype)
    grad_bias = None if bias_dtype is None else xp.empty(linear.classifier.shape[0], dtype=bias_dtype)
    _backward(xp, linear, labels, (t, s0), scale, coefficient, (grad_hidden, grad_classifier, grad_bias))
    grad_hidden = grad_hidden.reshape(linear.hidden_shape).astype(hidden_dtype, copy=False)
    if grad_bias is None:
        return loss, grad_hidden, grad_classifier
    return loss, grad_hidden, grad_classifier, grad_bias
