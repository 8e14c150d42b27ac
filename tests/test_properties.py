"""Properties that hold for every input: hypothesis searches for the counterexample.

Each property runs twice. The quick version draws small arrays element by
element (hypothesis aims at the awkward values) and runs in ``make test``. The
``slow`` version (``make test-slow``: ``HYPOTHESIS_PROFILE=ci``, 3000 examples)
also draws wide rows, up to 50000 classes, from a seeded generator, on the
NumPy pass cut into one-row blocks and in one block.

Accuracy is measured in ulps of the dtype against the float64 reference of
``tests/helpers``, with bounds that a correctly rounded computation meets:
error in ``z - max(z)`` (an ulp of the largest logit, which the reference
makes too, amplified by ``exp`` by ``|z - max(z)|``) plus a few ulps of the
result.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import xentlib
import xentlib._blocked

from .helpers import assert_close, reference_cross_entropy, reference_cross_entropy_grad

shapes = st.tuples(st.integers(1, 6), st.integers(1, 8))
finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
DTYPES = [np.float64, np.float32]
# The reference for bounds in ulps of float64: 64-bit significands on x86. Where long double
# is float64 the bounds below widen by the reference's own error, a few ulps of 1.
EXTENDED = np.longdouble
reductions = st.sampled_from(["none", "sum", "mean", 3.0])


@st.composite
def logits_and_labels(draw, dtype=np.float64):
    shape = draw(shapes)
    logits = draw(arrays(dtype, shape, elements=finite.map(dtype)))
    labels = draw(arrays(np.int64, shape[:1], elements=st.integers(0, shape[1] - 1)))
    return logits, labels


@st.composite
def wide_logits_and_labels(draw, dtype=np.float64):
    """Rows of up to 50000 classes (then few rows), or up to 64 rows of a few classes.

    The values come from a seeded generator, at a drawn scale, rounded to
    integers in some draws (ties), with the label at the row's max in some
    (the confident rows, whose loss is tiny).
    """
    classes = draw(st.one_of(st.integers(1, 40), st.integers(1000, 50000)))
    rows = draw(st.integers(1, 3 if classes > 1000 else 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 100.0, 1e4]))
    logits = rng.normal(scale=scale, size=(rows, classes)) + draw(st.sampled_from([0.0, -3e3]))
    if draw(st.booleans()):
        logits = np.round(logits)
    labels = rng.integers(0, classes, size=rows)
    if draw(st.booleans()):
        labels = np.argmax(logits, axis=-1)
    return logits.astype(dtype), labels


@st.composite
def problems(draw):
    """Either kind of logits above, in float64 or float32."""
    dtype = draw(st.sampled_from(DTYPES))
    return draw(st.one_of(logits_and_labels(dtype), wide_logits_and_labels(dtype)))


@pytest.fixture(params=["one_block", "row_blocks"])
def blocks(request, monkeypatch):
    """The NumPy pass over all rows at once, or one row per block (on two threads)."""
    budget = 1 << 40 if request.param == "one_block" else 1
    monkeypatch.setattr(xentlib._blocked, "BLOCK_BYTES", budget)
    monkeypatch.setattr(xentlib._blocked, "THREADS", 2)
    return request.param


def _ulps(dtype, x):
    """The spacing of dtype at |x|, as float64."""
    return np.spacing(np.abs(np.asarray(x, np.float64)).astype(dtype)).astype(np.float64)


def _check_softmax_rows_are_distributions(xp, logits):
    p = xentlib.to_numpy(xentlib.softmax(xp.asarray(logits)))
    assert p.dtype == logits.dtype
    assert np.all((p >= 0) & (p <= 1))
    # Each p_j is within a few ulps of its own; their sum is within that of 1.
    eps = np.finfo(logits.dtype).eps
    spread = 4 + np.abs(logits - logits.max(axis=-1, keepdims=True)).astype(np.float64)
    bound = 4 * eps + eps * np.sum(spread * p, axis=-1, dtype=np.float64)
    error = np.abs(np.sum(p, axis=-1, dtype=np.float64) - 1)
    assert np.all(error <= bound), (error / eps, bound / eps)


def _check_shift_invariance(xp, logits, labels, shift):
    dtype = logits.dtype.type
    moved_logits = logits + dtype(shift)
    base = xentlib.cross_entropy_with_grad(xp.asarray(logits), xp.asarray(labels), reduction="none")
    moved = xentlib.cross_entropy_with_grad(xp.asarray(moved_logits), xp.asarray(labels),
                                            reduction="none")
    # Adding the shift rounds each logit by up to half an ulp of its new magnitude; each result
    # keeps its own few ulps, amplified in the gradient by exp as against the reference.
    moved_by = np.max(np.abs(moved_logits.astype(np.float64) - shift - logits), initial=0)
    base_loss, base_grad = (xentlib.to_numpy(a).astype(np.float64) for a in base)
    moved_loss, moved_grad = (xentlib.to_numpy(a).astype(np.float64) for a in moved)
    largest = np.max(np.abs(logits))
    loss_bound = 2 * moved_by + 8 * _ulps(dtype, base_loss) + 4 * _ulps(dtype, largest)
    assert np.all(np.abs(moved_loss - base_loss) <= loss_bound)
    grad_bound = 2 * moved_by + _gradient_bound(logits, labels, base_grad)
    assert np.all(np.abs(moved_grad - base_grad) <= grad_bound)


def _check_loss_is_never_negative(xp, logits, labels, smoothing):
    loss = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), label_smoothing=smoothing,
                                 reduction="none")
    assert np.all(xentlib.to_numpy(loss) >= 0)


def _check_one_hot_gradient_rows_sum_to_zero(xp, logits, labels):
    # p - y sums to 1 - 1 per row: each p_j is within its bound, and so is the sum.
    grad = xentlib.cross_entropy_grad(xp.asarray(logits), xp.asarray(labels), reduction="sum")
    grad = xentlib.to_numpy(grad)
    assert grad.dtype == logits.dtype
    bound = np.sum(_gradient_bound(logits, labels, grad), axis=-1)
    error = np.abs(np.sum(grad, axis=-1, dtype=np.float64))
    assert np.all(error <= bound), (error, bound)


def _softmax64(logits):
    """softmax in float64, for the weights of the bounds."""
    z = logits.astype(np.float64)
    p = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return p / np.sum(p, axis=-1, keepdims=True)


def _gradient_bound(logits, labels, grad, scale=1.0):
    """What each gradient entry may be off by: ``exp`` turns an ulp of error in ``z_j - max``
    into ``|z_j - max|`` ulps of ``p_j``; the label's ``p - 1`` cancels, so an ulp of ``p``.
    ``scale`` is the reduction's factor, which the gradient carries."""
    z = logits.astype(np.float64)
    p = _softmax64(logits)
    condition = 4 + np.abs(z - np.max(z, axis=-1, keepdims=True))
    return 4 * condition * _ulps(logits.dtype, np.maximum(np.abs(grad), p * scale))


