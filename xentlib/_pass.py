"""The fused pass over dense logits: each item's loss and, when asked, its gradient.

It costs one ``exp`` per logit and a few cheap sweeps (argmax, subtract, sum,
and for the gradient one multiply), the exponentials going straight into the
gradient buffer, which may be the logits themselves. NumPy runs it on row
blocks that stay in cache, on a few threads (`xentlib._blocked`); CuPy runs it
once on the whole array (`xentlib._namespace.in_row_blocks` decides). Each
block goes through named steps: `Pass._shift`, `Pass._exponentials`,
`Pass._keep_rest` and, for the gradient, `Pass._gradient`. The item losses
are made after the pass (`Pass.losses`) from the statistics it kept, in the
form of `xentlib._lse`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _blocked
from ._lse import finite_shift, grad_coefficient, item_losses, log_sum_exp, split_top
from ._namespace import errstate, in_row_blocks
from ._targets import BlockRows, ItemSums, Target

Array = Any

__all__ = ["Pass"]

_LOG_FLOAT32_MAX = math.log(float(np.finfo(np.float32).max))


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

    Per item it keeps the shift ``m`` and the rest ``r`` of `xentlib._lse`
    (``sum_k exp(z_k - m) = 1 + r``) and the target's gathered sums. The
    gradient of a block is finished while its exponentials are still in cache.

    ``z`` (logits), ``grad`` and the target's probabilities have their classes
    last; ``grad`` may be ``z`` itself, since each block is read before it is
    written. Blocks in another dtype than ``dtype`` are converted on the way.
    The gradient is divided by ``divisor``, the reduction's.
    """

    def __init__(self, xp: Any, z: Array, target: Target, dtype: Any, z_loss: float = 0.0,
                 grad: Array | None = None, divisor: Any = 1) -> None:
        self.xp, self.target, self.dtype = xp, target, dtype
        self.z_loss, self.divisor = z_loss, divisor
        self.batch_shape, num_classes = z.shape[:-1], z.shape[-1]
        n = math.prod(self.batch_shape)
        probabilities = target.probabilities
        arrays = [a for a in (z, probabilities, grad) if a is not None]
        if all(a.ndim <= 2 or a.flags.c_contiguous for a in arrays):
            layout: tuple[int, ...] = (n,)  # rows of one 2-d view each
            z, probabilities, grad = (None if a is None else a.reshape(n, num_classes)
                                      for a in (z, probabilities, grad))
        else:
            layout = self.batch_shape  # blocks of the batch, copied into rows on the way
        self.z, self.probabilities, self.grad = z, probabilities, grad
        self.top = xp.empty(n, dtype=xp.intp)
        self.m, self.rest = xp.empty(n, dtype=dtype), xp.empty(n, dtype=dtype)
        self.sums = ItemSums(xp, n, dtype)
        # float64's exp is not vectorized on most CPUs: its shift costs little, and its
        # callers expect the last bits; float32 skips the shift where it is not needed.
        self.unshifted_max = None
        if dtype == xp.float32:
            self.unshifted_max = _LOG_FLOAT32_MAX - math.log(num_classes) - 1
        rows = _blocked.rows_per_block(num_classes * dtype.itemsize) if in_row_blocks(xp) else n
        self.blocks = list(_blocked.row_blocks(layout, rows)) if n else []
        self.scratch_size = min(rows, n) * num_classes

    def run(self) -> Pass:
        """Go over every block, then let the target raise what it found."""

        def scratch() -> _Scratch:
            """One thread's buffers."""
            return _Scratch(self.xp, self.scratch_size, self.dtype)

        # -inf logits make 0 * inf, +inf logits inf - inf: the NaNs they leave are the
        # documented result or are discarded by `where`; neither is worth a warning.
        def quiet() -> Any:
            """One thread's error state."""
            return errstate(self.xp, invalid="ignore", divide="ignore", over="ignore")

        _blocked.for_each_block(self.blocks, self._block, scratch, quiet)
        self.target.finish()
        return self

    def losses(self) -> Array:
        """Each item's loss, shaped like the batch, from the statistics of the pass."""
        target, sums = self.target, self.sums
        with errstate(self.xp, invalid="ignore", divide="ignore"):
            loss = item_losses(self.xp, self.m, self.rest, lambda s0: target.cross(sums, s0),
                               self.z_loss)[0]
        return target.on_items(loss).reshape(self.batch_shape)

    def _read(self, a: Array, index: Any, scratch: _Scratch, name: str) -> Array:
        """Block ``index`` of ``a`` as rows in the working dtype: a view where it can be."""
        part = a[index]
        if part.ndim == 2 and part.dtype == self.dtype:
            return part
        rows = scratch.get(name, part.shape)
        self.xp.copyto(rows, part, casting="unsafe")
        return rows.reshape(-1, part.shape[-1])

    def _block(self, block: tuple[Any, int, int], scratch: _Scratch) -> None:
        """Run the steps on one block: shift, target, exponentials, rest, gradient."""
        # Every NumPy call here costs microseconds of Python whatever the block's size,
        # so the per-block steps are kept few; the per-item ones wait for `losses`.
        xp, target = self.xp, self.target
        index, start, stop = block
        z = self._read(self.z, index, scratch, "z")
        rows = BlockRows(slice(start, stop), xp.arange(z.shape[0]),
                         z.argmax(axis=-1, out=self.top[start:stop]))
        m, safe = self._shift(z, rows)
        t = None
        if self.probabilities is not None:
            t = self._read(self.probabilities, index, scratch, "t")
        q = target.q_block(None if t is None else self.probabilities[index], t, scratch)
        target.gather(self.sums, z, m, rows)
        part = None if self.grad is None else self.grad[index]
        if part is not None and part.ndim == 2 and part.dtype == self.dtype:
            e, part = part, None  # the exponentials go straight into the gradient
        else:
            e = scratch.get("e", z.shape)
        unshifted = self._exponentials(z, m, q, safe, e, rows)
        e_top, rest = self._keep_rest(e, rows, unshifted)
        if self.grad is None:
            return
        self._gradient(e, q, e_top, rest, rows, scratch)
        if part is not None:
            xp.copyto(part, e.reshape(part.shape), casting="unsafe")

    def _shift(self, z: Array, rows: BlockRows) -> tuple[Array, Any]:
        """Each row's shift (its max where finite, else 0) and the rows that can skip it.

        With a row max in ``[0, unshifted_max]``, ``exp(z)`` cannot overflow
        (nor can the row's sum) and underflows no sooner than ``exp(z - m)``,
        so the subtraction, a full sweep over the block, can be skipped. Only
        for float32; None where every row is shifted, True where none is.
        """
        top = z[rows.r, rows.top]
        m = self.m[rows.items]
        # Two reductions settle the common block (every max finite, all in range or none).
        low, high = float(top.min()), float(top.max())
        finite = -math.inf < low and high < math.inf  # False for NaN too
        m[...] = top if finite else finite_shift(top, self.xp)
        if self.unshifted_max is None or high < 0 or low > self.unshifted_max:
            return m, None
        if finite and low >= 0 and high <= self.unshifted_max:
            return m, True
        return m, (top >= 0) & (top <= self.unshifted_max)

    def _exponentials(self, z: Array, m: Array, q: Array | None, safe: Array | None, e: Array,
                      rows: BlockRows) -> Any:
        """Write the block's exponentials into ``e``; return which rows went unshifted.

        True for all of them, None for none, else a mask; ``safe`` is what
        `_shift` found, in the same form. A target with a dense part (``q``)
        needs the shifted logits: then every row is shifted, and the target's
        sums are taken on the way.
        """
        xp = self.xp
        if q is not None or safe is None or not (safe is True or bool(safe.any())):
            xp.subtract(z, m[:, None], out=e)
            self.target.dot(self.sums, e, q, rows)
            xp.exp(e, out=e)
            return None
        if safe is True or bool(safe.all()):
            xp.exp(z, out=e)
            return True
        xp.subtract(z, xp.where(safe, 0, m)[:, None], out=e)
        xp.exp(e, out=e)
        return safe

    def _keep_rest(self, e: Array, rows: BlockRows, unshifted: Any) -> tuple[Array, Array]:
        """Keep each row's rest ``r``; return its top term and the sum of the others.

        Unshifted rows are kept as if shifted: the top's term 1, the others
        divided by ``e^m``. ``e`` is left with 0 at each row's top.
        """
        xp = self.xp
        e_top, rest = split_top(e, rows.top, xp)
        if unshifted is None:
            self.rest[rows.items] = (e_top - 1) + rest
        elif unshifted is True:
            self.rest[rows.items] = rest / e_top
        else:
            self.rest[rows.items] = xp.where(unshifted, rest / e_top, (e_top - 1) + rest)
        return e_top, rest

    def _gradient(self, e: Array, q: Array | None, e_top: Array, rest: Array, rows: BlockRows,
                  scratch: _Scratch) -> None:
        """Turn a block's exponentials into ``((mass + 2 c LSE) softmax - q) / divisor``.

        The top's share is ``e_top / total <= 1``, taken as a ratio so that
        ``p_y - 1`` cannot round to the wrong sign. A row with a +inf or NaN
        logit is NaN throughout; a fully masked row (every logit -inf) is 0.
        """
        xp, items = self.xp, rows.items
        total = e_top + rest
        dead = total == 0
        total = xp.where(dead, 1, total)
        lse = log_sum_exp(xp, self.m[items], self.rest[items])[1] if self.z_loss else 0
        mass = self.target.mass_of(self.sums, rows)
        coefficient = grad_coefficient(mass, lse, self.z_loss, self.divisor)
        xp.multiply(e, (coefficient / total)[:, None], out=e)
        e[rows.r, rows.top] = coefficient * (e_top / total)
        undefined = ~xp.isfinite(total)
        if bool(undefined.any()):
            e[undefined] = xp.nan
        self.target.subtract(e, q, rows, self.divisor, scratch)
        if bool(dead.any()):
            e[dead] = 0
