"""Time xentlib against its peers on the same arrays: ``python -m xentlib.bench``.

Every method gets the same float logits of shape ``(N, C)`` with ``N * C``
fixed, and the same labels. Repetitions are interleaved (one call of each
method in turn, the order rotating), so a machine that slows down for a while
slows every method alike; the reported time is the median. Peak extra memory
is measured apart, with `tracemalloc`, as a multiple of the logits' size (NumPy
methods only: torch allocates outside Python's view).

Methods (``kind`` says what each computes):

- ``xentlib fused``, ``xentlib fused in-place``: `xentlib.cross_entropy_with_grad`,
  the gradient in a fresh array or written over the logits (``out=logits``);
- ``xentlib loss``: `xentlib.cross_entropy`;
- ``naive gather``, ``naive one-hot``: `xentlib.naive` softmax, then the
  gathered or one-hot loss, as tutorials write them;
- ``scipy logsumexp``: ``scipy.special.logsumexp(z) - z[y]``;
- ``numpy stable``, ``numpy stable + grad``: the careful whole-array NumPy a user
  would write (max shift, logsumexp, softmax minus one-hot), the baseline when
  torch is missing;
- ``torch`` and ``torch + backward``: ``torch.nn.functional.cross_entropy`` on
  tensors torch allocated itself, with its default threads;
- ``exp floor``: one ``numpy.exp`` of every logit, in cache-sized blocks split
  over xentlib's threads: no NumPy loss can take less;
- ``xentlib loss, <option>`` and ``xentlib in-place, <option>``: the loss, and
  the in-place loss and gradient, with one option of `OPTIONS` (probability
  targets, label smoothing, class weights, ignore_index, z-loss).

Ratios compare each method with the baseline of its kind (torch when it is
installed, and the plain xentlib call for an option) and with the exp floor.

`run` returns the results as a list of dicts, which is how the performance
chapter calls it; `main` adds a progress bar, ``bench.json`` and ``bench.png``.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import _blocked, naive
from .linear import linear_cross_entropy_with_grad
from .loss import cross_entropy, cross_entropy_with_grad

__all__ = ["run", "run_large_vocab", "plot", "table", "table_options", "table_large_vocab", "main"]

OPTIONS = ("probabilities", "label smoothing", "class weights", "ignore_index", "z-loss")
FULL = dict(classes=(1000, 32768, 131072), elements=1 << 23, repeat=15)
QUICK = dict(classes=(1000, 8192), elements=1 << 20, repeat=5)
LARGE_VOCAB = dict(vocabularies=(32768, 131072), rows=4096, width=256, repeat=3)


def _numpy_stable_loss(z, y):
    """The whole-array loss a careful NumPy user writes: shift, logsumexp, gather."""
    shifted = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1))
    return np.mean(lse - shifted[np.arange(len(y)), y])


def _numpy_stable_loss_and_grad(z, y):
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, y])
    grad = e / total
    grad[rows, y] -= 1
    grad /= len(y)
    return loss, grad


def _exp_floor(z):
    """One exp of every logit into per-thread scratch, in blocks, on xentlib's threads."""
    rows = _blocked.rows_per_block(z.shape[1] * z.itemsize)
    blocks = [slice(i, i + rows) for i in range(0, z.shape[0], rows)]

    def work(block, scratch):
        part = z[block]
        np.exp(part, out=scratch[: part.shape[0]])

    _blocked.for_each_block(blocks, work, lambda: np.empty((rows, z.shape[1]), z.dtype))


class _Method(NamedTuple):
    """One timed computation. ``prepare`` runs untimed before each call; ``baseline`` names the
    method its ratio divides by (by default the baseline of its ``kind``); ``option`` is the
    xentlib option it measures, if any."""

    kind: str
    call: Callable
    prepare: Callable | None = None
    baseline: str | None = None
    option: str | None = None


