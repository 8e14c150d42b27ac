"""The log-sum-exp pieces that every path shares: shift, top/rest split, merge, item loss.

Each item's log-sum-exp is kept as two numbers: the **shift** ``m`` (the max
of its logits where finite, else 0) and the **rest** ``r``, with

    sum_k exp(z_k - m) = 1 + r,   LSE = m + log1p(r).

The max's own term is exactly 1 and is left out of ``r``, so ``log1p(r)``
keeps what lies far below 1: an almost certain item's tiny loss comes out to
full precision instead of rounding to 0 (Blanchard, Higham and Higham 2021,
and scipy's logsumexp since scipy#18295). A fully masked item (every logit
-inf) has ``r = -1`` and ``LSE = -inf``; a +inf logit makes ``r = +inf`` or
NaN, a NaN logit NaN.

The dense pass, the softmax family, the chunked linear layer and the sharded
loss all build their statistics from these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Array = Any

#: Rows of at most this many classes are summed by einsum's running sum (at most 15
#: roundings), longer ones pairwise (`split_top`).
SHORT_ROW = 16
# ... in blocks of at least this many rows: on fewer, einsum's parsing of its subscripts
# costs more than it saves (2.2 µs against 1.5 for 8 rows of ten, 2.8 against 3.8 for 100).
_EINSUM_ROWS = 64

__all__ = [
    "SHORT_ROW",
    "finite_shift",
    "grad_coefficient",
    "item_losses",
    "log1p_rest",
    "max_shift",
    "merge_partials",
    "short_row_max",
    "split_ones",
    "split_top",
]


def finite_shift(m: Array, xp: Any) -> Array:
    """``m`` where finite, else 0: the shift that keeps -inf logits at -inf (not NaN)."""
    return xp.where(xp.isfinite(m), m, 0)


def max_shift(z: Array, xp: Any) -> tuple[Array, Array]:
    """Each row's shift (kept as an axis) and ``z`` minus it: no exponential exceeds 1."""
    m = finite_shift(xp.max(z, axis=-1, keepdims=True), xp)
    return m, z - m


def split_top(e: Array, top: Array, xp: Any, top_is_one: bool = False,
              top_at: Array | None = None) -> tuple[Any, Array]:
    """Take each row's term at column ``top`` out of the exponentials ``e`` (rows of 2-d ``e``).

    Returns that term and the sum of the others; ``e`` keeps a 0 at ``top``.
    The others are summed with NumPy's pairwise ``sum``: its error grows like
    ``log2(C)`` ulps where a running sum's (and einsum's) grows like ``C``, and
    a row's result does not depend on the rows around it. ``top_is_one``: the
    caller knows every such term is exactly 1 (each row shifted by its finite
    max), returned as the number 1 without reading it. ``top_at``: the flat
    positions of the tops in a C-contiguous ``e``, the faster way to reach them.
    """
    if top_at is None:
        rows = xp.arange(e.shape[0])
        e_top = 1 if top_is_one else e[rows, top]
        e[rows, top] = 0
    else:
        flat = e.reshape(-1)
        e_top = 1 if top_is_one else flat[top_at]
        flat[top_at] = 0
    if e.shape[-1] <= SHORT_ROW and e.shape[0] >= _EINSUM_ROWS:
        # Pairwise summation restarts for every row: on rows this short it took five
        # times einsum's time, and a running sum of so few terms is as accurate.
        return e_top, xp.einsum("ij->i", e)
    return e_top, e.sum(axis=-1)


def short_row_max(z: Array, xp: Any) -> Array:
    """Each row's max of a 2-d ``z`` with few columns, taken column by column.

    NumPy reduces one row at a time; on rows of ten classes its ``max`` and
    ``argmax`` took four times as long as the ``C - 1`` elementwise maxima
    that run across all the rows at once. Those are ``C - 1`` calls, though,
    worth it only on blocks of many rows. A NaN propagates, as in ``max``.
    """
    m = z[:, 0].copy()
    for j in range(1, z.shape[1]):
        xp.maximum(m, z[:, j], out=m)
    return m


