"""Properties that hold for every input: hypothesis searches for the counterexample."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import xentlib

from .helpers import assert_close

shapes = st.tuples(st.integers(1, 6), st.integers(1, 8))
finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@st.composite
def logits_and_labels(draw):
    shape = draw(shapes)
    logits = draw(arrays(np.float64, shape, elements=finite))
    labels = draw(arrays(np.int64, shape[:1], elements=st.integers(0, shape[1] - 1)))
    return logits, labels


@given(logits=arrays(np.float64, shapes, elements=finite))
def test_softmax_rows_are_distributions(xp, logits):
    p = xentlib.to_numpy(xentlib.softmax(xp.asarray(logits)))
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)


@given(problem=logits_and_labels(), shift=st.integers(-1000, 1000))
def test_shift_invariance(xp, problem, shift):
    logits, labels = problem
    base = xentlib.cross_entropy_with_grad(xp.asarray(logits), xp.asarray(labels), reduction="none")
    moved = xentlib.cross_entropy_with_grad(xp.asarray(logits + shift), xp.asarray(labels), reduction="none")
    # Adding the shift rounds each logit by up to half an ulp of its new magnitude.
    slack = 4 * np.spacing(np.abs(logits).max() + abs(shift))
    assert_close(moved[0], base[0], rtol=1e-12, atol=slack)
    assert_close(moved[1], base[1], rtol=0, atol=slack)


@given(problem=logits_and_labels(), smoothing=st.floats(0, 1))
def test_loss_is_never_negative(xp, problem, smoothing):
    logits, labels = problem
    loss = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), label_smoothing=smoothing,
                                 reduction="none")
    assert np.all(xentlib.to_numpy(loss) >= 0)


@given(problem=logits_and_labels())
def test_one_hot_gradient_rows_sum_to_zero(xp, problem):
    # p - y sums to 1 - 1 per row.
    logits, labels = problem
    grad = xentlib.to_numpy(xentlib.cross_entropy_grad(xp.asarray(logits), xp.asarray(labels), reduction="sum"))
    np.testing.assert_allclose(grad.sum(axis=-1), 0.0, atol=1e-12)


@given(problem=logits_and_labels(), smoothing=st.sampled_from([0.0, 0.1]),
       z_loss=st.sampled_from([0.0, 1e-4]), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_fused_equals_separate_calls(xp, problem, smoothing, z_loss, reduction):
    logits, labels = xp.asarray(problem[0]), xp.asarray(problem[1])
    options = dict(label_smoothing=smoothing, z_loss=z_loss, reduction=reduction)
    loss, grad = xentlib.cross_entropy_with_grad(logits, labels, **options)
    assert_close(loss, xentlib.cross_entropy(logits, labels, **options), rtol=0)
    assert_close(grad, xentlib.cross_entropy_grad(logits, labels, **options), rtol=0)