def _methods(z, y, torch_logits):
    """``{name: _Method}`` for the plain problem: class indices, mean, no option."""
    import scipy.special

    rows = np.arange(len(y))
    onehot = np.zeros(z.shape, z.dtype)
    onehot[rows, y] = 1
    work = np.empty_like(z)
    methods = {
        "xentlib fused": _Method("loss+grad", lambda: cross_entropy_with_grad(z, y)),
        "xentlib fused in-place": _Method("loss+grad", lambda: cross_entropy_with_grad(work, y, out=work),
                                          lambda: np.copyto(work, z)),
        "xentlib loss": _Method("loss", lambda: cross_entropy(z, y)),
        "naive gather": _Method("loss", lambda: naive.cross_entropy_gather(naive.softmax(z), y)),
        "naive one-hot": _Method("loss", lambda: naive.cross_entropy_onehot(naive.softmax(z), onehot)),
        "scipy logsumexp": _Method(
            "loss", lambda: np.mean(scipy.special.logsumexp(z, axis=1) - z[rows, y])),
        "numpy stable": _Method("loss", lambda: _numpy_stable_loss(z, y)),
        "numpy stable + grad": _Method("loss+grad", lambda: _numpy_stable_loss_and_grad(z, y)),
        "exp floor": _Method("floor", lambda: _exp_floor(z)),
    }
    if torch_logits is not None:
        methods["torch"], methods["torch + backward"] = torch_logits.methods(y, {})
    return methods


class _TorchLogits:
    """The logits as torch tensors it allocated itself, made once for all of torch's methods."""

    def __init__(self, torch, z):
        self.torch = torch
        # from_numpy memory is only 16-byte aligned, which slows some of torch's kernels.
        self.z = torch.from_numpy(z).clone()
        self.leaf = self.z.clone().requires_grad_()

    def methods(self, target, options):
        """torch's loss, and loss with backward, against ``target`` with ``options``."""
        functional, leaf = self.torch.nn.functional, self.leaf
        target = self.torch.from_numpy(target).clone()
        options = {name: self.torch.from_numpy(v).clone() if isinstance(v, np.ndarray) else v
                   for name, v in options.items()}

        def forward_backward():
            leaf.grad = None
            functional.cross_entropy(leaf, target, **options).backward()

        return (_Method("loss", lambda: functional.cross_entropy(self.z, target, **options)),
                _Method("loss+grad", forward_backward))


def _logits(rng, rows, classes, dtype):
    """Standard normal ``(rows, classes)`` logits of ``dtype`` (drawn in float64, then cast)."""
    return rng.standard_normal((rows, classes), dtype=np.float64).astype(dtype)


def _option_arguments(z, y, rng):
    """``{option: (target, keyword arguments)}`` for each of `OPTIONS`, arrays in ``z.dtype``."""
    probabilities = rng.random(z.shape, dtype=np.float64).astype(z.dtype)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    some_ignored = y.copy()
    some_ignored[::10] = -100
    return {
        "probabilities": (probabilities, {}),
        "label smoothing": (y, dict(label_smoothing=0.1)),
        "class weights": (y, dict(weight=rng.uniform(0.5, 2.0, z.shape[1]).astype(z.dtype))),
        "ignore_index": (some_ignored, dict(ignore_index=-100)),
        "z-loss": (y, dict(z_loss=1e-4)),
    }


def _option_methods(z, y, rng, torch_logits):
    """Each of `OPTIONS` with xentlib's loss and in-place gradient, and torch's where it has it.

    Each ratio divides by the same library's plain call.
    """
    arguments = _option_arguments(z, y, rng)
    work = np.empty_like(z)
    methods = {}
    for option in OPTIONS:
        target, kwargs = arguments[option]
        methods[f"xentlib loss, {option}"] = _Method(
            "loss", lambda t=target, k=kwargs: cross_entropy(z, t, **k),
            baseline="xentlib loss", option=option)
        methods[f"xentlib in-place, {option}"] = _Method(
            "loss+grad", lambda t=target, k=kwargs: cross_entropy_with_grad(work, t, out=work, **k),
            lambda: np.copyto(work, z), baseline="xentlib fused in-place", option=option)
        if torch_logits is not None and option != "z-loss":  # torch has no z-loss
            loss, loss_grad = torch_logits.methods(target, kwargs)
            methods[f"torch, {option}"] = loss._replace(baseline="torch", option=option)
            methods[f"torch + backward, {option}"] = loss_grad._replace(
                baseline="torch + backward", option=option)
    return methods