def _check_against_the_reference(xp, logits, labels, reduction):
    z, y = xp.asarray(logits), xp.asarray(labels)
    items = xentlib.to_numpy(xentlib.cross_entropy(z, y, reduction="none"))
    loss, grad = (xentlib.to_numpy(a)
                  for a in xentlib.cross_entropy_with_grad(z, y, reduction=reduction))
    assert items.dtype == loss.dtype == grad.dtype == logits.dtype
    expected_items = reference_cross_entropy(logits, labels, reduction="none", dtype=EXTENDED)
    # Each loss is log(sum_j e^(z_j - m)) - (z_y - m): a few ulps of it, an ulp of z_y - m,
    # and the rounding of every z_j - m (half an ulp of it), which exp turns into a relative
    # error of e^(z_j - m) that the log passes on weighted by p_j. The reference's log of a
    # sum near 1 adds a few ulps of 1 in its own precision.
    gaps = np.abs(logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True))
    label_gap = np.take_along_axis(gaps, labels[:, None], axis=-1)[:, 0]
    p = _softmax64(logits)
    item_bounds = (4 * _ulps(logits.dtype, expected_items) + 2 * _ulps(logits.dtype, label_gap)
                   + np.finfo(logits.dtype).eps * np.sum(p * gaps, axis=-1)
                   + 4 * np.finfo(EXTENDED).eps)
    item_errors = np.abs(items - expected_items)
    assert np.all(item_errors <= item_bounds), np.max(item_errors / item_bounds)
    # The reduced loss: those errors, scaled, and a few ulps for the sum of the items.
    scales = {"none": 1.0, "sum": 1.0, "mean": 1 / len(labels)}
    scale = scales[reduction] if isinstance(reduction, str) else 1 / reduction
    expected_loss = reference_cross_entropy(logits, labels, reduction=reduction, dtype=EXTENDED)
    loss_bound = scale * np.sum(item_bounds) + (2 + np.log2(len(labels))) * _ulps(
        logits.dtype, np.sum(expected_items) * scale)
    assert np.all(np.abs(loss - expected_loss) <= loss_bound)
    expected_grad = reference_cross_entropy_grad(logits, labels, reduction=reduction,
                                                 dtype=EXTENDED)
    grad_error = np.abs(grad - expected_grad)
    grad_bound = _gradient_bound(logits, labels, expected_grad, scale)
    assert np.all(grad_error <= grad_bound), np.max(grad_error / grad_bound)
    # (p - 1) s for the label, p s for the others: the signs hold exactly, since the computed
    # sum of the exponentials is at least each of its terms.
    is_label = np.arange(logits.shape[-1]) == labels[:, None]
    assert np.all(np.where(is_label, grad <= 0, grad >= 0)), "a gradient entry of the wrong sign"


