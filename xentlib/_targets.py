"""Targets read as distributions ``q`` over the classes, and the reductions of the losses.

Every option is read as a target distribution ``q`` over the classes of each
item (``w`` the class weights, ``eps`` the label smoothing, ``C`` the classes):

- class index ``y``:     ``q = (1 - eps) w[y] onehot(y) + (eps / C) w``
- probabilities ``t``:   ``q = w ((1 - eps) t + eps / C)``

so one formula gives every item's loss and one its gradient::

    loss_i = sum_k q_ik (LSE_i - z_ik) + c LSE_i**2
    grad_i = ((sum_k q_ik + 2 c LSE_i) softmax(z_i) - q_i) / divisor

For class indices ``q`` is never built: the label's share (``hit``) is
gathered and scattered, the smoothing's share (``spread``) is one number or
one vector for every item. `ClassIndices` serves the dense pass, the chunked
linear layer and the sharded loss; `Probabilities` the dense pass only.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Protocol

Array = Any

__all__ = [
    "BlockRows",
    "ClassIndices",
    "ItemSums",
    "Probabilities",
    "Target",
    "chunk_labels",
    "cross_from_sums",
    "dense_dot",
    "divide_total",
    "index_cross",
    "reduce_losses",
    "reduction_divisor",
]


class BlockRows(NamedTuple):
    """One block of rows in a pass over the logits, whose 2-d arrays are C-contiguous.

    One entry per row is read and written at flat positions ``starts + column``:
    on rows of ten classes that took half the time of a two-index gather, and a
    third of its scatter.
    """

    items: slice  #: where the block's items sit in the flattened batch
    starts: Array  #: the flat position of each row's first entry
    top: Array | None  #: the column of each row's max, None where it was not looked up
    top_at: Array | None  #: its flat position

    @classmethod
    def of(cls, xp: Any, items: slice, top: Array | None, num_classes: int) -> BlockRows:
        """The rows ``items`` of a block with ``num_classes`` columns and maxes at ``top``."""
        rows = items.stop - items.start
        starts = xp.arange(0, rows * num_classes, num_classes)
        return cls(items, starts, top, None if top is None else starts + top)


class ItemSums:
    """The sums a target gathers from one block of rows, each with one entry per row.

    ``label``: the label's shifted logit ``z_y - m`` (class indices);
    ``dense``: ``sum_k q_k (z_k - m)`` over the target's dense part;
    ``mass``: ``sum_k q_k`` (probabilities, whose mass varies by item).
    The target sets the ones it needs.
    """

    __slots__ = ("label", "dense", "mass")

    label: Array
    dense: Array
    mass: Array


class Target(Protocol):
    """What a pass over the logits asks of a target, block by block.

    ``count`` is the mean's denominator; ``probabilities`` the target's
    probabilities with classes last, or None for class indices. Each block
    has its own `ItemSums`, which ``gather`` and ``dot`` fill.
    """

    count: Array
    probabilities: Array

    def q_block(self, raw: Array, t: Array, scratch: Any) -> Array | None:
        """The dense part of ``q`` for a block: None, a number, a vector or rows like ``t``."""

    def gather(self, sums: ItemSums, z: Array, m: Array, block: BlockRows) -> None:
        """Read what the loss needs from the block's logits before they are overwritten."""

    def dot(self, sums: ItemSums, shifted: Array, q: Array, block: BlockRows) -> None:
        """Accumulate ``sum_k q_k shifted_k`` (and the mass) of the block's rows."""

    def mass_of(self, sums: ItemSums, block: BlockRows) -> Array:
        """``sum_k q_k`` of the block's rows."""

    def subtract(self, grad: Array, q: Array, block: BlockRows, divisor: Any,
                 scratch: Any) -> None:
        """Subtract ``q / divisor`` from the block's gradient."""

    def finish(self) -> None:
        """After the pass: raise if a block looked invalid."""

    def cross(self, sums: ItemSums, s0: Array, block: BlockRows) -> Array:
        """Each of the block's items' ``sum_k q_k (s0 - shifted_k)``."""

    def on_items(self, values: Array, items: slice = ...) -> Array:
        """``values`` of the items ``items``, with those that carry no target set to 0."""


