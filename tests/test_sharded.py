"""xentlib.sharded.cross_entropy: logits split over the classes in Dask chunks, as the reference.

The expected values come from the dense float64 definition in ``tests/helpers``,
not from xentlib's own dense loss.
"""

import numpy as np
import pytest

import xentlib
from xentlib import _blocked

from .helpers import BFLOAT16, assert_close, reference_cross_entropy

da = pytest.importorskip("dask.array")
sharded = pytest.importorskip("xentlib.sharded")

RNG = np.random.default_rng(31)
N, C = 7, 13
WEIGHT = RNG.uniform(0.5, 2.0, size=C)
WEIGHT[6] = 0.0

# (rows, classes) per chunk: one shard, shards that do not divide C, one class per shard,
# uneven shards given explicitly, and empty chunks (a shard of no classes, as slicing leaves).
CHUNKINGS = {
    "one_shard": (N, C),
    "4_classes": (N, 4),
    "rows_and_classes": (3, 5),
    "1_class": (2, 1),
    "uneven": (N, (1, 8, 4)),
    "empty_chunks": ((0, 3, 0, 4), (5, 0, 8)),
}
CASES = {
    "plain": dict(),
    "weight": dict(weight=WEIGHT),
    "ignore_index": dict(ignore_index=-100),
    "label_smoothing": dict(label_smoothing=0.3),
    "z_loss": dict(z_loss=0.05),
    "sum": dict(reduction="sum"),
    "number": dict(reduction=2.5, label_smoothing=0.1),
    "none": dict(reduction="none", ignore_index=-1, label_smoothing=0.2),
    "everything": dict(weight=WEIGHT, ignore_index=-100, label_smoothing=0.2, z_loss=0.01),
}


def _problem(ignore_index=None, dtype=np.float64):
    logits = RNG.normal(scale=3.0, size=(N, C)).astype(dtype)
    labels = RNG.integers(0, C, size=N)
    if ignore_index is not None:
        labels[1::3] = ignore_index
    return logits, labels


def _reference(xp, logits, labels, **options):
    """The float64 reference, rounded to the dtype the loss is returned in, on ``xp``."""
    dtype = np.result_type(logits.dtype, np.float32)
    return xp.asarray(np.asarray(reference_cross_entropy(logits, labels, **options), dtype))


def _check(xp, logits, labels, chunks, scheduler="sync", rtol=1e-12, **options):
    loss = sharded.cross_entropy(da.from_array(xp.asarray(logits), chunks=chunks),
                                 xp.asarray(labels), **options)
    assert isinstance(loss, da.Array)
    assert_close(xp.asarray(loss.compute(scheduler=scheduler)),
                 _reference(xp, logits, labels, **options), rtol=rtol)


@pytest.mark.parametrize("chunks", [CHUNKINGS["4_classes"], CHUNKINGS["1_class"]],
                         ids=["4_classes", "1_class"])
@pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
def test_every_option_matches_dense(xp, options, chunks):
    logits, labels = _problem(options.get("ignore_index"))
    _check(xp, logits, labels, chunks, **options)


@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_every_chunking_matches_dense(xp, chunks):
    logits, labels = _problem(-100)
    _check(xp, logits, labels, chunks, **CASES["everything"])
    _check(xp, logits, labels, chunks, reduction="none", **CASES["everything"])


@pytest.mark.parametrize("chunks", [(N, 4), (3, 5)], ids=["4_classes", "rows_and_classes"])
def test_threaded_scheduler(xp, chunks):
    logits, labels = _problem(-100)
    _check(xp, logits, labels, chunks, scheduler="threads", **CASES["everything"])


