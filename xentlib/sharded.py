"""Cross-entropy of logits split over the classes, as a lazy Dask computation.

In tensor-parallel training the classifier, and so the logits, is split by
vocabulary: each device holds every item's logits for its own classes. The
loss needs each item's log-sum-exp over all classes, and the shards combine
their parts like an all-reduce, reading each logit once:

1. every shard takes, per item, the max of its own logits and the sum of
   their exponentials shifted by it (`xentlib._lse`'s ``(m, r)``), a block of
   rows at a time through one cache-sized buffer, and the shard that owns an
   item's label keeps the label's logit (the others 0);
2. the shards' statistics, a few numbers per item, merge in a tree
   (`xentlib._lse.merge_partials`: the sum with the smaller max is scaled by
   ``exp`` of the gap), in any order; the merged max is the shift, and the
   label's logit is shifted by it at the end.

Here a shard is one chunk of a Dask array along the class axis; the chunks
may live on NumPy or CuPy. This module is the only one that imports ``dask``,
and ``import xentlib`` does not import it.
"""

import math
from typing import Any

import dask.array as da

from . import _blocked, _checks
from ._lse import finite_shift, item_losses, merge_partials, split_top
from ._namespace import errstate, get_namespace, in_row_blocks, namespace_of
from ._targets import ClassIndices, chunk_labels, dense_dot, index_cross, reduction_divisor
from ._typing import ArrayLike, Reduction

__all__ = ["cross_entropy"]

_FUNC = "sharded.cross_entropy"


# The columns of the statistics a shard keeps per item: its max and rest (`xentlib._lse`), the
# label's logit, and with label smoothing the spread's term and its mass on the shard.
_MAX, _REST, _LABEL, _TERM, _MASS = range(5)


def _shard_partial(z, classes, labels, spread, dtype):
    """One shard's statistics of each item, shape (n, 1, columns), relative to its own max.

    The columns: the plain max ``m`` of the shard's logits; its rest ``r``
    (the sum of ``exp(z - finite_shift(m))`` less the max's own 1); the label's
    logit, unshifted, if the shard owns the label (else 0); and with
    ``spread`` (the smoothing's mass per class of the shard) the spread's
    ``sum_k spread_k (z_k - finite_shift(m))`` and ``sum_k spread_k``.
    The rows go in cache-sized blocks through one scratch buffer.
    """
    xp = get_namespace(z)
    n, width = z.shape
    columns = _TERM if spread is None else _MASS + 1
    out = xp.zeros((n, 1, columns), dtype=dtype)
    stats = out[:, 0, :]
    if width == 0:  # no classes: an empty sum, as if every logit were masked
        stats[:, _MAX], stats[:, _REST] = -xp.inf, -1
        return out
    owned, index = chunk_labels(xp, labels, int(classes[0]), width)
    stats[:, _LABEL] = xp.where(owned, z[xp.arange(n), index], 0)
    if spread is not None:
        stats[:, _MASS] = xp.sum(spread)
    # Blocks of rows that stay in a core's cache while all the steps run over them, as in the
    # dense pass: the shard's exponentials never exist at the shard's size.
    step = _blocked.rows_per_block(width * dtype.itemsize) if in_row_blocks(xp) else n
    scratch = xp.empty((min(step, n), width), dtype=dtype)
    # Logits spanning more than the float range make z - t = -inf (exp 0) without a warning;
    # a +inf logit makes inf - inf.
    with errstate(xp, over="ignore", invalid="ignore"):
        for start in range(0, n, step):
            block, part = z[start : start + step], stats[start : start + step]
            top = xp.argmax(block, axis=-1)
            rows = xp.arange(len(top))
            part[:, _MAX] = block[rows, top]
            e = scratch[: len(top)]
            xp.subtract(block, finite_shift(part[:, _MAX], xp)[:, None], out=e)
            if spread is not None:
                dense_dot(xp, spread, e, part[:, _TERM])
            xp.exp(e, out=e)
            e_top, others = split_top(e, top, xp)
            # Leaving the exact 1 out keeps what lies below it, as the dense path does.
            part[:, _REST] = (e_top - 1) + others
    return out


def _keep(stats, axis, keepdims):
    """The first step of Dask's reduction, per block: `_shard_partial` has done its work."""
    return stats