def dense_dot(xp: Any, q: Array, shifted: Array, out: Array) -> None:
    """Write ``sum_k q_k shifted_k`` of each row into ``out``, a ``q_k = 0`` term counting 0.

    ``q`` is one number (unweighted label smoothing), one vector for every row
    (weighted smoothing) or a row per row (probabilities). The fast products
    make ``0 * -inf = NaN`` where a class with no target mass is masked; only
    the rows they made NaN are summed again term by term. (einsum, not BLAS:
    BLAS would start threads of its own inside xentlib's.)
    """
    per_row = getattr(q, "ndim", 0) == 2
    if per_row:
        out[...] = xp.einsum("ij,ij->i", q, shifted)
    elif getattr(q, "ndim", 0) == 1:
        out[...] = xp.einsum("ij,j->i", shifted, q)
    else:
        out[...] = q * xp.sum(shifted, axis=-1)
    bad = xp.isnan(out)
    if bool(bad.any()):
        q_bad = q[bad] if per_row else q
        out[bad] = xp.sum(xp.where(q_bad == 0, 0, q_bad * shifted[bad]), axis=-1)


def cross_from_sums(xp: Any, mass: Array, s0: Array, dot: Array) -> Array:
    """``sum_k q_k (s0 - shifted_k)`` from ``sum_k q_k`` and ``sum_k q_k shifted_k``.

    Both terms are >= 0, so nothing cancels; an item with no mass costs exactly 0.
    """
    return xp.where(mass == 0, 0, mass * s0 - dot)


def index_cross(xp: Any, hit: Array, label: Array, spread_mass: Any, dense: Array | None,
                s0: Array) -> Array:
    """``sum_k q_k (s0 - shifted_k)`` of class-index targets, from the gathered sums.

    ``label`` is the label's shifted logit, ``dense`` the smoothing's
    ``sum_k spread_k shifted_k`` (None without smoothing). ``hit`` is one
    mass per item, or one number for all of them.
    """
    if isinstance(hit, float):  # no item without mass: no 0 * inf to guard against
        loss = s0 - label
        if hit != 1:
            loss = hit * loss if hit else xp.zeros_like(s0)
    else:
        loss = xp.where(hit == 0, 0, hit * (s0 - label))
    if dense is not None:
        loss = loss + cross_from_sums(xp, spread_mass, s0, dense)
    return loss


def chunk_labels(xp: Any, labels: Array, lo: int, width: int) -> tuple[Array, Array]:
    """Which labels fall in the classes ``lo:lo + width``, and their column there (clipped)."""
    local = labels - lo
    owned = (local >= 0) & (local < width)
    return owned, xp.clip(local, 0, width - 1)


