"""The NumPy path in row blocks on threads.

The same results as one whole-array block, and little memory.

Small ``BLOCK_BYTES`` force many blocks on tiny arrays, with shapes that do
not divide into them, a single item, a single class, and rows longer than a
block. "Unblocked" is the same pass with one block and one thread, which is
what the CuPy backend runs.
"""

import itertools
import tracemalloc

import numpy as np
import pytest

import xentlib
from xentlib import _blocked, _lse, _pass

from .helpers import assert_close, reference_cross_entropy, reference_cross_entropy_grad

RNG = np.random.default_rng(23)
FUNCTIONS = ["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad"]


def _readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _problem(shape, axis=-1, kind="index", dtype=np.float64, ignore_index=None):
    logits = RNG.normal(scale=3.0, size=shape).astype(dtype)
    num_classes = shape[axis]
    batch = list(shape)
    del batch[axis]
    if kind == "index":
        target = RNG.integers(0, num_classes, size=batch)
        if ignore_index is not None and target.size > 1:
            target.flat[::4] = ignore_index
    else:
        target = np.moveaxis(RNG.dirichlet(np.ones(num_classes), size=batch), -1, axis)
        target.reshape(-1)[::3] = 0.0  # zero mass on some classes, as one-hot rows have
    return _readonly(logits), _readonly(target)


def _results(function, logits, target, **options):
    result = getattr(xentlib, function)(logits, target, **options)
    return result if isinstance(result, tuple) else (result,)


def _unblocked(monkeypatch, function, logits, target, **options):
    with monkeypatch.context() as patch:
        patch.setattr(_blocked, "BLOCK_BYTES", 1 << 62)
        patch.setattr(_blocked, "THREADS", 1)
        return _results(function, logits, target, **options)


