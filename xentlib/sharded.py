"""Cross-entropy of logits split over the classes, as a lazy Dask computation.

In tensor-parallel training the classifier, and so the logits, is split by
vocabulary: each device holds every item's logits for its own classes. The
loss needs each item's log-sum-exp over all classes, and the shards combine
their parts like an all-reduce:

1. every shard takes the max of its logits per item; the max over shards is
   the shift;
2. every shard sums the exponentials of its logits minus that shift, and the
   shard that owns an item's label contributes the label's logit (the others
   0); sums over the shards give the log-sum-exp and the label logit.

Here a shard is one chunk of a Dask array along the class axis; the chunks
may live on NumPy or CuPy. This module is the only one that imports ``dask``,
and ``import xentlib`` does not import it.
"""

import math
from typing import Any

import dask.array as da

from . import _checks
from ._lse import finite_shift, item_losses, split_top
from ._namespace import errstate, get_namespace, namespace_of
from ._targets import ClassIndices, chunk_labels, index_cross, reduction_divisor
from ._typing import ArrayLike, Reduction

__all__ = ["cross_entropy"]

_FUNC = "sharded.cross_entropy"


def _shift(m, dtype):
    """The max over all shards where it is finite, else 0; in the working dtype."""
    return finite_shift(m, get_namespace(m)).astype(dtype, copy=False)


def _shard_statistics(z, t, labels, classes, spread, dtype):
    """One shard's share of each item's statistics, shape (n, 1, 4), to be summed over shards.

    The four are: the sum of ``exp(z - t)`` over the shard's classes, leaving
    out one term equal to exactly 1 if the shard holds the max; whether it
    does (1 or 0); the label's shifted logit if the shard owns the label (else
    0); the shard's ``sum_k spread_k (z_k - t)`` (0 without smoothing).
    """
    xp = get_namespace(z)
    # Logits spanning more than the float range make z - t = -inf (exp 0) without a warning.
    with errstate(xp, over="ignore", invalid="ignore"):
        shifted = z.astype(dtype, copy=False) - t[:, None]
        e = xp.exp(shifted)
        top = xp.argmax(shifted, axis=-1)
        holds = shifted[xp.arange(len(top)), top] == 0
        e_top, others = split_top(e, top, xp)
        # Leaving the exact 1 out keeps what lies below it, as the dense path does with log1p.
        rest = others + xp.where(holds, 0, e_top)
        owned, index = chunk_labels(xp, labels, int(classes[0]), z.shape[-1])
        label = xp.where(owned, xp.take_along_axis(shifted, index[:, None], axis=-1)[:, 0], 0)
        if spread is None:
            spread_term = xp.zeros_like(label)
        else:
            spread_term = xp.sum(xp.where(spread == 0, 0, spread * shifted), axis=-1)
    parts = [rest, holds.astype(dtype), label, spread_term]
    return xp.stack(parts, axis=-1)[:, None, :]


def _item_losses(statistics, t, hit, valid, spread_mass, z_loss):
    """Each item's loss from its statistics summed over the shards."""
    xp = get_namespace(statistics)
    # The shards holding the max each left out a 1; all but one are put back (an exact integer).
    rest = statistics[:, 0] + (statistics[:, 1] - 1)
    dense = statistics[:, 3] if spread_mass else None

    def cross(s0):
        """The target's part of each item's loss."""
        return index_cross(xp, hit, statistics[:, 2], spread_mass, dense, s0)

    with errstate(xp, invalid="ignore", divide="ignore"):
        loss = item_losses(xp, t, rest, cross, z_loss)[0]
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
    training. The shards combine their statistics in two rounds, a max and
    then a sum, so no block of the computation is wider than one shard: the
    class axis is never gathered into one chunk.

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
    With shard ``k`` holding the classes :math:`S_k`, each item needs

    .. math::

        m = \\max_k \\max_{j \\in S_k} z_j, \\qquad
        \\operatorname{LSE} = m + \\log \\sum_k \\sum_{j \\in S_k} e^{z_j - m},

    and its label's logit from the one shard that owns it; the smoothing term
    :math:`\\sum_j w_j (\\operatorname{LSE} - z_j)` is summed the same way. The
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
    t = logits.max(axis=1).map_blocks(_shift, dtype, dtype=dtype, meta=xp.empty((0,), dtype=dtype))
    classes = da.from_array(xp.arange(logits.shape[1]), chunks=(shards,))
    spread: tuple[Any, Any] = (None, None)
    if q.spread is not None:
        spread = (da.from_array(q.spread_of(0, logits.shape[1]), chunks=(shards,)), "j")
    statistics = da.blockwise(
        _shard_statistics, "ijk",
        logits, "ij", t, "i", da.from_array(q.labels, **per_item), "i", classes, "j", *spread,
        dtype, None,
        new_axes={"k": 4}, adjust_chunks={"j": 1}, dtype=dtype,
        meta=xp.empty((0, 0, 0), dtype=dtype),
    ).sum(axis=1)
    valid = (None, None) if q.valid is None else (da.from_array(q.valid, **per_item), "i")
    losses = da.blockwise(
        _item_losses, "i",
        statistics, "ij", t, "i", da.from_array(q.hit, **per_item), "i", *valid,
        float(q.spread_mass), None, z_loss, None,
        concatenate=True, dtype=dtype, meta=xp.empty((0,), dtype=dtype),
    )
    if reduction == "none":
        return losses
    return (losses.sum() / divisor).astype(dtype)
