"""The fused pass over dense logits: each item's loss and, when asked, its gradient.

It costs one ``exp`` per logit and a few cheap sweeps (argmax, subtract, sum,
and for the gradient one multiply), the exponentials going straight into the
gradient buffer, which may be the logits themselves. NumPy runs it on row
blocks that stay in cache, on a few threads (`xentlib._blocked`); CuPy runs it
once on the whole array (`xentlib._namespace.in_row_blocks` decides). Each
block goes through named steps: `Pass._shift`, `Pass._exponentials`,
`Pass._keep_rest`, `Pass._losses` and, for the gradient, `Pass._gradient`.
Each block makes its items' losses from its own statistics, in the form of
`xentlib._lse`, and keeps them or only their sum: nothing the size of the
batch is made unless the caller asks for every item's loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _blocked
from ._lse import (
    SHORT_ROW,
    finite_shift,
    grad_coefficient,
    item_losses,
    short_row_max,
    split_ones,
    split_top,
)
from ._namespace import errstate, in_row_blocks
from ._targets import BlockRows, ItemSums, Target, divide_total

Array = Any

__all__ = ["Pass"]

_LOG_FLOAT32_MAX = math.log(float(np.finfo(np.float32).max))
# Below this many logits a block always subtracts its shift: two reductions over the row
# maxes cost about as much as a subtraction over 2**14 logits (measured on NumPy 2.4).
_UNSHIFTED_SIZE = 1 << 14
# What a block's own arrays take per item besides its logits: the shift, the rest, the
# label's logit, the loss and the like, and int64 positions. At ten classes they are as large
# as the logits, and the block's budget counts them.
_ITEM_BYTES = 64
# Short rows are reduced column by column (`_shift`) in blocks of at least this many rows:
# about where C - 1 calls of a microsecond each beat one row reduction at some 4 ns a logit,
# for ten classes.
_COLUMNS_FROM_ROWS = 256


class _Scratch:
    """One thread's reusable buffers, each made on first use, big enough for any block."""

    def __init__(self, xp: Any, size: int, dtype: Any) -> None:
        self.xp, self.size, self.dtype = xp, size, dtype
        self.arrays: dict[str, Array] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> Array:
        """The buffer ``name`` as an array of ``shape``."""
        if name not in self.arrays:
            self.arrays[name] = self.xp.empty(self.size, dtype=self.dtype)
        return self.arrays[name][: math.prod(shape)].reshape(shape)