def _assert_same(blocked, unblocked):
    for b, u in zip(blocked, unblocked, strict=True):
        rtol = 1e-6 if b.dtype.itemsize <= 4 else 1e-14
        finite = np.abs(u[np.isfinite(u)])
        assert_close(b, u, rtol=rtol, atol=rtol * float(np.max(finite, initial=0.0)))


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of three rows of 7 float64 classes, on two threads."""
    monkeypatch.setattr(_blocked, "BLOCK_BYTES", 3 * (7 * 8 + _pass._ITEM_BYTES))
    monkeypatch.setattr(_blocked, "THREADS", 2)


WEIGHT = np.array([0.5, 2.0, 0.0, 1.0, 3.0, 1.5, 0.25])
OPTIONS = {
    "plain": dict(),
    "weight": dict(weight=WEIGHT),
    "ignore_index": dict(ignore_index=-100),
    "label_smoothing": dict(label_smoothing=0.2),
    "z_loss": dict(z_loss=0.01),
    "weighted_smoothing": dict(weight=WEIGHT, label_smoothing=0.1),
    "everything": dict(weight=WEIGHT, ignore_index=-100, label_smoothing=0.1, z_loss=1e-3),
}
REDUCTIONS = ["mean", "sum", "none", 6.0]


@pytest.mark.usefixtures("small_blocks")
class TestBlockedEqualsUnblocked:
    @pytest.mark.parametrize("function", FUNCTIONS)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
    def test_index_targets(self, monkeypatch, function, reduction, options):
        # 23 rows: seven blocks of three and one of two.
        logits, labels = _problem((23, 7), ignore_index=options.get("ignore_index"))
        options = dict(options, reduction=reduction)
        blocked = _results(function, logits, labels, **options)
        _assert_same(blocked, _unblocked(monkeypatch, function, logits, labels, **options))

    @pytest.mark.parametrize("function", FUNCTIONS)
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize(
        "options", [o for o in OPTIONS.values() if "ignore_index" not in o],
        ids=[k for k, o in OPTIONS.items() if "ignore_index" not in o],
    )
    def test_probability_targets(self, monkeypatch, function, reduction, options):
        logits, target = _problem((23, 7), kind="probability")
        options = dict(options, reduction=reduction)
        blocked = _results(function, logits, target, **options)
        _assert_same(blocked, _unblocked(monkeypatch, function, logits, target, **options))

    @pytest.mark.parametrize(
        ("shape", "axis"),
        [((1, 7), -1), ((23, 1), -1), ((7,), -1), ((0, 7), -1), ((4, 5, 7), -1),
         ((5, 7, 3, 2), 1), ((7, 10), 0), ((3, 2, 7), 1)],
        ids=["N=1", "C=1", "1-d", "empty", "BTC", "NCHW", "axis0", "N-C-T"],
    )
    @pytest.mark.parametrize("kind", ["index", "probability"])
    def test_shapes_and_axes(self, monkeypatch, shape, axis, kind):
        logits, target = _problem(shape, axis=axis, kind=kind)
        options = dict(axis=axis, label_smoothing=0.1, reduction="none")
        blocked = _results("cross_entropy_with_grad", logits, target, **options)
        unblocked = _unblocked(monkeypatch, "cross_entropy_with_grad", logits, target, **options)
        _assert_same(blocked, unblocked)
        expected = reference_cross_entropy(logits, target, **options)
        assert_close(blocked[0], expected, rtol=1e-12)

    @pytest.mark.parametrize("kind", ["index", "probability"])
    def test_rows_longer_than_a_block(self, monkeypatch, kind):
        # Huge C, small N: a row of 5000 float64 classes is far over the 168-byte budget,
        # so each block is a single row.
        logits, target = _problem((3, 5000), kind=kind)
        options = dict(weight=np.linspace(0.0, 2.0, 5000), label_smoothing=0.05)
        blocked = _results("cross_entropy_with_grad", logits, target, **options)
        unblocked = _unblocked(monkeypatch, "cross_entropy_with_grad", logits, target, **options)
        _assert_same(blocked, unblocked)

    @pytest.mark.parametrize("dtype", ["float16", "float32", "int64"])
    def test_dtypes_converted_block_by_block(self, monkeypatch, dtype):
        logits, labels = _problem((23, 7), dtype=dtype)
        blocked = _results("cross_entropy_with_grad", logits, labels, label_smoothing=0.1)
        unblocked = _unblocked(
            monkeypatch, "cross_entropy_with_grad", logits, labels, label_smoothing=0.1
        )
        _assert_same(blocked, unblocked)
        assert blocked[0].dtype == (np.float64 if dtype == "int64" else np.float32)
        assert blocked[1].dtype == (np.float64 if dtype == "int64" else dtype)

    def test_non_finite_logits_keep_their_meaning(self, monkeypatch):
        logits = RNG.normal(size=(23, 7))
        logits[2, 3] = -np.inf  # a masked class
        logits[5] = -np.inf  # a fully masked row
        logits[9, 0] = np.inf
        logits[14, 6] = np.nan
        target = RNG.dirichlet(np.ones(7), size=23)
        target[5] = 0.0  # nothing to predict in the masked row
        target[2, 3] = 0.0
        logits, target = _readonly(logits), _readonly(target)
        for t in (target, _readonly(target.argmax(axis=1))):
            blocked = _results("cross_entropy_with_grad", logits, t, reduction="none")
            _assert_same(blocked, _unblocked(monkeypatch, "cross_entropy_with_grad", logits, t,
                                             reduction="none"))
            loss = blocked[0]
            assert np.isnan(loss[[9, 14]]).all()
            assert np.isfinite(np.delete(loss, [5, 9, 14])).all()

    @pytest.mark.parametrize("axis", [-1, 1])
    def test_in_place_gradient(self, monkeypatch, axis):
        shape = (23, 7) if axis == -1 else (5, 7, 3)
        logits, labels = _problem(shape, axis=axis)
        expected = _unblocked(monkeypatch, "cross_entropy_with_grad", logits, labels, axis=axis,
                              z_loss=1e-3)
        work = logits.copy()
        loss, grad = xentlib.cross_entropy_with_grad(work, labels, out=work, axis=axis, z_loss=1e-3)
        assert grad is work
        _assert_same((loss, grad), expected)

    def test_out_in_another_layout(self, monkeypatch):
        logits, labels = _problem((23, 7))
        out = np.zeros((7, 23)).T  # Fortran order: each gradient row is strided
        _, grad = xentlib.cross_entropy_with_grad(logits, labels, out=out)
        assert grad is out
        expected = _unblocked(monkeypatch, "cross_entropy_grad", logits, labels)
        _assert_same((grad,), expected)


@pytest.mark.parametrize("max_rows", [1, 2, 3, 5, 6, 7, 100])
@pytest.mark.parametrize("shape", [(10,), (4, 5), (2, 3, 4), (3, 1, 2), (0,), (2, 0)])
def test_row_blocks_cover_each_item_once_in_order(shape, max_rows):
    seen = []
    items = np.arange(int(np.prod(shape))).reshape(shape)
    for index, start, stop in _blocked.row_blocks(shape, max_rows):
        run = items[index].reshape(-1)
        assert 0 < run.size <= max_rows
        np.testing.assert_array_equal(run, np.arange(start, stop))
        seen.extend(run)
    assert seen == list(range(items.size))


def test_an_error_in_a_thread_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(_blocked, "THREADS", 2)

    def work(block, scratch):
        if block == 5:
            raise ZeroDivisionError("block 5")

    with pytest.raises(ZeroDivisionError, match="block 5"):
        _blocked.for_each_block(range(8), work, dict)


def _peak_extra(function, *args, **kwargs):
    """Peak memory allocated during the call, beyond what the arguments already hold."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        function(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