class ClassIndices:
    """Class-index targets as ``q = (1 - eps) w[y] e_y + (eps / C) w``; ignored items carry none.

    Per-item arrays are flat, one entry per item in C order. ``hit`` is each
    item's mass on its label, ``spread`` the smoothing's mass per class (one
    number without weights, else a vector; None without smoothing) and
    ``mass`` their sum. ``uniform_hit`` is the one value of ``hit`` when every
    item has it (no weights, nothing ignored), else None: the dense pass then
    works with a number instead of an array, and ``hit`` and ``mass`` are only
    made when asked for.
    """

    probabilities = None

    def __init__(self, xp: Any, labels: Array, weight: Array | None, num_classes: int,
                 ignore_index: int | None, label_smoothing: float, dtype: Any) -> None:
        self.xp = xp
        labels = labels.reshape(-1)
        self.valid = None if ignore_index is None else labels != ignore_index
        # An ignored item points at class 0 so that gathering stays in bounds; its mass is 0.
        self.labels = labels if self.valid is None else xp.where(self.valid, labels, 0)
        self.dtype = dtype
        self.uniform_hit = None
        if weight is None and self.valid is None:
            self.count = labels.size
            self.uniform_hit = 1 - label_smoothing
            self.uniform_mass = self.uniform_hit + label_smoothing
        else:
            label_weight = (xp.ones(labels.shape, dtype=dtype) if weight is None
                            else weight[self.labels])
            label_weight = self.on_items(label_weight)
            self.count = xp.sum(label_weight)
            self.hit = (1 - label_smoothing) * label_weight
        self.spread: Array = None
        self.spread_mass: Any = 0
        if label_smoothing > 0:
            self.spread = label_smoothing / num_classes
            self.spread_mass = xp.asarray(label_smoothing, dtype=dtype)
            if weight is not None:
                self.spread = self.spread * weight
                self.spread_mass = xp.sum(self.spread)

    @functools.cached_property
    def hit(self) -> Array:
        """Each item's mass on its label (set in ``__init__`` unless it is uniform)."""
        return self.xp.full(self.labels.shape, self.uniform_hit, dtype=self.dtype)

    @functools.cached_property
    def mass(self) -> Array:
        """Each item's ``sum_k q_k``: its label's mass and the smoothing's."""
        if self.spread is None:
            return self.hit
        return self.hit + self.on_items(self.spread_mass)

    def on_items(self, values: Array, items: slice = slice(None)) -> Array:
        """``values`` of the items ``items``, with ignored items set to 0."""
        return values if self.valid is None else self.xp.where(self.valid[items], values, 0)

    def spread_of(self, lo: int, hi: int) -> Array:
        """The smoothing's mass on the classes ``lo:hi``, as a vector."""
        if getattr(self.spread, "ndim", 0) == 1:
            return self.spread[lo:hi]
        return self.xp.full(hi - lo, self.spread, dtype=self.dtype)

    # The dense pass (`xentlib._pass`), block by block.

    def q_block(self, raw: Array, t: Array, scratch: Any) -> Array | None:
        """The smoothing's share: the dense part of ``q`` (the label's is gathered)."""
        return self.spread

    def gather(self, sums: ItemSums, z: Array, m: Array, block: BlockRows) -> None:
        """Each label's shifted logit, read before the block may be overwritten."""
        at = block.starts + self.labels[block.items]
        sums.label = z.reshape(-1)[at] - m

    def dot(self, sums: ItemSums, shifted: Array, q: Array, block: BlockRows) -> None:
        """The smoothing's ``sum_k spread_k shifted_k`` of each row."""
        if q is not None:
            sums.dense = self.xp.empty(shifted.shape[0], dtype=shifted.dtype)
            dense_dot(self.xp, q, shifted, sums.dense)

    def mass_of(self, sums: ItemSums, block: BlockRows) -> Any:
        """Each item's ``sum_k q_k``, known before the pass: one number when uniform."""
        if self.uniform_hit is not None:
            return self.uniform_mass
        return self.mass[block.items]

    def subtract(self, grad: Array, q: Array, block: BlockRows, divisor: Any,
                 scratch: Any) -> None:
        """Subtract ``q / divisor``; ignored rows become exactly 0."""
        items = block.items
        hit = self.hit[items] if self.uniform_hit is None else self.uniform_hit
        grad.reshape(-1)[block.starts + self.labels[items]] -= hit / divisor
        if q is not None:
            grad -= q / divisor
        if self.valid is not None:
            grad[~self.valid[items]] = 0  # even where a NaN logit left 0 * NaN

    def finish(self) -> None:
        """Class indices were checked in full before the pass."""

    def cross(self, sums: ItemSums, s0: Array, block: BlockRows) -> Array:
        """Each item's cross term from its gathered label and smoothing sums."""
        dense = None if self.spread is None else sums.dense
        hit = self.hit[block.items] if self.uniform_hit is None else self.uniform_hit
        return index_cross(self.xp, hit, sums.label, self.spread_mass, dense, s0)