def _peak_bytes(call):
    """``(peak bytes allocated during call(), its result)``, beyond what existed before."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, result


def _peak_extra(method, nbytes):
    """Peak memory allocated by one call, beyond what existed before, in logits' sizes."""
    if method.prepare is not None:
        method.prepare()
    return _peak_bytes(method.call)[0] / nbytes


class _Progress:
    """A one-line progress bar on stderr (no dependency); silent when ``enabled`` is False."""

    def __init__(self, total, enabled, width=30):
        self.total, self.enabled, self.width, self.done = total, enabled, width, 0
        self.start = time.perf_counter()

    def step(self, label):
        self.done += 1
        if not self.enabled:
            return
        filled = self.width * self.done // self.total
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "." * (self.width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {elapsed:5.0f}s {label:<40.40}")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _import_torch():
    # Idle OpenMP threads that spin (libgomp's default) steal the cores from whichever method
    # runs next, xentlib's threads or torch's own; sleeping threads keep the comparison fair.
    # This only takes effect if torch is not imported yet.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return None
    return torch


def run(classes=QUICK["classes"], elements=QUICK["elements"], repeat=QUICK["repeat"], *,
        dtype="float32", seed=0, methods=None, use_torch=True, progress=False):
    """Time every method on ``(elements // C, C)`` logits for each ``C``; return one dict per pair.

    Parameters
    ----------
    classes : sequence of int
        The class counts ``C``; the rows are ``N = elements // C`` (at least 1).
    elements : int
        ``N * C``, the same for every ``C`` so that times compare.
    repeat : int
        Timed calls per method; the median is reported.
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
        Draw a progress bar on stderr.

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
        problems.append((z, y, {name: m for name, m in table.items() if name in keep}))
    bar = _Progress(sum(len(t) * (repeat + 2) for _, _, t in problems), progress)
    results = []
    for z, y, table in problems:
        results.extend(_time_problem(z, y, table, repeat, baselines, bar))
    return results


def _baseline(method, baselines):
    return method.baseline or baselines.get(method.kind)


def _with_baselines(names, table, baselines):
    """The named methods and, in turn, the baseline that each one's ratio divides by."""
    unknown = sorted(set(names) - set(table))
    if unknown:
        msg = f"run: methods = {unknown} are not benchmarked; expected names from {sorted(table)}"
        raise ValueError(msg)
    keep = set()
    for name in names:
        while name is not None and name not in keep:
            keep.add(name)
            name = _baseline(table[name], baselines)
    return keep


def _time_problem(z, y, table, repeat, baselines, bar):
    names = list(table)
    times = {name: [] for name in names}
    memory = {}
    for name, method in table.items():  # warm up (threads, page faults), then memory apart from timing
        if method.prepare is not None:
            method.prepare()
        method.call()
        memory[name] = None if name.startswith("torch") else _peak_extra(method, z.nbytes)
        bar.step(f"C={z.shape[1]} warm-up {name}")
    for i in range(repeat):
        for name in names[i % len(names):] + names[: i % len(names)]:
            method = table[name]
            if method.prepare is not None:
                method.prepare()
            start = time.perf_counter()
            method.call()
            times[name].append(time.perf_counter() - start)
            bar.step(f"C={z.shape[1]} {name}")
    median = {name: statistics.median(ts) for name, ts in times.items()}
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


def dense_linear_step(hidden, classifier, labels):
    """Loss and gradients of ``hidden @ classifier.T`` the way frameworks do it: logits held whole.

    The most frugal dense version: the gradient is written over the logits,
    so one ``(N, V)`` array exists at a time.
    """
    logits = hidden @ classifier.T
    loss, g = cross_entropy_with_grad(logits, labels, out=logits)
    return loss, g @ classifier, g.T @ hidden


def chunked_linear_step(hidden, classifier, labels):
    """The same with `xentlib.linear_cross_entropy_with_grad`: one vocabulary chunk at a time."""
    return linear_cross_entropy_with_grad(hidden, classifier, labels)


def _large_vocab_arrays(rng, rows, vocab, width, dtype="float32"):
    """Hidden states ``(rows, width)``, a classifier ``(vocab, width)`` and labels ``(rows,)``.

    Both float arrays are standard normal in ``dtype`` (float32 or float64); the
    classifier is divided by ``sqrt(width)`` in place, so that the logits are
    about standard normal and the array keeps its dtype. (Out of place,
    ``classifier / np.sqrt(width)`` would be float64 under NumPy 2, since a
    float64 NumPy scalar is not a weak scalar.)
    """
    hidden = rng.standard_normal((rows, width), dtype=dtype)
    classifier = rng.standard_normal((vocab, width), dtype=dtype)
    classifier /= np.sqrt(width)
    return hidden, classifier, rng.integers(0, vocab, size=rows)


def run_large_vocab(vocabularies=LARGE_VOCAB["vocabularies"], rows=LARGE_VOCAB["rows"],
                    width=LARGE_VOCAB["width"], repeat=LARGE_VOCAB["repeat"], *,
                    dtype="float32", shards=0, seed=0, progress=False):
    """Dense against chunked linear cross-entropy (and sharded on Dask) for each vocabulary size.

    Parameters
    ----------
    vocabularies : sequence of int
        The vocabulary sizes ``V``.
    rows, width : int
        ``N`` hidden states of ``D`` features.
    repeat : int
        Interleaved timed calls of each step; the median is reported.
    dtype : str
        Of the hidden states and the classifier, and so of the logits,
        ``"float32"`` (default) or ``"float64"``.
    shards : int
        With a positive number, also time `xentlib.sharded.cross_entropy` (loss
        only) on ``(N, V)`` normal logits split into that many vocabulary
        shards, on a 2-worker Dask ``LocalCluster`` (threads), against the
        dense loss of the same logits.
    seed : int
        For the normal hidden states and classifier, and uniform labels.
    progress : bool
        Draw a progress bar on stderr.

    Returns
    -------
    list of dict
        One per ``V``: ``vocabulary``, ``rows``, ``width``, ``dtype`` (that
        of the gradients both steps returned), ``logits_bytes`` (in it),
        ``seconds`` and ``memory`` (peak bytes beyond the returned gradients)
        and ``loss`` for ``dense`` and ``chunked``, their ``time_ratio`` and
        ``memory_ratio`` (chunked / dense), ``loss_difference``, and with
        shards, ``sharded_seconds``, ``dense_loss_seconds``, ``sharded_ratio``
        and ``sharded_difference``.

    Examples
    --------
    >>> from xentlib import bench
    >>> [r] = bench.run_large_vocab(vocabularies=[256], rows=32, width=8, repeat=1)
    >>> r["loss_difference"] < 1e-5, sorted(r["seconds"]), r["dtype"]
    (True, ['chunked', 'dense'], 'float32')
    """
    rng = np.random.default_rng(seed)
    steps = {"dense": dense_linear_step, "chunked": chunked_linear_step}
    bar = _Progress(len(vocabularies) * (len(steps) * (repeat + 1) + (2 if shards else 0)), progress)
    results = []
    for vocab in vocabularies:
        args = _large_vocab_arrays(rng, rows, vocab, width, dtype)
        memory, losses, times = {}, {}, {name: [] for name in steps}
        dtypes = set()
        for name, step in steps.items():
            peak, returned = _peak_bytes(lambda step=step: step(*args))
            memory[name] = peak - sum(g.nbytes for g in returned[1:])
            losses[name] = float(returned[0])
            dtypes.update(str(g.dtype) for g in returned[1:])
            bar.step(f"V={vocab} memory {name}")
        for i in range(repeat):
            for name in list(steps)[i % 2:] + list(steps)[: i % 2]:
                start = time.perf_counter()
                steps[name](*args)
                times[name].append(time.perf_counter() - start)
                bar.step(f"V={vocab} {name}")
        seconds = {name: statistics.median(ts) for name, ts in times.items()}
        result = dict(
            vocabulary=vocab, rows=rows, width=width, dtype=" and ".join(sorted(dtypes)),
            logits_bytes=rows * vocab * max(np.dtype(d).itemsize for d in dtypes),
            seconds=seconds, memory=memory, loss=losses,
            time_ratio=seconds["chunked"] / seconds["dense"],
            memory_ratio=memory["chunked"] / memory["dense"],
            loss_difference=abs(losses["chunked"] - losses["dense"]),
        )
        if shards:
            result.update(_time_sharded(rows, vocab, shards, args[2], seed, dtype, bar))
        results.append(result)
    return results


def _time_sharded(rows, vocab, shards, labels, seed, dtype, bar):
    """Sharded loss on a 2-worker Dask cluster against the dense loss of the same logits.

    The logits are drawn on the workers, shard by shard, as each device of a
    tensor-parallel model computes its own slice; the dense loss gets a copy.
    """
    import dask.array as da
    from distributed import Client, LocalCluster

    from . import sharded

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        split = da.random.default_rng(seed).standard_normal(
            (rows, vocab), dtype=dtype, chunks=(rows, -(-vocab // shards))).persist()
        logits = split.compute()
        start = time.perf_counter()
        dense = float(cross_entropy(logits, labels))
        dense_seconds = time.perf_counter() - start
        bar.step("dense loss")
        start = time.perf_counter()
        loss = float(sharded.cross_entropy(split, labels).compute())
        sharded_seconds = time.perf_counter() - start
        bar.step(f"sharded loss, {shards} shards")
    return dict(sharded_seconds=sharded_seconds, dense_loss_seconds=dense_seconds,
                sharded_ratio=sharded_seconds / dense_seconds, sharded_difference=abs(loss - dense))


def table_large_vocab(results):
    """The large-vocabulary results as aligned text, one line per vocabulary size."""
    mib = 2.0**20
    lines = [f"{'V':>7} {'logits':>9} {'dense':>9} {'chunked':>8} {'memory':>7} {'time':>6}"
             f" {'sharded':>8}"]
    for r in results:
        sharded = f"{r['sharded_ratio']:.2f}" if "sharded_ratio" in r else ""
        lines.append(f"{r['vocabulary']:>7} {r['logits_bytes'] / mib:>5.0f} MiB"
                     f" {r['memory']['dense'] / mib:>5.0f} MiB {r['memory']['chunked'] / mib:>4.1f} MiB"
                     f" {r['memory_ratio']:>7.3f} {r['time_ratio']:>6.2f} {sharded:>8}")
    return "\n".join(lines)


def environment():
    """What the numbers depend on: versions, cores, xentlib's block and thread settings."""
    torch = _import_torch()
    return dict(
        python=platform.python_version(), numpy=np.__version__, machine=platform.machine(),
        processor=platform.processor(), cpu_count=os.cpu_count(),
        torch=None if torch is None else torch.__version__,
        torch_threads=None if torch is None else torch.get_num_threads(),
        xentlib_threads=_blocked.THREADS, xentlib_block_bytes=_blocked.BLOCK_BYTES,
    )


SHOWN = ["xentlib fused", "xentlib fused in-place", "xentlib loss", "numpy stable",
         "naive gather", "scipy logsumexp"]


def plot(results, ax=None):
    """Bar chart of each method's time over its baseline, one group per class count.

    Returns the matplotlib figure. Methods not in ``results`` are skipped.
    """
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    classes = sorted({r["classes"] for r in results})
    names = [n for n in SHOWN if any(r["method"] == n for r in results)]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ratio = {r["classes"]: r["ratio"] for r in results if r["method"] == name}
        ax.bar([i + j * width for i in range(len(classes))], [ratio.get(c, np.nan) for c in classes],
               width, label=name)
    baseline = "torch" if any(r["baseline"] == "torch" for r in results) else "whole-array NumPy"
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))], [f"C = {c}" for c in classes])
    ax.set_yscale("log")
    # Ratios read as plain numbers (0.5, 2, 10), not as powers of ten.
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_ylabel(f"median time / {baseline}\n(log scale, lower is faster)")
    ax.legend(fontsize="small", ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.grid(alpha=0.3, axis="y")
    return ax.figure


def table(results):
    """The results as aligned text, one line per (C, method); the options apart (`table_options`)."""
    lines = [f"{'C':>7} {'N':>6}  {'method':<24} {'ms':>8} {'ratio':>6} {'/floor':>6} {'memory':>7}"]
    for r in results:
        if r["option"] is not None:
            continue
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        memory = "" if r["memory"] is None else f"{r['memory']:.3f}"
        lines.append(f"{r['classes']:>7} {r['rows']:>6}  {r['method']:<24} {1e3 * r['seconds']:>8.2f} "
                     f"{ratio:>6} {r['floor_ratio']:>6.2f} {memory:>7}")
    return "\n".join(lines)


def table_options(results):
    """What each option costs, as its time over the same library's plain call.

    One line per (C, option): xentlib's loss and in-place loss and gradient,
    the in-place call's peak extra memory in logits' sizes, and where torch
    was timed, its loss and loss with backward (blank for the z-loss, which
    torch lacks).
    """
    ratio = {(r["classes"], r["method"]): r["ratio"] for r in results}
    memory = {(r["classes"], r["method"]): r["memory"] for r in results}
    with_torch = any(r["method"].startswith("torch") and r["option"] for r in results)
    torch_columns = ((("torch, {}", "torch", 6), ("torch + backward, {}", "torch+grad", 10))
                     if with_torch else ())
    lines = [f"{'C':>7}  {'option':<16} {'loss':>6} {'in-place':>8} {'memory':>7}"
             + "".join(f" {title:>{width}}" for _, title, width in torch_columns)]
    for c, option in dict.fromkeys((r["classes"], r["option"]) for r in results if r["option"]):
        line = (f"{c:>7}  {option:<16} {ratio[c, f'xentlib loss, {option}']:>6.2f}"
                f" {ratio[c, f'xentlib in-place, {option}']:>8.2f}"
                f" {memory[c, f'xentlib in-place, {option}']:>7.3f}")
        for method, _, width in torch_columns:
            value = ratio.get((c, method.format(option)))
            line += f" {'' if value is None else f'{value:.2f}':>{width}}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m xentlib.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small arrays, few repetitions")
    parser.add_argument("--out", default=".", help="folder for bench.json and bench.png")
    parser.add_argument("--classes", type=lambda s: [int(c) for c in s.split(",")],
                        help="comma-separated class counts")
    parser.add_argument("--elements", type=int, help="N * C (default 2**23, or 2**20 with --quick)")
    parser.add_argument("--repeat", type=int, help="timed calls per method")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--no-torch", action="store_true", help="compare with NumPy only")
    parser.add_argument("--large-vocab", action="store_true",
                        help="dense vs chunked linear cross-entropy (N=4096, D=256), and Dask")
    args = parser.parse_args(argv)
    if args.large_vocab:
        return _main_large_vocab(args)
    settings = dict(QUICK if args.quick else FULL)
    for key in ("classes", "elements", "repeat"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    results = run(**settings, dtype=args.dtype, use_torch=not args.no_torch, progress=True)
    print(table(results))
    print("\nOptions, as a multiple of the plain call's time:")
    print(table_options(results))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(dict(environment=environment(), settings=dict(settings, dtype=args.dtype),
                       results=results), f, indent=1)
    plot(results).savefig(os.path.join(args.out, "bench.png"), dpi=120)
    print(f"wrote {os.path.join(args.out, 'bench.json')} and bench.png", file=sys.stderr)


def _main_large_vocab(args):
    settings = dict(LARGE_VOCAB, vocabularies=(4096, 16384), rows=1024, repeat=1) if args.quick \
        else dict(LARGE_VOCAB)
    if args.classes is not None:
        settings["vocabularies"] = args.classes
    if args.repeat is not None:
        settings["repeat"] = args.repeat
    settings["dtype"] = args.dtype
    results = run_large_vocab(**settings, shards=4, progress=True)
    print(table_large_vocab(results))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench-large-vocab.json")
    with open(path, "w") as f:
        json.dump(dict(environment=environment(), settings=settings, results=results), f, indent=1)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