def _merge_shards(stats, axis, keepdims):
    """Merge the statistics of the shards along ``axis`` (1) into those of their classes.

    The shards' ``(m, r)`` merge with `xentlib._lse.merge_partials`, in any
    order; each spread term moves to the merged shift, as its sum of
    exponentials moves to the merged max.
    """
    xp = get_namespace(stats)
    merged = xp.empty((stats.shape[0], stats.shape[2]), dtype=stats.dtype)
    # Shards whose maxima are further apart than the float range overflow the gap to inf
    # (a factor exp(-inf) = 0), and a +inf logit's rest stays inf: neither is worth a warning.
    with errstate(xp, over="ignore", invalid="ignore"):
        m, r = stats[:, 0, _MAX], stats[:, 0, _REST]
        for k in range(1, stats.shape[1]):
            m, r = merge_partials(xp, (m, r), (stats[:, k, _MAX], stats[:, k, _REST]))
        merged[:, _MAX], merged[:, _REST] = m, r
        merged[:, _LABEL] = xp.sum(stats[:, :, _LABEL], axis=1)  # one shard's logit and zeros
        if stats.shape[2] > _TERM:
            mass = stats[:, :, _MASS]
            gap = finite_shift(stats[:, :, _MAX], xp) - finite_shift(m, xp)[:, None]
            terms = stats[:, :, _TERM] + xp.where(mass == 0, 0, gap * mass)
            merged[:, _TERM], merged[:, _MASS] = xp.sum(terms, axis=1), xp.sum(mass, axis=1)
    return merged[:, None, :] if keepdims else merged


def _item_losses(stats, hit, valid, spread_mass, z_loss):
    """Each item's loss from the statistics of all its classes, shape (n, columns)."""
    xp = get_namespace(stats)
    t = finite_shift(stats[:, _MAX], xp)
    dense = stats[:, _TERM] if spread_mass else None

    def cross(s0):
        """The target's part of each item's loss."""
        return index_cross(xp, hit, stats[:, _LABEL] - t, spread_mass, dense, s0)

    with errstate(xp, invalid="ignore", divide="ignore"):
        loss = item_losses(xp, t, stats[:, _REST], cross, z_loss)[0]
    return loss if valid is None else xp.where(valid, loss, 0)


def _check_logits(logits):
    """Check that ``logits`` is a 2-d Dask array with known chunks and at least one class."""
    if not isinstance(logits, da.Array):
        kind = f"{type(logits).__module__}.{type(logits).__name__}"
        msg = (
            f"{_FUNC}: logits is {kind}; expected a dask array with the classes split into "
            "chunks (dask.array.from_array(logits, chunks=(N, C // shards)))"
        )
        raise TypeError(msg)
    if logits.ndim != 2:
        msg = (
            f"{_FUNC}: logits has shape {logits.shape}; expected (N, C), items by classes "
            "(reshape (B, T, C) logits to (B * T, C))"
        )
        raise ValueError(msg)
    if any(math.isnan(size) for sizes in logits.chunks for size in sizes):
        msg = f"{_FUNC}: logits has unknown chunk sizes; call logits.compute_chunk_sizes() first"
        raise ValueError(msg)
    if logits.shape[1] == 0:
        msg = f"{_FUNC}: logits has no classes (size 0 on axis 1); expected at least one"
        raise ValueError(msg)


def _prepare(logits, target, options):
    """Validate everything; return the namespace, the working dtype and the target read as q."""
    _check_logits(logits)
    if isinstance(target, da.Array):
        msg = (
            f"{_FUNC}: target is a dask array; expected the class indices as a NumPy or CuPy "
            "array (every shard reads all of them; call target.compute() first)"
        )
        raise TypeError(msg)
    xp = namespace_of(_FUNC, logits=logits._meta, target=target, weight=options["weight"])
    target = _checks.as_array(_FUNC, "target", target, xp)
    dtype = _checks.work_dtype(_FUNC, "logits", logits.dtype, xp)
    items, classes = logits.shape
    _checks.class_indices_only(_FUNC, target, (items,), classes)
    label_smoothing, z_loss, reduction = _checks.options(
        _FUNC, "index", options["ignore_index"], options["label_smoothing"], options["z_loss"],
        options["reduction"])
    weight = options["weight"]
    if weight is not None:
        weight = _checks.weight_vector(_FUNC, weight, classes, dtype, xp)
    _checks.index_target(_FUNC, "target", target, classes, 1, options["ignore_index"], xp)
    q = ClassIndices(xp, target, weight, classes, options["ignore_index"], label_smoothing, dtype)
    return xp, dtype, q, z_loss, reduction