class Probabilities:
    """Targets given as a probability (or any non-negative mass) per class, classes last.

    ``q`` is made one block at a time, so no logits-sized array is ever built.
    ``check``, when given, is the validation of the targets still owed: each
    block is inspected on the way (a min-reduction of data the pass reads
    anyway), and `finish` raises after the pass if one looked wrong.
    """

    def __init__(self, xp: Any, target: Array, weight: Array | None, label_smoothing: float,
                 check: Any = None) -> None:
        self.xp = xp
        self.probabilities = target
        self.check = check
        self.suspect = False
        self.count = math.prod(target.shape[:-1])
        # q = a t + b, with a and b scalars or one entry per class; a is None for q = t.
        self.a: Any = None
        self.b: Any = None
        if label_smoothing > 0:
            self.a = 1 - label_smoothing if weight is None else (1 - label_smoothing) * weight
            self.b = label_smoothing / target.shape[-1]
            self.b = self.b if weight is None else self.b * weight
        elif weight is not None:
            self.a = weight

    def on_items(self, values: Array, items: slice = slice(None)) -> Array:
        """Every item carries its target."""
        return values

    def q_block(self, raw: Array, t: Array, scratch: Any) -> Array | None:
        """``q = a t + b`` of a block (``t`` itself without options); inspects the raw block."""
        if self.check is not None and not bool(raw.min() >= 0):  # NaN fails too
            self.suspect = True
        if self.a is None:
            return t
        q = scratch.get("q", t.shape)
        self.xp.multiply(t, self.a, out=q)
        if self.b is not None:
            q += self.b
        return q

    def gather(self, sums: ItemSums, z: Array, m: Array, block: BlockRows) -> None:
        """Nothing to gather: every class has its own target entry."""

    def dot(self, sums: ItemSums, shifted: Array, q: Array, block: BlockRows) -> None:
        """Each row's mass ``sum_k q_k`` and ``sum_k q_k shifted_k``."""
        sums.mass = self.xp.sum(q, axis=-1)
        sums.dense = self.xp.empty_like(sums.mass)
        dense_dot(self.xp, q, shifted, sums.dense)

    def mass_of(self, sums: ItemSums, block: BlockRows) -> Array:
        """Each item's mass, summed by `dot`."""
        return sums.mass

    def subtract(self, grad: Array, q: Array, block: BlockRows, divisor: Any,
                 scratch: Any) -> None:
        """Subtract ``q / divisor`` from the block's gradient."""
        scaled = scratch.get("q", q.shape)  # q itself when q was made here: it is not needed again
        self.xp.divide(q, divisor, out=scaled)
        grad -= scaled

    def finish(self) -> None:
        """Raise, naming the first offender, if a block held a negative or NaN entry."""
        if self.suspect:
            self.check()

    def cross(self, sums: ItemSums, s0: Array, block: BlockRows) -> Array:
        """Each item's cross term from its mass and dot."""
        return cross_from_sums(self.xp, sums.mass, s0, sums.dense)


def reduction_divisor(xp: Any, count: Any, reduction: str | float, dtype: Any) -> Any:
    """What the sum of the item losses (and their gradients) is divided by.

    ``count`` is the mean's denominator: the summed weight of the non-ignored
    items, or the number of items. Dividing last, as torch does, keeps a tiny
    total weight (1e-310) from overflowing a reciprocal. Nothing to average
    divides by infinity: a mean of 0 and a zero gradient, where torch gives NaN.
    """
    if reduction in ("none", "sum"):
        return 1
    if reduction != "mean":
        return reduction
    count = float(count)  # a Python float divides any dtype without promoting it
    return count if count else math.inf


def divide_total(total: Array, divisor: Any) -> Array:
    """The summed losses divided by the reduction's divisor (a Python number), in their dtype.

    ``total`` is a NumPy scalar or a 0-d array, and so is the result. NumPy 2
    keeps a float32 total float32; the cast is for a library that promotes
    scalars by value and would return float64.
    """
    mean = total / divisor
    return mean if mean.dtype == total.dtype else mean.astype(total.dtype)


def reduce_losses(loss: Array, divisor: Any, reduction: str | float) -> Array:
    """The item losses as the reduction asks: as they are, or summed and divided."""
    if reduction == "none":
        return loss
    return divide_total(loss.sum(), divisor)
