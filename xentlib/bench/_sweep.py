"""``bench.run_sweep``: how the cost per logit changes as the logits grow from 10^2 to 10^8."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._methods import SWEPT, _core_methods, _import_torch, _logits, _TorchLogits
from ._timing import _calls_per_sample, _interleaved, _median, _Progress

__all__ = ["run_sweep"]


def _sizes(num_classes: int, min_elements: int, max_elements: int) -> list[int]:
    """The powers of ten from ``max(min_elements, num_classes)`` up to ``max_elements``."""
    sizes, size = [], 1
    while size <= max_elements:
        if size >= max(min_elements, num_classes):
            sizes.append(size)
        size *= 10
    return sizes


def run_sweep(classes: Sequence[int] = (10, 1000, 32768), max_elements: int = 10**8,
              repeat: int = 5, *, min_elements: int = 100, min_seconds: float = 0.005,
              dtype: str = "float32", seed: int = 0, use_torch: bool = True,
              progress: bool = False) -> list[dict[str, Any]]:
    """Time xentlib, torch and whole-array NumPy over ``N * C`` at powers of ten, for each ``C``.

    The loss and the loss with its gradient, for each method of the sweep
    (``"xentlib loss"``, ``"xentlib fused"``, ``"numpy stable"``,
    ``"numpy stable + grad"``, and ``"torch"`` and ``"torch + backward"``
    where torch is installed), on standard normal logits of ``N = round(size
    / C)`` rows. Each size is timed in interleaved rounds; a sample repeats a
    call until it lasts ``min_seconds``.

    Parameters
    ----------
    classes : sequence of int
        The class counts ``C``.
    max_elements : int
        The largest ``N * C``; the sizes are the powers of ten from
        ``max(min_elements, C)`` up to it.
    repeat : int
        Interleaved rounds per size; the median is reported.
    min_elements : int
        The smallest ``N * C`` (rounded up to a power of ten).
    min_seconds : float
        The shortest sample: a fast call is repeated back to back until it
        lasts this long, and its time divided by the calls.
    dtype : str
        Of the logits, ``"float32"`` (default) or ``"float64"``.
    seed : int
        For the logits and the uniform labels.
    use_torch : bool
        Time torch too when it can be imported (default True).
    progress : bool
        Draw a progress bar on stderr (needs tqdm).

    Returns
    -------
    list of dict
        One per (C, size, method): ``classes``, ``rows``, ``elements``
        (``N * C``), ``dtype``, ``method``, ``kind`` (``"loss"`` or
        ``"loss+grad"``), ``seconds`` (median per call), ``ns_per_logit``
        (the same over ``N * C``), ``calls`` (per sample) and ``times``
        (seconds per call of each round).

    Examples
    --------
    >>> from xentlib import bench
    >>> rows = bench.run_sweep(classes=[10], max_elements=1000, repeat=1,
    ...                        min_seconds=0, use_torch=False)
    >>> sorted({(r["rows"], r["elements"]) for r in rows})
    [(10, 100), (100, 1000)]
    """
    torch = _import_torch() if use_torch else None
    methods = len(SWEPT) if torch is not None else len(SWEPT) - 2
    grid = [(c, max(1, round(size / c))) for c in classes
            for size in _sizes(c, min_elements, max_elements)]
    rng = np.random.default_rng(seed)
    results = []
    # a calibration step and `repeat` timed rounds per method and size
    with _Progress(len(grid) * methods * (1 + repeat), progress) as bar:
        for num_classes, rows in grid:
            z = _logits(rng, rows, num_classes, dtype)
            y = rng.integers(0, num_classes, size=rows)
            torch_logits = None if torch is None else _TorchLogits(torch, z)
            table = _core_methods(z, y, torch_logits)
            table = {name: table[name] for name in SWEPT if name in table}
            label = f"C={num_classes} N={rows}"
            calls = {}
            for name, method in table.items():
                calls[name] = _calls_per_sample(method, min_seconds)
                bar.step(f"{label} calibrate {name}")
            times = _interleaved(table, repeat, calls, bar, label)
            for name, seconds in _median(times).items():
                results.append(dict(
                    classes=num_classes, rows=rows, elements=z.size, dtype=str(z.dtype),
                    method=name, kind=table[name].kind, seconds=seconds,
                    ns_per_logit=1e9 * seconds / z.size, calls=calls[name], times=times[name]))
            del z, y, torch_logits, table  # before the next, larger, logits are drawn
    return results