def test_distributed_cluster():
    distributed = pytest.importorskip("distributed")
    logits, labels = _problem(-100)
    # Two workers in this process (processes=False): the scheduler still hands the tasks to two
    # workers, and the cluster starts in a fraction of a second. No dashboard: its port may be
    # taken, and distributed would warn.
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        for chunks in [(N, 4), (3, 5), (N, 1)]:
            shards = client.persist(da.from_array(logits, chunks=chunks))
            loss = sharded.cross_entropy(shards, labels, **CASES["everything"])
            none = sharded.cross_entropy(shards, labels, reduction="none", label_smoothing=0.1,
                                         ignore_index=-100)
            result, items = client.compute([loss, none], sync=True)
            assert_close(np.asarray(result),
                         _reference(np, logits, labels, **CASES["everything"]), rtol=1e-12)
            assert_close(items, _reference(np, logits, labels, reduction="none",
                                           label_smoothing=0.1, ignore_index=-100), rtol=1e-12)


def test_no_block_is_wider_than_a_shard():
    from dask.callbacks import Callback

    classes, width = 96, 24
    logits = RNG.normal(size=(N, classes))
    labels = RNG.integers(0, classes, size=N)
    sizes = []

    class Sizes(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if hasattr(result, "shape"):
                sizes.append(result.shape)

    loss = sharded.cross_entropy(da.from_array(logits, chunks=(N, width)), labels,
                                 label_smoothing=0.1)
    with Sizes():
        loss.compute(scheduler="sync")
    assert sizes
    assert all(np.prod(shape) <= N * width for shape in sizes), sizes
    assert all(classes not in shape for shape in sizes), sizes


@pytest.mark.parametrize("options", [{}, dict(label_smoothing=0.1, ignore_index=-100,
                                                  weight=np.ones(12))], ids=["plain", "options"])
def test_task_count_does_not_grow_with_the_items(options):
    # Four row chunks of any height: the graph has the same tasks, none per item.
    def tasks(items):
        logits = da.from_array(np.zeros((items, 12)), chunks=(items // 4, 4))
        loss = sharded.cross_entropy(logits, np.zeros(items, np.int64), **options)
        return len(loss.__dask_graph__())

    assert tasks(64) == tasks(4096)


@pytest.mark.parametrize("rows", [1, 3], ids=["1_row", "3_rows"])
def test_row_blocks_inside_a_shard_match_dense(xp, monkeypatch, rows):
    # Blocks of 1 and of 3 rows (the last of 7 holding 1): each block is shifted by its rows' own
    # maxima, and the scratch buffer is reused, so a row of one block cannot leak into another.
    logits, labels = _problem(-100)
    monkeypatch.setattr(_blocked, "BLOCK_BYTES", rows * 4 * logits.itemsize)
    for options in [CASES["everything"], dict(CASES["everything"], reduction="none")]:
        _check(xp, logits, labels, (N, 4), **options)


@pytest.mark.parametrize("options", [{}, dict(label_smoothing=0.1, weight=np.ones(4096))],
                         ids=["plain", "smoothing"])
def test_no_temporary_as_large_as_a_shard(options):
    # Shards of 16 MiB: the exponentials go through one cache-sized buffer, reused row block by
    # row block, so a shard's work allocates a fraction of it (shifted logits and their
    # exponentials the size of the shard, as a first version made, were 2.9 shards at peak).
    tracemalloc = pytest.importorskip("tracemalloc")
    logits = RNG.normal(size=(1024, 4096))
    loss = sharded.cross_entropy(da.from_array(logits, chunks=(1024, 2048)),
                                 RNG.integers(0, 4096, size=1024), **options)
    tracemalloc.start()
    try:
        loss.compute(scheduler="sync")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * 1024 * 2048 * logits.itemsize, peak


@pytest.mark.parametrize("options", [CASES["ignore_index"], CASES["everything"]],
                         ids=["ignore_index", "everything"])
def test_shards_are_read_not_written(options):
    # dask.array.from_array copies a NumPy array, so the readonly backend cannot see a write into
    # a shard; persisted shards (a cluster's) are shared by every later computation. Read-only
    # blocks make any write raise.
    logits, labels = _problem(-100)
    shards = da.from_array(logits, chunks=(3, 5)).map_blocks(_read_only, dtype=logits.dtype)
    loss = sharded.cross_entropy(shards, labels, **options)
    assert_close(np.asarray(loss.compute(scheduler="sync")),
                 _reference(np, logits, labels, **options), rtol=1e-12)


def _read_only(block):
    view = block.view()
    view.flags.writeable = False
    return view


def test_lazy_until_computed():
    logits, labels = _problem()
    shards = da.from_array(logits, chunks=(N, 4)).map_blocks(
        _forbid_computing, dtype=logits.dtype, meta=np.empty((0, 0)))
    loss = sharded.cross_entropy(shards, labels)  # builds the graph, computes nothing
    assert loss.shape == ()
    with pytest.raises(AssertionError, match="a shard was computed"):
        loss.compute(scheduler="sync")


def _forbid_computing(block):
    raise AssertionError("a shard was computed")


def test_label_smoothing_spreads_over_all_classes(xp):
    # The shards hold 4 classes each, 13 in all: eps / 13 per class, not eps / 4 (nor eps / 12).
    logits, labels = _problem()
    _check(xp, logits, labels, (N, 4), label_smoothing=0.4)


def test_all_ignored_gives_zero(xp):
    logits, _ = _problem()
    labels = xp.full(N, -100)
    loss = sharded.cross_entropy(da.from_array(xp.asarray(logits), chunks=(N, 4)), labels,
                                 ignore_index=-100)
    assert float(loss.compute()) == 0.0


def test_almost_certain_item_keeps_its_tiny_loss(xp):
    # The label's logit is 40 above 12 others in other shards: loss 12 exp(-40) = 5e-17.
    # The float64 reference rounds it to 0 (its log-sum-exp is 40 exactly): log1p is the oracle.
    logits = np.zeros((1, C))
    logits[0, 5] = 40.0
    loss = sharded.cross_entropy(da.from_array(xp.asarray(logits), chunks=(1, 4)), xp.asarray([5]))
    assert_close(xp.asarray(loss.compute()), xp.asarray(np.log1p((C - 1) * np.exp(-40.0))),
                 rtol=1e-14)


# Rows whose max sits in several shards: every shard that holds it leaves its 1 out of its sum,
# and all but one are put back. (max positions, label) per row; shards of 4 are 0-3, 4-7, 8-11, 12.
TIES = [
    ([0, 4], 4),  # two shards, the label one of them
    ([0, 4, 8, 12], 12),  # every shard of 4
    ([2, 3, 9], 6),  # twice in one shard and once in another; the label below the max
    (list(range(C)), 3),  # every class: every shard of every chunking
    ([1, 12], 1),  # the label's tie in the last, one-class shard
    ([5, 10], 2),
    ([7], 7),  # no tie
]
TIE_CHUNKINGS = {**CHUNKINGS, "2_classes": (N, 2)}


@pytest.mark.parametrize("chunks", TIE_CHUNKINGS.values(), ids=TIE_CHUNKINGS.keys())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", [dict(), dict(label_smoothing=0.1, z_loss=1e-3)],
                         ids=["plain", "smoothing_z_loss"])
def test_ties_across_shards(xp, chunks, dtype, options):
    logits = RNG.integers(-4, 3, size=(N, C)).astype(dtype) + dtype(100.25)
    labels = np.array([label for _, label in TIES])
    for row, (tied, _) in zip(logits, TIES, strict=True):
        row[tied] = dtype(105.25)
    loss = sharded.cross_entropy(da.from_array(xp.asarray(logits), chunks=chunks),
                                 xp.asarray(labels), reduction="none", **options)
    loss = xentlib.to_numpy(loss.compute(scheduler="sync"))
    expected = _exact_losses(logits, labels, **options).astype(dtype)
    assert loss.dtype == dtype
    ulps = np.abs(loss - expected) / np.spacing(expected)
    assert np.all(ulps <= 4), ulps


def _exact_losses(logits, labels, label_smoothing=0.0, z_loss=0.0):
    """Each item's loss at 50 digits: the float64 reference computes ``z_y - LSE``, which
    cancels in the confident rows to tens of ulps of the loss."""
    mpmath = pytest.importorskip("mpmath")
    losses = []
    with mpmath.workdps(50):
        for row, label in zip(logits.astype(np.float64), labels, strict=True):
            z = [mpmath.mpf(float(v)) for v in row]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z))
            q = [label_smoothing / len(z) + (1 - label_smoothing) * (k == label)
                 for k in range(len(z))]
            loss = mpmath.fsum(mpmath.mpf(qk) * (lse - v) for qk, v in zip(q, z, strict=True))
            losses.append(float(loss + z_loss * lse**2))
    return np.array(losses)


