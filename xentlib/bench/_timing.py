"""How the benchmark measures: interleaved rounds, adaptive calls per sample, peak memory.

Every method is sampled once per round, the order rotating from round to
round, so that a machine that slows down for a while slows every method
alike; the time reported is the median of the rounds. A sample of a fast call
repeats it until the sample lasts ``min_seconds``, so that the timer's
resolution and the loop's own cost do not dominate tiny sizes.
"""

import math
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from ._methods import _Method

_T = TypeVar("_T")


class _Progress:
    """Steps of a run counted on a tqdm bar on stderr, or silently when not ``enabled``.

    tqdm is imported only when a bar is drawn, so that the benchmark's
    functions run without it.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        """Open a bar of ``total`` steps (none when not ``enabled``)."""
        self.total, self.done = total, 0
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError as error:
                msg = "progress=True needs tqdm: pip install 'xentlib[bench]'"
                raise ImportError(msg) from error
            self._bar = tqdm(total=total, file=sys.stderr, unit="step", mininterval=0.5,
                             dynamic_ncols=True)

    def step(self, label: str) -> None:
        """Count one step, shown with ``label``."""
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update()

    def __enter__(self) -> "_Progress":
        """The bar itself."""
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        """Close the bar, which ends its line."""
        if self._bar is not None:
            self._bar.close()


def _peak_bytes(call: Callable[[], _T]) -> tuple[int, _T]:
    """``(peak bytes allocated during call(), its result)``, beyond what existed before."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, result


def _peak_extra(method: _Method, nbytes: int) -> float:
    """Peak memory allocated by one call, beyond what existed before, in ``nbytes``."""
    if method.prepare is not None:
        method.prepare()
    return _peak_bytes(method.call)[0] / nbytes


def _warm_up(method: _Method) -> float:
    """Call ``method`` once, prepared, untimed by the caller; return the call's seconds."""
    if method.prepare is not None:
        method.prepare()
    start = time.perf_counter()
    method.call()
    return time.perf_counter() - start


def _calls_per_sample(method: _Method, min_seconds: float) -> int:
    """How many back-to-back calls of ``method`` last ``min_seconds`` (1 if it has a prepare).

    A first call warms the method up (threads, page faults) and is not
    counted, unless it took a tenth of a second and ten times ``min_seconds``:
    a call that slow needs no company, and large logits are not timed twice
    for nothing. Each next batch is sized from the last one's time, until a
    batch lasts long enough.
    """
    once = _warm_up(method)
    if method.prepare is not None or once >= max(0.1, 10 * min_seconds):
        return 1
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            method.call()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls
        calls = max(calls + 1, math.ceil(calls * min_seconds / max(elapsed, 1e-9)))


def _sample(method: _Method, calls: int) -> float:
    """Seconds per call over ``calls`` back-to-back calls (one prepared call if it has one)."""
    if method.prepare is not None:
        method.prepare()
    start = time.perf_counter()
    for _ in range(calls):
        method.call()
    return (time.perf_counter() - start) / calls


def _interleaved(table: Mapping[str, _Method], rounds: int, calls: Mapping[str, int],
                 progress: _Progress, label: str) -> dict[str, list[float]]:
    """Seconds per call of each method, one sample per round, the order rotating each round."""
    names = list(table)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names):] + names[: i % len(names)]:
            times[name].append(_sample(table[name], calls[name]))
            progress.step(f"{label} {name}")
    return times


def _median(times: Mapping[str, list[float]]) -> dict[str, float]:
    """The median of each method's samples."""
    return {name: statistics.median(ts) for name, ts in times.items()}
