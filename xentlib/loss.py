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

One pass over the logits (`_Pass`) serves every function and every backend.
It costs one ``exp`` per logit and a few cheap sweeps (argmax, subtract, sum,
and for the gradient one multiply), the exponentials going straight into the
gradient buffer, which may be the logits themselves. NumPy runs it on row
blocks that stay in cache, on a few threads (`xentlib._blocked`); CuPy runs it
once on the whole array (`_namespace.in_row_blocks` decides).
"""

import functools
import math

from . import _blocked, _checks
from ._namespace import errstate, in_row_blocks, namespace_of

__all__ = ["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad", "one_hot"]


def _dense_dot(xp, q, shifted, out):
    """Write ``sum_k q_k shifted_k`` of each row into ``out``, a ``q_k = 0`` term counting 0.

    ``q`` is one number (unweighted label smoothing), one vector for every row
    (weighted smoothing) or a row per row (probabilities). The fast sums make
    ``0 * -inf = NaN`` where a class with no target mass is masked; only the
    rows they made NaN are summed again term by term. (einsum, not BLAS: BLAS
    would start threads of its own inside xentlib's.)
    """
    per_row = getattr(q, "ndim", 0) == 2
    if per_row:
        out[...] = xp.einsum("ij,ij->i", q, shifted)
    elif getattr(q, "ndim", 0) == 1:
        out[...] = xp.einsum("ij,j->i", shifted, q)
    else:
        out[...] = q * xp.einsum("ij->i", shifted)
    bad = xp.isnan(out)
    if bool(bad.any()):
        q_bad = q[bad] if per_row else q
        out[bad] = xp.sum(xp.where(q_bad == 0, 0, q_bad * shifted[bad]), axis=-1)


def _cross_from_sums(xp, mass, s0, dot):
    """``sum_k q_k (s0 - shifted_k)`` from ``sum_k q_k`` and ``sum_k q_k shifted_k``.

    Both terms are >= 0, so nothing cancels; an item with no mass costs exactly 0.
    """
    return xp.where(mass == 0, 0, mass * s0 - dot)


class _ClassIndices:
    """Targets given as class indices; items equal to ``ignore_index`` carry no mass.

    Per-item arrays are flat, one entry per item of the batch in C order.
    """

    def __init__(self, xp, labels, weight, num_classes, ignore_index, label_smoothing, dtype):
        self.xp = xp
        labels = labels.reshape(-1)
        self.valid = None if ignore_index is None else labels != ignore_index
        self.ignored = None if self.valid is None else ~self.valid
        # An ignored item points at class 0 so that gathering stays in bounds; its mass is 0.
        self.labels = labels if self.valid is None else xp.where(self.valid, labels, 0)
        label_weight = xp.ones(labels.shape, dtype=dtype) if weight is None else weight[self.labels]
        label_weight = self.on_items(label_weight)
        self.count = xp.sum(label_weight)
        self.hit = (1 - label_smoothing) * label_weight
        self.spread = None
        self.mass = self.hit
        if label_smoothing > 0:
            # Each class's share: one number for unweighted classes, else a vector.
            self.spread = label_smoothing / num_classes
            self.spread_mass = xp.asarray(label_smoothing, dtype=dtype)
            if weight is not None:
                self.spread = self.spread * weight
                self.spread_mass = xp.sum(self.spread)
            self.mass = self.hit + self.on_items(self.spread_mass)

    def on_items(self, values):
        """``values`` per item, with ignored items set to 0."""
        if self.valid is None:
            return values
        return self.xp.where(self.valid, values, 0)

    def after_pass(self):
        """Class indices were checked in full before the pass."""

    def scale_by(self, scale):
        """Before a pass that writes the gradient: the reduction's factor, applied once per item."""
        self.scaled_mass, self.scaled_hit = scale * self.mass, scale * self.hit
        self.scaled_spread = None if self.spread is None else scale * self.spread

    # The pass calls the next four on each block: `rows` slices its items, `r` numbers its rows.

    def load(self, stats, z, m, rows, r, probabilities, scratch):
        """Gather each label's shifted logit (before the block may be overwritten); return q's dense part."""
        self.xp.subtract(z[r, self.labels[rows]], m, out=stats.label[rows])
        return self.spread

    def dense(self, stats, shifted, q, rows):
        if q is not None:
            _dense_dot(self.xp, q, shifted, stats.dense[rows])

    def scaled_mass_of(self, stats, rows):
        return self.scaled_mass[rows]

    def subtract_from(self, grad, q, rows, r, scratch):
        """Subtract ``scale * q`` from one block of the gradient; ignored rows become exactly 0."""
        grad[r, self.labels[rows]] -= self.scaled_hit[rows]
        if q is not None:
            grad -= self.scaled_spread
        if self.ignored is not None:
            grad[self.ignored[rows]] = 0  # even where a NaN logit left 0 * NaN

    def cross(self, stats, s0):
        xp = self.xp
        loss = xp.where(self.hit == 0, 0, self.hit * (s0 - stats.label))
        if self.spread is not None:
            loss = loss + _cross_from_sums(xp, self.spread_mass, s0, stats.dense)
        return loss


class _Probabilities:
    """Targets given as a probability (or any non-negative mass) per class, classes last.

    ``q`` is made one block at a time, so no logits-sized array is ever built.
    ``check``, when given, is the validation of the targets still owed: each
    block is inspected on the way (a min-reduction of data the pass reads
    anyway), and ``check`` raises after the pass if one looked wrong.
    """

    def __init__(self, xp, target, weight, label_smoothing, check=None):
        self.xp = xp
        self.t = target
        self.check = check
        self.suspect = False
        self.count = math.prod(target.shape[:-1])
        # q = a t + b, with a and b scalars or one entry per class; a is None for q = t.
        self.a = self.b = None
        if label_smoothing > 0:
            self.a = 1 - label_smoothing if weight is None else (1 - label_smoothing) * weight
            self.b = label_smoothing / target.shape[-1]
            self.b = self.b if weight is None else self.b * weight
        elif weight is not None:
            self.a = weight

    def on_items(self, values):
        return values

    def inspect(self, part):
        if self.check is not None and not bool(part.min() >= 0):  # NaN fails too
            self.suspect = True

    def after_pass(self):
        if self.suspect:
            self.check()  # raises, naming the first offender

    def load(self, stats, z, m, rows, r, probabilities, scratch):
        if self.a is None:
            return probabilities
        q = scratch.get("q", probabilities.shape)
        self.xp.multiply(probabilities, self.a, out=q)
        if self.b is not None:
            q += self.b
        return q

    def dense(self, stats, shifted, q, rows):
        stats.mass[rows] = self.xp.einsum("ij->i", q)
        _dense_dot(self.xp, q, shifted, stats.dense[rows])

    def scale_by(self, scale):
        self.scale = scale

    def scaled_mass_of(self, stats, rows):
        return self.scale * stats.mass[rows]

    def subtract_from(self, grad, q, rows, r, scratch):
        scaled = scratch.get("q", q.shape)  # q itself when q was made here: it is not needed again
        self.xp.multiply(q, self.scale, out=scaled)
        grad -= scaled

    def cross(self, stats, s0):
        return _cross_from_sums(self.xp, stats.mass, s0, stats.dense)


class _Scratch:
    """One thread's reusable buffers, each made on first use, big enough for any block."""

    def __init__(self, xp, size, dtype):
        self.xp, self.size, self.dtype = xp, size, dtype
        self.arrays = {}

    def get(self, name, shape):
        if name not in self.arrays:
            self.arrays[name] = self.xp.empty(self.size, dtype=self.dtype)
        return self.arrays[name][: math.prod(shape)].reshape(shape)


class _Pass:
    """One pass over the logits: each item's loss and, when ``grad`` is given, its gradient.

    Per item it keeps the shift ``m`` (the row's max, clipped to finite
    numbers), where the max is, ``e_top = exp(z_top - m)`` (1, or 0 for a fully
    masked row), the sum ``rest`` of the other exponentials and the target's
    gathered sums. Keeping the max's term apart lets ``log1p(rest)`` give an
    almost certain item its tiny loss exactly, and gives the losses after the
    pass (`losses`). The gradient of a block is finished while its
    exponentials are still in cache.

    ``z`` (logits), ``grad`` and the target's probabilities have their classes
    last; ``grad`` may be ``z`` itself, since each block is read before it is
    written. Blocks in another dtype than ``dtype`` are converted on the way.
    """

    def __init__(self, xp, z, target, dtype, z_loss=0.0, grad=None, scale=1):
        self.xp, self.target, self.dtype = xp, target, dtype
        self.z_loss, self.scale = z_loss, scale
        if grad is not None:
            target.scale_by(scale)
        self.batch_shape, num_classes = z.shape[:-1], z.shape[-1]
        n = math.prod(self.batch_shape)
        probabilities = getattr(target, "t", None)
        arrays = [a for a in (z, probabilities, grad) if a is not None]
        if all(a.ndim <= 2 or a.flags.c_contiguous for a in arrays):
            layout = (n,)  # rows of one 2-d view each
            z, probabilities, grad = (None if a is None else a.reshape(n, num_classes)
                                      for a in (z, probabilities, grad))
        else:
            layout = self.batch_shape  # blocks of the batch, copied into rows on the way
        self.z, self.probabilities, self.grad = z, probabilities, grad
        self.top = xp.empty(n, dtype=xp.intp)
        self.m, self.e_top, self.rest, self.label, self.dense, self.mass = (
            xp.empty(n, dtype=dtype) for _ in range(6))
        self.big = xp.finfo(dtype).max
        # float64's exp is not vectorized on most CPUs: its shift costs little, and its
        # callers expect the last bits; float32 skips the shift where it is not needed.
        self.unshifted_max = None
        if dtype == xp.float32:
            self.unshifted_max = math.log(float(self.big)) - math.log(num_classes) - 1
        rows = _blocked.rows_per_block(num_classes * dtype.itemsize) if in_row_blocks(xp) else n
        self.blocks = list(_blocked.row_blocks(layout, rows)) if n else []
        self.scratch_size = min(rows, n) * num_classes

    def run(self):
        def scratch():
            return _Scratch(self.xp, self.scratch_size, self.dtype)

        # -inf logits make 0 * inf, +inf logits inf - inf: the NaNs they leave are the
        # documented result or are discarded by `where`; neither is worth a warning.
        def quiet():
            return errstate(self.xp, invalid="ignore", divide="ignore")

        _blocked.for_each_block(self.blocks, self.block, scratch, quiet)
        self.target.after_pass()
        return self

    def read(self, a, index, scratch, name):
        """Block ``index`` of ``a`` as rows in the working dtype: a view where it can be."""
        part = a[index]
        if part.ndim == 2 and part.dtype == self.dtype:
            return part
        rows = scratch.get(name, part.shape)
        self.xp.copyto(rows, part, casting="unsafe")
        return rows.reshape(-1, part.shape[-1])

    def block(self, block, scratch):
        # Every NumPy call here costs microseconds of Python whatever the block's size,
        # so the per-block steps are kept few; the per-item ones wait for `losses`.
        xp, target = self.xp, self.target
        index, start, stop = block
        rows = slice(start, stop)
        z = self.read(self.z, index, scratch, "z")
        r = xp.arange(z.shape[0])
        top = z.argmax(axis=-1, out=self.top[rows])
        # A row of -inf shifts by the most negative float and stays -inf; +inf and NaN stay NaN.
        m = xp.maximum(z[r, top], -self.big, out=self.m[rows])
        xp.minimum(m, self.big, out=m)
        t = None
        if self.probabilities is not None:
            target.inspect(self.probabilities[index])
            t = self.read(self.probabilities, index, scratch, "t")
        q = target.load(self, z, m, rows, r, t, scratch)
        part = None if self.grad is None else self.grad[index]
        if part is not None and part.ndim == 2 and part.dtype == self.dtype:
            e, part = part, None  # the exponentials go straight into the gradient
        else:
            e = scratch.get("e", z.shape)
        safe = self._needs_no_shift(m, q)
        unshifted = safe is not None and bool(safe.all())
        if unshifted:
            xp.exp(z, out=e)
        else:
            xp.subtract(z, m[:, None] if safe is None else xp.where(safe, 0, m)[:, None], out=e)
            target.dense(self, e, q, rows)
            xp.exp(e, out=e)
        e_top = e[r, top]
        e[r, top] = 0
        # einsum sums in SIMD lanes: a few times faster than sum's pairwise loop, as accurate here.
        rest = xp.einsum("ij->i", e)
        # Kept as for the shifted row: the max's term 1, the others divided by e^m where unshifted.
        if unshifted:
            self.e_top[rows], self.rest[rows] = 1, rest / e_top
        elif safe is None:
            self.e_top[rows], self.rest[rows] = e_top, rest
        else:
            self.e_top[rows] = xp.where(safe, 1, e_top)
            self.rest[rows] = xp.where(safe, rest / e_top, rest)
        if self.grad is None:
            return
        e[r, top] = e_top
        # Unshifted rows have e_top = e^m >= 1; only a shifted row can sum to 0 (all -inf).
        total = e_top + rest if unshifted else xp.where(e_top + rest == 0, 1, e_top + rest)
        self._gradient(e, q, m, total, rows, r, scratch)
        if part is not None:
            xp.copyto(part, e.reshape(part.shape), casting="unsafe")

    def _needs_no_shift(self, m, q):
        """Rows whose exponentials need no shift, or None where every row is shifted.

        With a row max ``m`` in ``[0, unshifted_max]``, ``exp(z)`` cannot overflow
        (nor can the row's sum) and underflows no sooner than ``exp(z - m)``, so
        the subtraction, a full sweep over the block, can be skipped. Only for
        float32, and only when no target term needs the shifted logits (``q``).
        """
        if q is not None or self.unshifted_max is None:
            return None
        return (m >= 0) & (m <= self.unshifted_max)

    def _gradient(self, e, q, m, total, rows, r, scratch):
        """Turn a block's exponentials, summing to ``total``, into ``scale ((mass + 2 c LSE) softmax - q)``."""
        xp = self.xp
        coefficient = self.target.scaled_mass_of(self, rows)
        if self.z_loss:
            lse = m + xp.log1p((self.e_top[rows] - 1) + self.rest[rows])
            coefficient = coefficient + (2 * self.z_loss * self.scale) * lse
        xp.multiply(e, (coefficient / total)[:, None], out=e)
        self.target.subtract_from(e, q, rows, r, scratch)

    def losses(self):
        """Each item's loss, shaped like the batch, from the statistics of the pass."""
        xp = self.xp
        with errstate(xp, invalid="ignore", divide="ignore"):
            s = xp.log1p((self.e_top - 1) + self.rest)  # log1p(-1) = -inf: a fully masked row
            s0 = xp.where(xp.isneginf(s), 0, s)
            loss = self.target.cross(self, s0)
            if self.z_loss:
                loss = loss + self.z_loss * (self.m + s) ** 2
            # A +inf logit leaves the distribution undefined; say so with NaN, on that item only.
            loss = self.target.on_items(xp.where(xp.isposinf(s), xp.nan, loss))
        return loss.reshape(self.batch_shape)


def _prepare(func, logits, target, axis, weight, ignore_index, label_smoothing, z_loss, reduction,
             out=None):
    """Validate everything; return the namespace, the logits as given and with classes last, the
    dtype to compute in, and the target."""
    xp = namespace_of(func, logits=logits, target=target, weight=weight, out=out)
    logits, target = xp.asarray(logits), xp.asarray(target)
    dtype = _checks.logits_dtype(func, logits, axis, xp)
    z = xp.moveaxis(logits, axis, -1)
    kind = _checks.target_kind(func, target, logits.shape, axis)
    _checks.check_ignore_index(func, ignore_index, kind)
    _checks.check_label_smoothing(func, label_smoothing)
    _checks.check_z_loss(func, z_loss)
    _checks.check_reduction(func, reduction)
    num_classes = z.shape[-1]
    if weight is not None:
        weight = _checks.weight_vector(func, weight, num_classes, dtype, xp)
    if out is not None:
        _checks.check_out(func, out, logits, xp, target=target, weight=weight)
    if kind == "index":
        _checks.index_target(func, "target", target, num_classes, axis, ignore_index, xp)
        q = _ClassIndices(xp, target, weight, num_classes, ignore_index, label_smoothing, dtype)
        return xp, logits, z, dtype, q
    check = functools.partial(_checks.probability_target, func, target, xp)
    if out is not None and _checks.is_same_view(out, logits):  # check before overwriting them
        check()
        check = None
    probabilities = xp.moveaxis(target, axis, -1)
    return xp, logits, z, dtype, _Probabilities(xp, probabilities, weight, label_smoothing, check)


def reduction_scale(xp, count, reduction, dtype):
    """The factor that turns the sum of item losses into the requested reduction.

    ``count`` is the mean's denominator (summed weight of the non-ignored
    items, or the number of items); `xentlib.linear` and `xentlib.sharded`
    reduce with it too.
    """
    if reduction in ("none", "sum"):
        return 1
    if reduction != "mean":
        return 1 / reduction
    # Nothing to average gives 0 with a zero gradient, where torch gives NaN.
    count = xp.asarray(count, dtype=dtype)
    return xp.where(count == 0, 0, 1 / xp.where(count == 0, 1, count))


def reduce_losses(xp, loss, scale, reduction):
    """The item losses as the reduction asks: as they are, or summed times ``scale``.

    Shared with `xentlib.linear`; the sum keeps the losses' dtype.
    """
    if reduction == "none":
        return loss
    return (xp.sum(loss) * scale).astype(loss.dtype)


def _loss_and_grad(func, logits, target, out, axis, options):
    xp, logits, z, dtype, q = _prepare(func, logits, target, axis, out=out, **options)
    if out is None:
        out = xp.empty(logits.shape, dtype=_checks.result_dtype(logits.dtype, xp))
    reduction, z_loss = options["reduction"], options["z_loss"]
    scale = reduction_scale(xp, q.count, reduction, dtype)
    grad = xp.moveaxis(out, axis, -1)
    item_losses = _Pass(xp, z, q, dtype, z_loss, grad, scale).run().losses()
    return reduce_losses(xp, item_losses, scale, reduction), out


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
    xp, _, z, dtype, q = _prepare("cross_entropy", logits, target, axis, **options)
    item_losses = _Pass(xp, z, q, dtype, z_loss).run().losses()
    return reduce_losses(xp, item_losses, reduction_scale(xp, q.count, reduction, dtype), reduction)


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
        array. Any other ``out`` must share no memory with the logits, the
        target or the weights. Probabilities are checked before
        ``out=logits`` is written; a separate ``out`` may hold part of a
        gradient when they fail.

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
    cross_entropy, cross_entropy_grad

    Notes
    -----
    One ``exp`` per logit serves both results: each row's exponentials are
    written into the gradient buffer, summed for the loss, then scaled in
    place. On NumPy the rows go in blocks of about 1 MiB on two threads
    (``xentlib._blocked.BLOCK_BYTES`` and ``THREADS``), so with ``out=logits``
    the extra memory is a few numbers per item; on CuPy the pass takes the
    whole array at once. ``python -m xentlib.bench`` measures both against
    torch.

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