def test_minus_inf_masks_classes(xp):
    logits, labels = _problem()
    logits[:, [0, 1, 2, 3]] = -np.inf  # the whole first shard is masked
    labels[labels < 4] = 4
    _check(xp, logits, labels, (N, 4), reduction="none",
           weight=np.where(np.arange(C) < 4, 0.0, 1.0), label_smoothing=0.1)


@pytest.mark.parametrize("chunks", [(2, 1), (2, 2)], ids=["1_class", "2_classes"])
def test_maxima_further_apart_than_the_float_range(xp, chunks):
    # The shards' maxima 3e38 and -3e38 are 6e38 apart, beyond float32: the smaller one's sum is
    # scaled by exp(-inf) = 0, quietly (warnings are errors here).
    logits = np.array([[3e38, -3e38, 0.0], [-3e38, 3e38, 1.0]], np.float32)
    _check(xp, logits, np.array([2, 1]), chunks, reduction="none", rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16], ids=["float16", "bfloat16"])
def test_half_is_computed_in_float32(xp, dtype):
    if dtype is None:
        pytest.skip("ml_dtypes is not installed")
    # All 4096 logits equal: the sum of exponentials is 4096, exact in float32, and each shard's
    # share (1024) is exact even in float16.
    logits = np.zeros((2, 4096), dtype=dtype)
    loss = sharded.cross_entropy(da.from_array(xp.asarray(logits), chunks=(2, 1024)),
                                 xp.asarray([0, 4095]))
    result = loss.compute()
    assert result.dtype == np.float32
    np.testing.assert_allclose(float(result), np.log(4096), rtol=1e-6)