class TestMemory:
    """Peak extra memory as a multiple of the logits' size.

    The targets are 0.05 in place, 1.1 with a fresh gradient and 0.1 for the
    loss alone, checked with margin. Ten classes is where the arrays a block
    makes per item (shift, rest, label, loss) are as large as its logits.
    """

    @pytest.fixture(params=[(512, 1000), (1_000_000, 10)], ids=["1000 classes", "10 classes"])
    def problem(self, request, monkeypatch):
        """float32 logits and labels: 2 MB in rows of 1000, or 40 MB in rows of ten."""
        monkeypatch.setattr(_blocked, "THREADS", 2)
        n, c = request.param
        logits = RNG.normal(size=(n, c)).astype(np.float32)
        return logits, RNG.integers(0, c, size=n)

    def test_in_place_gradient_needs_almost_nothing(self, problem):
        logits, labels = problem
        extra = _peak_extra(xentlib.cross_entropy_with_grad, logits, labels, out=logits)
        assert extra <= 0.1 * logits.nbytes

    def test_fresh_gradient_needs_the_gradient_only(self, problem):
        logits, labels = problem
        extra = _peak_extra(xentlib.cross_entropy_with_grad, logits, labels)
        assert extra <= 1.2 * logits.nbytes

    @pytest.mark.parametrize("options", [dict(), dict(label_smoothing=0.1, z_loss=1e-4)])
    def test_loss_alone_needs_a_few_blocks(self, monkeypatch, problem, options):
        logits, labels = problem
        if logits.nbytes < 1 << 24:  # blocks of the default size would be half the logits
            monkeypatch.setattr(_blocked, "BLOCK_BYTES", 1 << 16)
        extra = _peak_extra(xentlib.cross_entropy, logits, labels, **options)
        assert extra <= 0.2 * logits.nbytes

    def test_whole_array_path_would_need_more(self, monkeypatch):
        # The same call as one block: what a blocked pass saves, so the tests above mean something.
        monkeypatch.setattr(_blocked, "BLOCK_BYTES", 1 << 62)
        logits = RNG.normal(size=(512, 1000)).astype(np.float32)
        labels = RNG.integers(0, 1000, size=512)
        assert _peak_extra(xentlib.cross_entropy, logits, labels) >= 0.9 * logits.nbytes


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_do_not_change_the_mean(monkeypatch, small_blocks, threads):
    # Each block adds up its own items, and the blocks' sums are added in block order,
    # whichever thread took which block: the same bits, not only close ones.
    logits, labels = _problem((300, 7), dtype=np.float32)
    expected = xentlib.cross_entropy(logits, labels)
    monkeypatch.setattr(_blocked, "THREADS", threads)
    assert xentlib.cross_entropy(logits, labels) == expected


@pytest.mark.parametrize(
    ("threads", "block_bytes"), list(itertools.product([1, 2, 3], [64, 1 << 20]))
)
def test_settings_do_not_change_the_result(monkeypatch, threads, block_bytes):
    logits, labels = _problem((50, 9), dtype=np.float32)
    expected = _unblocked(monkeypatch, "cross_entropy_with_grad", logits, labels)
    monkeypatch.setattr(_blocked, "THREADS", threads)
    monkeypatch.setattr(_blocked, "BLOCK_BYTES", block_bytes)
    _assert_same(_results("cross_entropy_with_grad", logits, labels), expected)