class Pass:
    """One pass over the logits: each item's loss and, when ``grad`` is given, its gradient.

    Per item of a block it finds the shift ``m`` and the rest ``r`` of
    `xentlib._lse` (``sum_k exp(z_k - m) = 1 + r``) and the target's gathered
    sums, and from them the item's loss; the gradient of a block is finished
    while its exponentials are still in cache.

    ``z`` (logits), ``grad`` and the target's probabilities have their classes
    last; ``grad`` may be ``z`` itself, since each block is read before it is
    written. Blocks in another dtype than ``dtype`` are converted on the way.
    The gradient, and the sum of the losses, are divided by ``divisor``, the
    reduction's.
    """

    def __init__(self, xp: Any, z: Array, target: Target, dtype: Any, z_loss: float = 0.0,
                 grad: Array | None = None, divisor: Any = 1) -> None:
        self.xp, self.target, self.dtype = xp, target, dtype
        self.z_loss, self.divisor = z_loss, divisor
        self.batch_shape, num_classes = z.shape[:-1], z.shape[-1]
        n = math.prod(self.batch_shape)
        views: tuple[Array, ...] = (z, target.probabilities, grad)
        layout: tuple[int, ...] = (n,)  # rows of one 2-d view each
        if z.ndim != 2:  # every view has the shape of z
            if all(a is None or a.flags.c_contiguous for a in views):
                views = tuple(None if a is None else a.reshape(n, num_classes) for a in views)
            else:
                layout = self.batch_shape  # blocks of the batch, copied into rows on the way
        self.z, self.probabilities, self.grad = views
        # float64's exp is not vectorized on most CPUs: its shift costs little, and its
        # callers expect the last bits; float32 skips the shift where it is not needed.
        self.unshifted_max = None
        if dtype.type is xp.float32:
            self.unshifted_max = _LOG_FLOAT32_MAX - math.log(num_classes) - 1
        row_bytes = num_classes * dtype.itemsize + _ITEM_BYTES
        rows = _blocked.rows_per_block(row_bytes) if in_row_blocks(xp) else n
        self.blocks = list(enumerate(_blocked.row_blocks(layout, rows)))
        self.scratch_size = min(rows, n) * num_classes
        # What each block keeps (`_keep`): its item losses, or only their sum. Several
        # blocks write their item losses into ``each_item``; one block keeps its own array.
        self.keep_items = False
        self.each_item: Array = None
        self.kept: list[Any] = [None] * len(self.blocks)

    def reduced(self, reduction: str | float) -> Array:
        """The losses as ``reduction`` asks: each item's, shaped like the batch, or their
        sum divided by the divisor.

        Each block adds up its own items; the blocks' sums are added in block
        order, so the result does not depend on which thread took which block.
        The target raises after the pass what it found wrong on the way.
        """
        xp, one = self.xp, len(self.blocks) == 1
        self.keep_items = reduction == "none"
        if self.keep_items and not one:
            self.each_item = xp.empty(math.prod(self.batch_shape), dtype=self.dtype)
        self._run()
        if self.keep_items:
            return (self.kept[0] if one else self.each_item).reshape(self.batch_shape)
        if one:
            total = self.kept[0]
        elif self.blocks:
            total = xp.sum(xp.stack(self.kept))
        else:  # no item at all
            total = xp.zeros((), dtype=self.dtype)
        return divide_total(total, self.divisor)

    def _run(self) -> None:
        """Go over every block, then let the target raise what it found wrong."""
        if len(self.blocks) == 1:  # a small input: no threads, no pool to ask
            with self._quiet():
                self._block(self.blocks[0], self._scratch())
        elif self.blocks:
            _blocked.for_each_block(self.blocks, self._block, self._scratch, self._quiet)
        self.target.finish()

    def _keep(self, number: int, items: slice, loss: Array) -> None:
        """Keep block ``number``'s item losses (``items`` of the batch), or their sum."""
        if not self.keep_items:
            self.kept[number] = loss.sum()
        elif self.each_item is None:
            self.kept[number] = loss
        else:
            self.each_item[items] = loss

    def _scratch(self) -> _Scratch:
        """One thread's buffers."""
        return _Scratch(self.xp, self.scratch_size, self.dtype)

    def _quiet(self) -> Any:
        """One thread's error state.

        -inf logits make ``0 * inf``, +inf logits ``inf - inf``: the NaNs they
        leave are the documented result or are discarded by ``where``; neither
        is worth a warning. Entering it costs as much as a small array
        operation, so a thread enters it once.
        """
        return errstate(self.xp, invalid="ignore", divide="ignore", over="ignore")

    def _read(self, a: Array, index: Any, scratch: _Scratch, name: str) -> Array:
        """Block ``index`` of ``a`` as C-contiguous rows in the working dtype, a view if it can.
        """
        part = a[index]
        if part.ndim == 2 and part.dtype == self.dtype and part.flags.c_contiguous:
            return part
        rows = scratch.get(name, part.shape)
        self.xp.copyto(rows, part, casting="unsafe")
        return rows.reshape(-1, part.shape[-1])

    def _block(self, block: tuple[int, tuple[Any, int, int]], scratch: _Scratch) -> None:
        """Run the steps on one block: shift, target, exponentials, rest, losses, gradient."""
        # Every NumPy call here costs microseconds of Python whatever the block's size,
        # so the steps are kept few: a small input is one block, and pays for each.
        xp, target = self.xp, self.target
        number, (index, start, stop) = block
        z = self._read(self.z, index, scratch, "z")
        rows, m, regular, unshifted = self._shift(z, slice(start, stop))
        t = None
        if self.probabilities is not None:
            t = self._read(self.probabilities, index, scratch, "t")
        q = target.q_block(None if t is None else self.probabilities[index], t, scratch)
        sums = ItemSums()
        target.gather(sums, z, m, rows)
        part = None if self.grad is None else self.grad[index]
        if (part is not None and part.ndim == 2 and part.dtype == self.dtype
                and part.flags.c_contiguous):
            e, part = part, None  # the exponentials go straight into the gradient
        else:
            e = scratch.get("e", z.shape)
        unshifted = self._exponentials(z, m, q, unshifted, e, rows, sums)
        top_is_one = regular and not unshifted
        e_top, rest, r = self._keep_rest(e, rows, top_is_one, unshifted, scratch)
        loss, lse = self._losses(m, r, sums, rows, regular)
        self._keep(number, rows.items, loss)
        if self.grad is None:
            return
        self._gradient(e, q, e_top, rest, lse, rows, sums, scratch, regular, top_is_one)
        if part is not None:
            xp.copyto(part, e.reshape(part.shape), casting="unsafe")

    def _shift(self, z: Array, items: slice) -> tuple[BlockRows, Array, bool, bool]:
        """The block's rows, their shifts, and whether the block is regular and may skip them.

        Each row's shift is its max where finite, else 0. A block is regular
        when every row's max is finite: no row is fully masked and none holds
        +inf or NaN, so no later step needs to look for them. A regular block of
        short rows (`xentlib._lse.SHORT_ROW`), at least `_COLUMNS_FROM_ROWS` of
        them, takes its maxes column by column and never looks up where they are
        (its ``BlockRows.top`` is None): see `_keep_rest`. With every row max in
        ``[0, unshifted_max]``, ``exp(z)`` cannot overflow (nor can a row's sum)
        and underflows no sooner than ``exp(z - m)``, so the subtraction, a full
        sweep over the block, can be skipped. Only for float32 blocks of at
        least `_UNSHIFTED_SIZE` logits, where the sweep costs more than the two
        reductions that allow it.
        """
        xp, num_classes = self.xp, z.shape[1]
        if num_classes <= SHORT_ROW and z.shape[0] >= _COLUMNS_FROM_ROWS:
            top = short_row_max(z, xp)
            if math.isfinite(top.sum()):
                return BlockRows.of(xp, items, None, num_classes), top, True, False
        rows = BlockRows.of(xp, items, z.argmax(axis=-1), num_classes)
        top = z.reshape(-1)[rows.top_at]
        unshifted = False
        if self.unshifted_max is not None and z.size >= _UNSHIFTED_SIZE:
            low, high = float(top.min()), float(top.max())
            unshifted = 0 <= low and high <= self.unshifted_max
            regular = -math.inf < low and high < math.inf  # False for NaN too
        else:
            # A finite sum proves every term finite; one that overflows only costs the
            # irregular path, which is right for any block.
            regular = math.isfinite(top.sum())
        return rows, top if regular else finite_shift(top, xp), regular, unshifted

    def _exponentials(self, z: Array, m: Array, q: Array | None, unshifted: bool, e: Array,
                      rows: BlockRows, sums: ItemSums) -> bool:
        """Write the block's exponentials into ``e``; return whether they went unshifted.

        ``unshifted`` is what `_shift` allowed. A target with a dense part
        (``q``) needs the shifted logits: then the rows are shifted, and the
        target's sums are taken on the way.
        """
        xp = self.xp
        if unshifted and q is None:
            xp.exp(z, out=e)
            return True
        xp.subtract(z, m[:, None], out=e)
        self.target.dot(sums, e, q, rows)
        xp.exp(e, out=e)
        return False

    def _keep_rest(self, e: Array, rows: BlockRows, top_is_one: bool, unshifted: bool,
                   scratch: _Scratch) -> tuple[Any, Array, Array]:
        """Each row's top term, the sum of the others, and its rest ``r``.

        ``top_is_one`` when every row was shifted by its finite max, whose term
        is then exactly 1. Unshifted rows are kept as if shifted: the top's
        term 1, the others divided by ``e^m``. ``e`` is left with 0 at each
        row's top, except where the block never looked its tops up (short
        rows, `_shift`): there `split_ones` leaves ``e`` whole for the gradient,
        and without one leaves only the terms below 1.
        """
        if rows.top is None:
            # Without a gradient, ``e`` is not read again: the terms below 1 go in its place.
            work = e if self.grad is None else scratch.get("ones", e.shape)
            e_top, rest = 1, split_ones(e, self.xp, work)
        else:
            e_top, rest = split_top(e, rows.top, self.xp, top_is_one, rows.top_at)
        if unshifted:
            return e_top, rest, rest / e_top
        return e_top, rest, rest if top_is_one else (e_top - 1) + rest

    def _losses(self, m: Array, r: Array, sums: ItemSums, rows: BlockRows,
                regular: bool) -> tuple[Array, Array]:
        """The block's item losses (0 for items that carry no target), and their LSE."""
        target = self.target
        loss, _, lse = item_losses(self.xp, m, r, lambda s0: target.cross(sums, s0, rows),
                                   self.z_loss, regular)
        return target.on_items(loss, rows.items), lse

    def _gradient(self, e: Array, q: Array | None, e_top: Any, rest: Array, lse: Array,
                  rows: BlockRows, sums: ItemSums, scratch: _Scratch, regular: bool,
                  top_is_one: bool) -> None:
        """Turn a block's exponentials into ``((mass + 2 c LSE) softmax - q) / divisor``.

        The top's share is ``e_top / total <= 1``, taken as a ratio so that
        ``p_y - 1`` cannot round to the wrong sign. A row with a +inf or NaN
        logit is NaN throughout; a fully masked row (every logit -inf) is 0.
        A regular block (`_shift`) has neither, and skips looking for them;
        ``top_is_one`` as for `_keep_rest`.
        """
        xp = self.xp
        total = e_top + rest
        dead = None if regular else total == 0
        if dead is not None:
            total = xp.where(dead, 1, total)
        mass = self.target.mass_of(sums, rows)
        coefficient = grad_coefficient(mass, lse, self.z_loss, self.divisor)
        factor = coefficient / total
        xp.multiply(e, factor[:, None], out=e)
        if rows.top is not None:  # put back the top's share, which `_keep_rest` took out
            e.reshape(-1)[rows.top_at] = factor if top_is_one else coefficient * (e_top / total)
        if not regular:
            undefined = ~xp.isfinite(total)
            if bool(undefined.any()):
                e[undefined] = xp.nan
        self.target.subtract(e, q, rows, self.divisor, scratch)
        if dead is not None and bool(dead.any()):
            e[dead] = 0