def cross_entropy(
    logits: da.Array,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: Reduction = "mean",
) -> da.Array:
    """Compute the cross-entropy of logits whose classes are split into Dask chunks.

    Each chunk along the class axis is a shard, as in tensor-parallel
    training. Each shard reads its logits once, for its own max and sum of
    exponentials per item; these statistics then merge in a tree, so no
    block of the computation is wider than one shard: the class axis is
    never gathered into one chunk.

    Parameters
    ----------
    logits : dask.array.Array, shape (N, C)
        Items by classes; any chunking of both axes. Chunks may be NumPy or
        CuPy arrays. float16 and bfloat16 are computed in float32.
    target : array_like of int, shape (N,)
        Class indices (NumPy or CuPy, on the backend of the chunks), each in
        ``[0, C)`` or ``ignore_index``. Probability targets are refused: use
        `xentlib.cross_entropy` on logits you can hold whole.
    weight, ignore_index, label_smoothing, z_loss, reduction
        As for `xentlib.cross_entropy`. Label smoothing spreads ``eps`` over
        all ``C`` classes, whatever the shard size.

    Returns
    -------
    loss : dask.array.Array
        Lazy: 0-d for 'mean', 'sum' or a number, shape (N,) for 'none';
        float32 for half-precision logits. ``.compute()`` gives the number of
        `xentlib.cross_entropy` on the whole logits.

    Raises
    ------
    TypeError
        "logits is numpy.ndarray; expected a dask array"; "target is a dask
        array"; "target has shape (N, C), probabilities ..."; mixed backends.
    ValueError
        "logits has shape ...; expected (N, C)"; "target[i] = v is outside
        [0, C)"; and the option errors of `xentlib.cross_entropy`.

    See Also
    --------
    xentlib.cross_entropy : the same loss of logits held in one array.
    xentlib.linear_cross_entropy : the logits of a linear layer, never built whole.

    Notes
    -----
    With shard ``k`` holding the classes :math:`S_k`, its own max
    :math:`m_k` and sum :math:`s_k`, each item needs

    .. math::

        m_k = \\max_{j \\in S_k} z_j, \\quad
        s_k = \\sum_{j \\in S_k} e^{z_j - m_k}, \\quad
        m = \\max_k m_k, \\quad
        \\operatorname{LSE} = m + \\log \\sum_k s_k e^{m_k - m},

    and its label's logit from the one shard that owns it; the smoothing term
    :math:`\\sum_j w_j (\\operatorname{LSE} - z_j)` is summed the same way,
    each shard's part moved from its shift :math:`m_k` to :math:`m`. The
    target distribution and the conventions (nothing to average gives 0.0)
    are those of `xentlib.cross_entropy`.

    References
    ----------
    .. [1] M. Shoeybi et al., "Megatron-LM: training multi-billion parameter
       language models using model parallelism", 2019.
       https://arxiv.org/abs/1909.08053
    .. [2] M. Milakov and N. Gimelshein, "Online normalizer calculation for
       softmax", 2018. https://arxiv.org/abs/1805.02867

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> import xentlib
    >>> import xentlib.sharded
    >>> logits = np.array([[2.0, 0.5, -1.0, 0.0], [0.0, 3.0, 0.0, 1.0]])
    >>> labels = np.array([0, 3])
    >>> shards = da.from_array(logits, chunks=(2, 2))   # two shards of two classes
    >>> loss = xentlib.sharded.cross_entropy(shards, labels)
    >>> dense = xentlib.cross_entropy(logits, labels)
    >>> print(round(float(loss.compute()), 4), round(float(dense), 4))
    1.2767 1.2767
    """
    options = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                   z_loss=z_loss, reduction=reduction)
    xp, dtype, q, z_loss, reduction = _prepare(logits, target, options)
    divisor = float(reduction_divisor(xp, q.count, reduction, dtype))
    if logits.shape[0] == 0:  # no items: no shard has a max to take
        losses = da.zeros((0,), dtype=dtype, chunks=((0,),), meta=xp.empty((0,), dtype=dtype))
        return losses if reduction == "none" else (losses.sum() / divisor).astype(dtype)
    rows, shards = logits.chunks
    per_item = {"chunks": (rows,)}
    classes = da.from_array(xp.arange(logits.shape[1]), chunks=(shards,))
    spread: tuple[Any, Any] = (None, None)
    if q.spread is not None:
        spread = (da.from_array(q.spread_of(0, logits.shape[1]), chunks=(shards,)), "j")
    columns = _TERM if q.spread is None else _MASS + 1
    partials = da.blockwise(
        _shard_partial, "ijk",
        logits, "ij", classes, "j", da.from_array(q.labels, **per_item), "i", *spread,
        dtype, None,
        new_axes={"k": columns}, adjust_chunks={"j": 1}, dtype=dtype,
        meta=xp.empty((0, 0, 0), dtype=dtype),
    )
    stats = da.reduction(partials, _keep, _merge_shards, axis=1, combine=_merge_shards,
                         dtype=dtype, meta=xp.empty((0, 0), dtype=dtype))
    valid = (None, None) if q.valid is None else (da.from_array(q.valid, **per_item), "i")
    losses = da.blockwise(
        _item_losses, "i",
        stats, "ik", da.from_array(q.hit, **per_item), "i", *valid,
        float(q.spread_mass), None, z_loss, None,
        concatenate=True, dtype=dtype, meta=xp.empty((0,), dtype=dtype),
    )
    if reduction == "none":
        return losses
    return (losses.sum() / divisor).astype(dtype)
