"""``bench.run_large_vocab``: dense against chunked linear cross-entropy, and sharded on Dask."""

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from .. import (
    cross_entropy,
    cross_entropy_with_grad,
    linear_cross_entropy,
    linear_cross_entropy_with_grad,
)
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


def _dense_linear_loss(hidden: np.ndarray, classifier: np.ndarray, labels: np.ndarray) -> Any:
    """The loss alone, the dense way: the whole logits, then their loss."""
    return cross_entropy(hidden @ classifier.T, labels)


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
        shards, on Dask's threaded scheduler and on a 2-worker Dask
        ``LocalCluster`` (threads), against the dense loss of the same logits,
        in ``repeat`` interleaved rounds.
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
        ``memory_ratio`` (chunked / dense), ``loss_difference``; ``seconds``
        also holds ``dense loss`` and ``chunked loss``, the loss alone
        (`xentlib.linear_cross_entropy` against the dense logits and their
        loss), and ``loss_time_ratio`` is theirs; and with
        shards: ``dense_loss_seconds``; ``sharded_seconds`` and
        ``sharded_ratio`` (/ dense) on the cluster; ``sharded_threads_seconds``
        and ``sharded_threads_ratio`` on the threaded scheduler;
        ``sharded_difference``, the larger of the two losses' differences from
        the dense one; and ``sharded_breakdown``, where the cluster's median
        round went, in seconds: ``wall``, ``compute``, ``transfer`` and
        ``deserialize`` summed over its ``tasks``, ``idle`` (the workers'
        time between the first task and the last not spent on tasks),
        ``before_first_task`` (building and scheduling the graph), of which
        ``build`` (checking the input and building the graph), and
        ``after_last_task`` (returning the result).

    Examples
    --------
    >>> from xentlib import bench
    >>> [r] = bench.run_large_vocab(vocabularies=[256], rows=32, width=8, repeat=1)
    >>> r["loss_difference"] < 1e-5, sorted(r["seconds"]), r["dtype"]
    (True, ['chunked', 'chunked loss', 'dense', 'dense loss'], 'float32')
    """
    rng = np.random.default_rng(seed)
    steps = {"dense": _dense_linear_step, "chunked": _chunked_linear_step}
    losses_alone: dict[str, Callable[..., Any]] = {"dense loss": _dense_linear_loss,
                                                   "chunked loss": linear_cross_entropy}
    # per vocabulary: the memory of each step, the timed rounds of the steps and of the
    # losses alone, and the sharded rounds
    total = len(vocabularies) * (len(steps) + (len(steps) + len(losses_alone)) * repeat
                                 + (3 * repeat if shards else 0))
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
            table |= {name: _Method("loss", partial(loss, *args))
                      for name, loss in losses_alone.items()}
            seconds = _median(_interleaved(table, repeat, dict.fromkeys(table, 1), bar,
                                           f"V={vocab}"))
            result = dict(
                vocabulary=vocab, rows=rows, width=width, dtype=" and ".join(sorted(dtypes)),
                logits_bytes=rows * vocab * max(np.dtype(d).itemsize for d in dtypes),
                seconds=seconds, memory=memory, loss=losses,
                time_ratio=seconds["chunked"] / seconds["dense"],
                loss_time_ratio=seconds["chunked loss"] / seconds["dense loss"],
                memory_ratio=memory["chunked"] / memory["dense"],
                loss_difference=abs(losses["chunked"] - losses["dense"]),
            )
            if shards:
                result.update(_time_sharded(rows, vocab, shards, args[2], seed, dtype, repeat,
                                           bar))
            results.append(result)
    return results


def _time_sharded(rows: int, vocab: int, shards: int, labels: np.ndarray, seed: int,
                  dtype: str, repeat: int, bar: _Progress) -> dict[str, Any]:
    """Sharded loss on Dask against the dense loss of the same logits, in interleaved rounds.

    Each round times the dense loss, the sharded loss on Dask's threaded
    scheduler (the default for dask arrays, no cluster), and on a 2-worker
    ``LocalCluster`` (threads), whose task stream says where its time goes.
    The logits are drawn on the workers, shard by shard, as each device of a
    tensor-parallel model computes its own slice; the dense and threaded
    losses get a copy. The medians are reported, and the breakdown of the
    cluster's median round.
    """
    import dask.array as da
    from distributed import Client, LocalCluster, get_task_stream

    from .. import sharded

    workers = 2
    times: dict[str, list[float]] = {"dense": [], "threads": [], "cluster": []}
    breakdowns, differences = [], []
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        split = _place_shards(client, rows, vocab, shards, seed, dtype, workers)
        logits = split.compute()
        local = da.from_array(logits, chunks=split.chunks)
        for _ in range(repeat):
            start = time.perf_counter()
            dense = float(cross_entropy(logits, labels))
            times["dense"].append(time.perf_counter() - start)
            bar.step("dense loss")
            start = time.perf_counter()
            loss = float(sharded.cross_entropy(local, labels).compute(scheduler="threads"))
            times["threads"].append(time.perf_counter() - start)
            differences.append(abs(loss - dense))
            bar.step(f"sharded loss, {shards} shards, threads")
            with get_task_stream(client) as stream:
                start, clock = time.perf_counter(), time.time()
                lazy = sharded.cross_entropy(split, labels)
                build = time.perf_counter() - start
                loss = float(lazy.compute())
                times["cluster"].append(time.perf_counter() - start)
                end = time.time()
            # The stream's records arrive when its block ends.
            breakdowns.append(dict(_task_breakdown(stream.data, clock, end, workers), build=build))
            differences.append(abs(loss - dense))
            bar.step(f"sharded loss, {shards} shards, cluster")
    seconds = _median(times)
    median_round = sorted(range(repeat), key=times["cluster"].__getitem__)[repeat // 2]
    return dict(sharded_seconds=seconds["cluster"], dense_loss_seconds=seconds["dense"],
                sharded_ratio=seconds["cluster"] / seconds["dense"],
                sharded_threads_seconds=seconds["threads"],
                sharded_threads_ratio=seconds["threads"] / seconds["dense"],
                sharded_breakdown=breakdowns[median_round],
                sharded_difference=max(differences))


def _place_shards(client: Any, rows: int, vocab: int, shards: int, seed: int, dtype: str,
                  workers: int) -> Any:
    """``(rows, vocab)`` normal logits, the shards drawn on the workers in turn and kept there.

    Left to itself, the scheduler may draw every shard on the worker that
    started first; the other worker then steals the tasks that read them and
    copies the shards over (between processes, a transfer of seconds).
    """
    import dask.array as da

    client.wait_for_workers(workers)
    addresses = sorted(client.scheduler_info()["workers"])
    rng = da.random.default_rng(seed)
    width = -(-vocab // shards)
    parts = [client.persist(rng.standard_normal((rows, min(width, vocab - lo)), dtype=dtype,
                                                chunks=-1),
                            workers=[addresses[j % workers]])
             for j, lo in enumerate(range(0, vocab, width))]
    return da.concatenate(parts, axis=1)


def _task_breakdown(records: list[dict[str, Any]], start: float, stop: float,
                    workers: int) -> dict[str, float]:
    """Where a computation's wall time went, from Dask's task stream of it.

    ``records`` are the stream's tasks, ``start`` and ``stop`` the epoch
    seconds of the call. Each task's ``startstops`` give its ``compute``,
    ``transfer`` (of its inputs from another worker) and ``deserialize``
    seconds, summed over the tasks; ``idle`` is what the ``workers`` threads
    did not spend on tasks between the first task's start and the last one's
    end; ``before_first_task`` (building, optimizing and scheduling the graph)
    and ``after_last_task`` (returning the result) are the call's ends. The
    stream's times are the scheduler's estimate of the workers' clocks, good
    to a few milliseconds: an end that comes out negative is reported as 0.
    """
    spent = dict.fromkeys(["compute", "transfer", "deserialize"], 0.0)
    first, last = stop, start
    for record in records:
        for part in record["startstops"]:
            spent[part["action"]] = spent.get(part["action"], 0.0) + part["stop"] - part["start"]
            first, last = min(first, part["start"]), max(last, part["stop"])
    return dict(wall=stop - start, tasks=len(records), **spent,
                idle=workers * max(0.0, last - first) - sum(spent.values()),
                before_first_task=max(0.0, first - start),
                after_last_task=max(0.0, stop - last))