class TestFloat32SkipsTheShift:
    """float32 rows with max in [0, log(max float) - log C - 1] are exponentiated unshifted.

    Only blocks of rows longer than `xentlib._lse.SHORT_ROW` and of at least
    ``_UNSHIFTED_SIZE`` logits do; the size is lowered here so that small
    blocks do too.
    """

    @pytest.fixture(autouse=True)
    def _every_block_may_skip(self, monkeypatch):
        monkeypatch.setattr(_pass, "_UNSHIFTED_SIZE", 0)

    def _logits(self, mixed):
        logits = RNG.normal(scale=2.0, size=(40, 24))
        logits[:, 0] += 10.0  # every row max in range
        if mixed:  # in every block, rows that need the shift
            logits[::4] -= 50.0  # max below 0
            logits[1::4] += 100.0  # max above the bound
            logits[3::8] -= 200.0  # max far below 0: unshifted, its exponentials would be 0
        logits[2, 0] = 30.0  # an almost certain row, unshifted: its loss is about e^-28
        logits[6, 3] = -np.inf
        return logits

    @pytest.mark.usefixtures("small_blocks")
    @pytest.mark.parametrize("options", [dict(), dict(weight=np.linspace(0.5, 2.0, 24)),
                                         dict(ignore_index=-100), dict(z_loss=1e-3)],
                             ids=["plain", "weight", "ignore_index", "z_loss"])
    @pytest.mark.parametrize("mixed", [False, True], ids=["all-unshifted", "mixed"])
    def test_matches_float64_and_unblocked(self, monkeypatch, options, mixed):
        logits = self._logits(mixed)
        labels = RNG.integers(0, 24, size=40)
        labels[2] = 0
        labels[6] = 1
        if "ignore_index" in options:
            labels[5::7] = -100
        logits32 = _readonly(logits.astype(np.float32))
        blocked = _results("cross_entropy_with_grad", logits32, labels, reduction="none", **options)
        _assert_same(blocked, _unblocked(monkeypatch, "cross_entropy_with_grad", logits32, labels,
                                         reduction="none", **options))
        # Against float64 on the float32-rounded logits: to float32 accuracy, tiny losses included.
        exact = _results("cross_entropy_with_grad", logits32.astype(np.float64), labels,
                         reduction="none", **options)
        np.testing.assert_allclose(blocked[0], exact[0], rtol=2e-6)
        np.testing.assert_allclose(blocked[1], exact[1], rtol=1e-5, atol=1e-7)
        if "z_loss" not in options:
            assert 0 < blocked[0][2] < 1e-9


@pytest.mark.usefixtures("small_blocks")
class TestShortRows:
    """Rows of at most `xentlib._lse.SHORT_ROW` classes: maxes taken column by column, the
    top's 1 found by value (`split_ones`), never by its column."""

    @pytest.mark.parametrize("classes", [1, 2, 10, _lse.SHORT_ROW, _lse.SHORT_ROW + 1])
    def test_split_ones_is_split_top(self, classes):
        logits = RNG.normal(size=(50, classes))
        logits[0] = 1.5  # every class ties
        logits[1, :2] = logits[1].max() + 1.0  # two tied maxes
        logits[2, -1] = logits[2].max() - 1e-17  # equal to the max once rounded
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        rest = _lse.split_ones(e, np, np.empty_like(e))
        _, expected = _lse.split_top(e.copy(), e.argmax(axis=-1), np, top_is_one=True)
        # the same terms, summed in another order past SHORT_ROW
        np.testing.assert_allclose(rest, expected, rtol=4 * np.finfo(float).eps, atol=0)
        assert rest[0] == classes - 1

    def test_ties_keep_the_dtype(self, monkeypatch):
        # Counting ties gives integers, which must not promote a float32 block to float64.
        monkeypatch.setattr(_pass, "_COLUMNS_FROM_ROWS", 1)
        logits = np.zeros((40, 8), dtype=np.float16)  # every row a tie of eight
        labels = RNG.integers(0, 8, size=40)
        for reduction in ("mean", "none"):
            loss, grad = xentlib.cross_entropy_with_grad(logits, labels, reduction=reduction)
            assert loss.dtype == np.float32 and grad.dtype == np.float16
            assert_close(loss, np.full(loss.shape, np.log(8.0), dtype=np.float32), rtol=1e-6)

    @pytest.mark.parametrize("by_columns", [True, False], ids=["by-columns", "by-rows"])
    @pytest.mark.parametrize("dtype", [np.float64, np.float32])
    @pytest.mark.parametrize("classes", [2, 10, _lse.SHORT_ROW, _lse.SHORT_ROW + 1])
    def test_ties_and_special_rows_match_float64_reference(self, monkeypatch, dtype, classes,
                                                             by_columns):
        # Rows that tie, an almost certain row, and rows that make their block irregular
        # (fully masked, +inf, NaN), which then finds its maxes by column index instead.
        monkeypatch.setattr(_blocked, "BLOCK_BYTES",
                            4 * (classes * np.dtype(dtype).itemsize + _pass._ITEM_BYTES))
        monkeypatch.setattr(_pass, "_COLUMNS_FROM_ROWS", 1 if by_columns else 10**9)
        logits = RNG.normal(scale=3.0, size=(24, classes))
        logits[0] = 0.0
        logits[1, :2] = 5.0
        logits[2, 0] = 40.0
        logits[9] = -np.inf
        logits[13, 1] = np.inf
        logits[17, 0] = np.nan
        labels = RNG.integers(0, classes, size=24)
        labels[2] = 0
        logits = _readonly(logits.astype(dtype))
        loss, grad = xentlib.cross_entropy_with_grad(logits, labels, reduction="none")
        ordinary = np.ones(24, dtype=bool)
        ordinary[[2, 9, 13, 17]] = False  # the reference rounds row 2's tiny loss to 0
        exact = logits[ordinary].astype(np.float64)
        want = reference_cross_entropy(exact, labels[ordinary], reduction="none")
        want_grad = reference_cross_entropy_grad(exact, labels[ordinary], reduction="none")
        rtol = 1e-5 if dtype == np.float32 else 1e-13
        # the reference's own error: lse - z_y cancels, a few ulps of logits of about 10
        atol = 50 * np.finfo(dtype).eps
        np.testing.assert_allclose(loss[ordinary], want, rtol=rtol, atol=atol)
        np.testing.assert_allclose(grad[ordinary], want_grad, rtol=rtol, atol=rtol)
        assert np.isnan(loss[13]) and np.isnan(loss[17]) and loss[9] == np.inf
        assert np.isnan(grad[13]).all() and np.isnan(grad[17]).all() and not grad[9].any()
        tiny = np.log1p(np.exp(logits[2, 1:].astype(np.float64) - 40.0).sum())
        np.testing.assert_allclose(loss[2], tiny, rtol=rtol)


