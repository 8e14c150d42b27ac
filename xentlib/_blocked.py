"""Row blocks and worker threads: how the NumPy path walks over the logits.

Computing a loss over an ``(N, C)`` array one NumPy call at a time makes every
step (shift, exp, sum, scale) a pass over memory and a logits-sized temporary.
Cutting the rows into blocks of about ``BLOCK_BYTES`` instead keeps a block in
the core's cache while all the steps run over it, and lets each thread reuse
one small scratch buffer for every block. NumPy releases the GIL inside its
ufuncs, so a few threads that each take the next block keep that many cores
busy on ``exp``, which is most of the time.

Both settings are module attributes so that a test (or a user) can change them:
``BLOCK_BYTES`` is the working-set budget of one block, ``THREADS`` the number
of threads, the caller's included.
"""

import contextlib
import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["BLOCK_BYTES", "THREADS", "for_each_block", "row_blocks", "rows_per_block"]

BLOCK_BYTES = 1 << 20
THREADS = min(2, os.cpu_count() or 1)

_pool = None
_pool_key = None
_pool_lock = threading.Lock()


def rows_per_block(row_bytes, columns_per_row=1):
    """How many rows of ``row_bytes`` bytes fit the block budget (at least one).

    ``columns_per_row`` is how many such rows a block keeps at once (logits,
    exp buffer, probabilities), so that their sum stays near the budget.
    """
    return max(1, BLOCK_BYTES // max(1, row_bytes * columns_per_row))


def row_blocks(batch_shape, max_rows):
    """Split the items of ``batch_shape`` (C order) into runs of at most ``max_rows``.

    Yields ``(index, start, stop)``: ``array[index]`` is the run's items (the
    leading axes fixed, one axis sliced, the rest whole) and ``start:stop`` is
    where they sit in the flattened batch. A batch that is already one axis
    gives plain row slices.
    """
    if math.prod(batch_shape) == 0:
        return
    if len(batch_shape) == 1:  # the usual case, kept cheap: it runs on every call
        for start in range(0, batch_shape[0], max_rows):
            stop = min(start + max_rows, batch_shape[0])
            yield (slice(start, stop),), start, stop
        return
    split = len(batch_shape) - 1
    inner = 1
    while split > 0 and inner * batch_shape[split] <= max_rows:
        inner *= batch_shape[split]
        split -= 1
    step = max(1, max_rows // inner)
    start = 0
    for outer in itertools.product(*map(range, batch_shape[:split])):
        for first in range(0, batch_shape[split], step):
            last = min(first + step, batch_shape[split])
            stop = start + (last - first) * inner
            yield (*outer, slice(first, last)), start, stop
            start = stop


def _executor(workers):
    """A pool of ``workers`` threads, made again after a fork (a child inherits no threads)."""
    global _pool, _pool_key
    key = (os.getpid(), workers)
    with _pool_lock:
        if _pool_key != key:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xentlib")
            _pool_key = key
        return _pool


def for_each_block(blocks, work, scratch, context=contextlib.nullcontext):
    """Call ``work(block, buffers)`` for every block, on up to ``THREADS`` threads.

    ``scratch()`` makes one thread's buffers; each thread makes them once and
    reuses them for every block it takes. ``context()`` is entered once per
    thread around its blocks (NumPy's error state, for one, is per thread).
    Threads take the next block as they finish the last, so a core slowed by
    other work simply takes fewer. The calling thread works too; the first
    exception is raised once all stop.
    """
    blocks = list(blocks)
    threads = max(1, min(THREADS, len(blocks)))
    claim = iter(blocks).__next__  # next() on a list iterator is atomic under the GIL

    def worker():
        """Take blocks until none is left, with this thread's buffers and context."""
        buffers = scratch()
        with context():
            for block in iter(claim, None):
                work(block, buffers)

    if threads == 1:
        return worker()
    futures = [_executor(threads - 1).submit(worker) for _ in range(threads - 1)]
    try:
        worker()
    finally:
        for future in futures:
            future.result()
    return None