def split_ones(e: Array, xp: Any, work: Array) -> Array:
    """The rest of rows of exponentials shifted by their finite max, without finding the max.

    Every term is at most 1 and the max's is exactly 1. The rest is the sum
    of the terms below 1, plus 1 for each further term equal to 1 (a tie, or
    a logit within rounding of the max): the number `split_top` gives, with
    no column to look up. ``work``, an array of the shape of ``e``, is
    overwritten with the terms below 1; it may be ``e`` itself, where the
    caller needs only the rest.
    """
    below = e < 1
    xp.multiply(e, below, out=work)
    rest = xp.einsum("ij->i", work)
    if e.size - int(xp.count_nonzero(below)) != e.shape[0]:  # a row holds more than one 1
        ties = (e.shape[1] - xp.count_nonzero(below, axis=-1)) - 1
        rest = rest + ties.astype(rest.dtype)  # integers would promote float32 to float64
    return rest


def merge_partials(xp: Any, first: tuple[Array, Array],
                   second: tuple[Array, Array]) -> tuple[Array, Array]:
    """Combine the ``(m, r)`` of two disjoint sets of classes into those of their union.

    ``m`` is here the plain max (possibly infinite) and ``1 + r`` the sum of
    ``exp(z - finite_shift(m))``. The part with the larger max keeps its exact
    1; the other's sum ``1 + r`` is scaled by ``exp(-|m1 - m2|) <= 1``, so
    nothing overflows, and the result does not depend on the parts' order.
    """
    (m1, r1), (m2, r2) = first, second
    factor = xp.exp(-xp.abs(finite_shift(m1, xp) - finite_shift(m2, xp)))
    rest = xp.where(m1 >= m2, r1 + (1 + r2) * factor, r2 + (1 + r1) * factor)
    return xp.maximum(m1, m2), rest


def log1p_rest(xp: Any, rest: Array, regular: bool = False) -> Array:
    """``s0 = log1p(rest)``, the log-sum-exp less the shift, and 0 for a fully masked item.

    Such an item has no log-sum-exp to penalize: with its shift 0 (see
    `finite_shift`), ``LSE = shift + s0`` is 0 too, and the z-loss and its
    gradient add nothing to it. ``regular``: the caller knows that every
    item's max was finite, so that no item is masked and ``rest`` is finite.
    Callers hold an `errstate` that ignores division by 0 and invalid values
    (``log1p(-1)``, ``inf - inf``): one per call, not one per step, since
    entering it costs as much as a small array operation.
    """
    s = xp.log1p(rest)
    if regular or bool(xp.isfinite(s).all()):
        return s
    return xp.where(s == -xp.inf, 0, s)


def item_losses(xp: Any, shift: Array, rest: Array, cross: Callable[[Array], Array],
                z_loss: float, regular: bool = False) -> tuple[Array, Array, Array | None]:
    """Each item's loss from its ``(shift, rest)``; also ``s0`` and, with a z-loss, the LSE.

    ``shift`` is finite (`finite_shift`). ``cross(s0)`` is the target's part,
    ``sum_k q_k (s0 - shifted_k)``. A fully masked item costs ``+inf`` where it
    carries target mass (its label's shifted logit is -inf) and 0 where it
    carries none. A +inf logit leaves the distribution undefined: that item's
    loss is NaN. ``regular`` as for `log1p_rest`: then neither can occur.
    Callers hold the `errstate` of `log1p_rest`. The LSE is None without a
    z-loss, which alone needs it.
    """
    s0 = log1p_rest(xp, rest, regular)
    loss = cross(s0)
    lse: Array = None
    if z_loss:
        lse = shift + s0
        loss = loss + z_loss * lse**2
    if regular:
        return loss, s0, lse
    undefined = s0 == xp.inf
    if bool(undefined.any()):
        loss = xp.where(undefined, xp.nan, loss)
    return loss, s0, lse


def grad_coefficient(mass: Array, lse: Array, z_loss: float, divisor: Any) -> Array:
    """The factor of each item's softmax in its gradient: ``(sum_k q_k + 2 c LSE) / divisor``.

    ``divisor`` is the reduction's (`xentlib._targets.reduction_divisor`);
    dividing last keeps a tiny total weight from overflowing a reciprocal.
    ``lse`` is read only with a z-loss (None otherwise, see `item_losses`).
    """
    return (mass + 2 * z_loss * lse) / divisor if z_loss else mass / divisor
