"""``bench.run_large_vocab``: dense against chunked linear cross-entropy, and sharded on Dask."""

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from .. import cross_entropy, cross_entropy_with_grad, linear_cross_entropy_with_grad
from ._methods import _Method, _normal
from ._timing import _interleaved, _median, _peak_bytes, _Progress

__all__ = ["run_large_vocab"]


def _dense_linear_step(hidden: np.ndarray, classifier: np.ndarray,
                       labels: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
    """Loss and gradients of ``hidden @ classifier.T`` the way frameworks do it: logits held whole.

    The most frugal dense version: the gradient is written over the logits,
    so one ``(N, V)`` array exists at a time.
    """
    logits = hidden @ classifier.T
    loss, g = cross_entropy_with_grad(logits, labels, out=logits)
    return loss, g @ classifier, g.T @ hidden


def _chunked_linear_step(hidden: np.ndarray, classifier: np.ndarray,
                         labels: np.ndarray) -> tuple[Any, ...]:
    """The same with `xentlib.linear_cross_entropy_with_grad`: one vocabulary chunk at a time."""
    return tuple(linear_cross_entropy_with_grad(hidden, classifier, labels))


def _large_vocab_arrays(rng: np.random.Generator, rows: int, vocab: int, width: int,
                        dtype: str = "float32") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hidden states ``(rows, width)``, a classifier ``(vocab, width)`` and labels ``(rows,)``.

    Both float arrays are standard normal in ``dtype`` (float32 or float64); the
    classifier is divided by ``sqrt(width)`` in place, so that the logits are
    about standard normal and the array keeps its dtype. (Out of place,
    ``classifier / np.sqrt(width)`` would be float64 under NumPy 2, since a
    float64 NumPy scalar is not a weak scalar.)
    """
    hidden = _normal(rng, (rows, width), dtype)
    classifier = _normal(rng, (vocab, width), dtype)
    classifier /= np.sqrt(width)
    return hidden, classifier, rng.integers(0, vocab, size=rows)


def run_large_vocab(vocabularies: Sequence[int] = (32768, 131072), rows: int = 4096,
                    width: int = 256, repeat: int = 3, *, dtype: str = "float32",
                    shards: int = 0, seed: int = 0,
                    progress: bool = False) -> list[dict[str, Any]]:
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
        Draw a progress bar on stderr (needs tqdm).

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
    steps = {"dense": _dense_linear_step, "chunked": _chunked_linear_step}
    # per vocabulary: the memory of each step, its timed rounds, and the two sharded steps
    total = len(vocabularies) * (len(steps) * (1 + repeat) + (2 if shards else 0))
    results = []
    with _Progress(total, progress) as bar:
        for vocab in vocabularies:
            args = _large_vocab_arrays(rng, rows, vocab, width, dtype)
            memory, losses, dtypes = {}, {}, set[str]()
            for name, step in steps.items():
                peak, returned = _peak_bytes(partial(step, *args))
                memory[name] = peak - sum(g.nbytes for g in returned[1:])
                losses[name] = float(returned[0])
                dtypes.update(str(g.dtype) for g in returned[1:])
                bar.step(f"V={vocab} memory {name}")
            table = {name: _Method("loss+grad", partial(step, *args))
                     for name, step in steps.items()}
            seconds = _median(_interleaved(table, repeat, dict.fromkeys(table, 1), bar,
                                           f"V={vocab}"))
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


def _time_sharded(rows: int, vocab: int, shards: int, labels: np.ndarray, seed: int,
                  dtype: str, bar: _Progress) -> dict[str, float]:
    """Sharded loss on a 2-worker Dask cluster against the dense loss of the same logits.

    The logits are drawn on the workers, shard by shard, as each device of a
    tensor-parallel model computes its own slice; the dense loss gets a copy.
    """
    import dask.array as da
    from distributed import Client, LocalCluster

    from .. import sharded

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
                sharded_ratio=sharded_seconds / dense_seconds,
                sharded_difference=abs(loss - dense))
