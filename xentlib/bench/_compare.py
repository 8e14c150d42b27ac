"""``bench.run``: every method on the same logits at one size, with ratios and peak memory."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ._methods import (
    OPTIONS,
    _import_torch,
    _logits,
    _Method,
    _methods,
    _option_methods,
    _TorchLogits,
)
from ._timing import _interleaved, _median, _peak_extra, _Progress, _warm_up

__all__ = ["OPTIONS", "run"]


def run(classes: Sequence[int] = (1000, 8192), elements: int = 1 << 20, repeat: int = 5, *,
        dtype: str = "float32", seed: int = 0, methods: Sequence[str] | None = None,
        use_torch: bool = True, progress: bool = False) -> list[dict[str, Any]]:
    """Time every method on ``(elements // C, C)`` logits for each ``C``; return one dict per pair.

    Parameters
    ----------
    classes : sequence of int
        The class counts ``C``; the rows are ``N = elements // C`` (at least 1).
    elements : int
        ``N * C``, the same for every ``C`` so that times compare.
    repeat : int
        Interleaved rounds, one timed call of each method per round; the
        median is reported.
    dtype : str
        Of the logits, ``"float32"`` or ``"float64"``.
    seed : int
        For the standard normal logits and uniform labels.
    methods : sequence of str, optional
        A subset of the method names (all by default). The exp floor and the
        baselines their ratios need are kept; an unknown name raises
        ValueError.
    use_torch : bool
        Compare with torch when it can be imported (default True).
    progress : bool
        Draw a progress bar on stderr (needs tqdm).

    Returns
    -------
    list of dict
        One per (C, method): ``classes``, ``rows``, ``dtype``, ``method``,
        ``kind``, ``option`` (the xentlib option it measures, or None),
        ``seconds`` (median), ``times`` (all), ``baseline`` (the
        method its ratio divides by), ``ratio`` (to it), ``floor_ratio`` (to
        the exp floor) and ``memory`` (peak extra memory in logits' sizes, or
        None where tracemalloc cannot see it).

    Examples
    --------
    >>> from xentlib import bench
    >>> rows = bench.run(classes=[64], elements=1 << 12, repeat=1, use_torch=False)
    >>> sorted({r["kind"] for r in rows})
    ['floor', 'loss', 'loss+grad']
    """
    torch = _import_torch() if use_torch else None
    baselines = {"loss": "torch", "loss+grad": "torch + backward"} if torch is not None else {
        "loss": "numpy stable", "loss+grad": "numpy stable + grad"}
    rng = np.random.default_rng(seed)
    problems = []
    for num_classes in classes:
        rows = max(1, elements // num_classes)
        z = _logits(rng, rows, num_classes, dtype)
        y = rng.integers(0, num_classes, size=rows)
        torch_logits = None if torch is None else _TorchLogits(torch, z)
        table = _methods(z, y, torch_logits) | _option_methods(z, y, rng, torch_logits)
        keep = _with_baselines([*(methods or table), "exp floor"], table, baselines)
        problems.append((z, {name: m for name, m in table.items() if name in keep}))
    # a warm-up step and `repeat` timed rounds per method
    total = sum(len(table) * (1 + repeat) for _, table in problems)
    results = []
    with _Progress(total, progress) as bar:
        for z, table in problems:
            results.extend(_time_problem(z, table, repeat, baselines, bar))
    return results


def _baseline(method: _Method, baselines: Mapping[str, str]) -> str | None:
    """The method whose time ``method``'s ratio divides by, or None (the exp floor)."""
    return method.baseline or baselines.get(method.kind)


def _with_baselines(names: Iterable[str], table: Mapping[str, _Method],
                    baselines: Mapping[str, str]) -> set[str]:
    """The named methods and, in turn, the baseline that each one's ratio divides by."""
    names = list(names)
    unknown = sorted(set(names) - set(table))
    if unknown:
        msg = f"run: methods = {unknown} are not benchmarked; expected names from {sorted(table)}"
        raise ValueError(msg)
    keep: set[str] = set()
    for name in names:
        current: str | None = name
        while current is not None and current not in keep:
            keep.add(current)
            current = _baseline(table[current], baselines)
    return keep


def _time_problem(z: np.ndarray, table: Mapping[str, _Method], repeat: int,
                  baselines: Mapping[str, str], bar: _Progress) -> list[dict[str, Any]]:
    """One row per method of ``table`` on logits ``z``: warm-up and memory, then timed rounds."""
    memory: dict[str, float | None] = {}
    for name, method in table.items():  # warm up (threads, page faults), memory apart
        _warm_up(method)
        memory[name] = None if name.startswith("torch") else _peak_extra(method, z.nbytes)
        bar.step(f"C={z.shape[1]} warm-up {name}")
    times = _interleaved(table, repeat, dict.fromkeys(table, 1), bar, f"C={z.shape[1]}")
    median = _median(times)
    rows = []
    for name, method in table.items():
        baseline = _baseline(method, baselines)
        rows.append(dict(
            classes=int(z.shape[1]), rows=int(z.shape[0]), dtype=str(z.dtype), method=name,
            kind=method.kind, option=method.option, seconds=median[name], times=times[name],
            baseline=baseline, ratio=median[name] / median[baseline] if baseline else None,
            floor_ratio=median[name] / median["exp floor"], memory=memory[name],
        ))
    return rows