class TestProbabilitiesCheckedOnTheWay:
    """Without a caller's buffer, negative or NaN probabilities are found block by block."""

    @pytest.mark.parametrize("bad", [-0.25, np.nan])
    @pytest.mark.parametrize("function", FUNCTIONS)
    def test_same_error_as_before_the_pass(self, function, bad):
        logits, target = _problem((23, 7), kind="probability")
        target = target.copy()
        target[17, 4] = bad
        what = "is negative" if bad < 0 else "is not a number"
        with pytest.raises(ValueError, match=rf"{function}: target\[17, 4\] = {bad} {what}"):
            getattr(xentlib, function)(logits, _readonly(target))

    def test_a_callers_buffer_is_left_alone(self):
        logits, target = _problem((23, 7), kind="probability")
        target = target.copy()
        target[17, 4] = -1.0
        work = logits.copy()
        with pytest.raises(ValueError, match=r"target\[17, 4\] = -1.0 is negative"):
            xentlib.cross_entropy_with_grad(work, target, out=work)
        np.testing.assert_array_equal(work, logits)

    def test_a_separate_buffer_gets_the_same_error(self):
        logits, target = _problem((23, 7), kind="probability")
        target = target.copy()
        target[17, 4] = np.nan
        with pytest.raises(ValueError, match=r"target\[17, 4\] = nan is not a number"):
            xentlib.cross_entropy_with_grad(logits, _readonly(target), out=np.empty_like(logits))

    def test_float32_logits_do_not_round_a_tiny_negative_away(self):
        logits, target = _problem((23, 7), kind="probability")
        target = target.copy()
        target[3, 3] = -1e-50  # 0.0 in float32, still wrong
        with pytest.raises(ValueError, match=r"target\[3, 3\] = -1e-50 is negative"):
            xentlib.cross_entropy(logits.astype(np.float32), target)


def test_callers_on_several_threads_share_the_pool(monkeypatch):
    # Each call claims its own blocks; the shared worker thread only ever helps.
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(_blocked, "THREADS", 2)
    monkeypatch.setattr(_blocked, "BLOCK_BYTES", 5 * (7 * 8 + _pass._ITEM_BYTES))
    problems = [_problem((41, 7)) for _ in range(6)]
    expected = [_unblocked(monkeypatch, "cross_entropy_with_grad", z, y) for z, y in problems]
    with ThreadPoolExecutor(4) as callers:
        results = list(callers.map(lambda p: xentlib.cross_entropy_with_grad(*p), problems))
    for result, want in zip(results, expected, strict=True):
        _assert_same(result, want)