# The quick versions, in `make test`.


@given(logits=arrays(np.float64, shapes, elements=finite))
def test_softmax_rows_are_distributions(xp, logits):
    _check_softmax_rows_are_distributions(xp, logits)


@given(problem=logits_and_labels(), shift=st.integers(-1000, 1000))
def test_shift_invariance(xp, problem, shift):
    _check_shift_invariance(xp, *problem, shift)


@given(problem=logits_and_labels(), smoothing=st.floats(0, 1))
def test_loss_is_never_negative(xp, problem, smoothing):
    _check_loss_is_never_negative(xp, *problem, smoothing)


@given(problem=logits_and_labels())
def test_one_hot_gradient_rows_sum_to_zero(xp, problem):
    _check_one_hot_gradient_rows_sum_to_zero(xp, *problem)


@given(problem=st.sampled_from(DTYPES).flatmap(logits_and_labels), reduction=reductions)
def test_loss_and_gradient_against_the_reference(xp, problem, reduction):
    _check_against_the_reference(xp, *problem, reduction)


@given(problem=logits_and_labels(), smoothing=st.sampled_from([0.0, 0.1]),
       z_loss=st.sampled_from([0.0, 1e-4]), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_fused_against_the_reference_and_the_loss(xp, problem, smoothing, z_loss, reduction):
    logits, labels = problem
    options = dict(label_smoothing=smoothing, z_loss=z_loss, reduction=reduction)
    loss, grad = xentlib.cross_entropy_with_grad(xp.asarray(logits), xp.asarray(labels), **options)
    # Users swap the fused call for the loss alone and expect the same number, to the last bit.
    assert_close(loss, xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), **options),
                 rtol=0)
    # An ulp of the largest logit (1e4), the error of z - max(z), in absolute terms; z-loss
    # multiplies the gradient's p by up to 1 + 2 c LSE and adds c LSE^2 to the loss.
    ulp = 8 * np.spacing(1e4) * (1 + 2e4 * z_loss)
    expected_loss = reference_cross_entropy(logits, labels, **options)
    assert_close(loss, xp.asarray(expected_loss), rtol=1e-13, atol=ulp)
    expected_grad = reference_cross_entropy_grad(logits, labels, **options)
    assert_close(grad, xp.asarray(expected_grad), rtol=1e-12, atol=ulp)


# The slow versions: `make test-slow` runs them at 3000 examples each.


@pytest.mark.slow
@given(problem=problems())
def test_softmax_rows_are_distributions_at_scale(blocks, problem):
    _check_softmax_rows_are_distributions(np, problem[0])


@pytest.mark.slow
@given(problem=problems(), shift=st.integers(-1000, 1000))
def test_shift_invariance_at_scale(blocks, problem, shift):
    _check_shift_invariance(np, *problem, shift)


@pytest.mark.slow
@given(problem=problems(), smoothing=st.floats(0, 1))
def test_loss_is_never_negative_at_scale(blocks, problem, smoothing):
    _check_loss_is_never_negative(np, *problem, smoothing)


@pytest.mark.slow
@given(problem=problems())
def test_one_hot_gradient_rows_sum_to_zero_at_scale(blocks, problem):
    _check_one_hot_gradient_rows_sum_to_zero(np, *problem)


@pytest.mark.slow
@given(problem=problems(), reduction=reductions)
def test_loss_and_gradient_against_the_reference_at_scale(blocks, problem, reduction):
    _check_against_the_reference(np, *problem, reduction)