class TestErrors:
    def test_logits_must_be_dask(self):
        with pytest.raises(TypeError, match=r"sharded.cross_entropy: logits is numpy.ndarray; "
                                            r"expected a dask array"):
            sharded.cross_entropy(np.zeros((2, 3)), np.array([0, 1]))

    def test_logits_must_be_2d(self):
        with pytest.raises(ValueError, match=r"logits has shape \(2, 3, 4\); expected \(N, C\)"):
            sharded.cross_entropy(da.zeros((2, 3, 4)), np.zeros((2, 3), dtype=int))

    def test_target_must_be_concrete(self):
        with pytest.raises(TypeError, match=r"target is a dask array; expected the class indices"):
            sharded.cross_entropy(da.zeros((2, 3)), da.zeros(2, dtype=int))

    def test_probability_target_is_refused(self):
        with pytest.raises(TypeError, match=r"target has shape \(2, 3\), probabilities over the 3 "
                                            r"classes; sharded.cross_entropy takes class indices "
                                            r"only"):
            sharded.cross_entropy(da.zeros((2, 3)), np.full((2, 3), 1 / 3))

    def test_label_out_of_range(self):
        with pytest.raises(ValueError, match=r"sharded.cross_entropy: target\[1\] = 3 is outside "
                                             r"\[0, 3\) \(3 classes on axis 1\)"):
            sharded.cross_entropy(da.zeros((2, 3), chunks=(2, 1)), np.array([0, 3]))

    def test_weight_length(self):
        with pytest.raises(ValueError, match=r"weight has 2 entries; expected one per class \(3\)"):
            sharded.cross_entropy(da.zeros((2, 3)), np.array([0, 1]), weight=np.ones(2))

    def test_bad_reduction(self):
        with pytest.raises(ValueError, match=r"reduction = 'avg'"):
            sharded.cross_entropy(da.zeros((2, 3)), np.array([0, 1]), reduction="avg")

    def test_no_classes(self):
        with pytest.raises(ValueError, match=r"logits has no classes"):
            sharded.cross_entropy(da.zeros((2, 0)), np.array([0, 1]))
