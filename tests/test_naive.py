"""The textbook versions fail exactly as the chapters say they do."""

import numpy as np
import pytest

import xentlib
from xentlib import naive

from .helpers import assert_close


def test_softmax_overflows_to_nan(xp):
    with pytest.warns(RuntimeWarning, match="overflow"), np.errstate(invalid="ignore"):
        p = xentlib.to_numpy(naive.softmax(xp.asarray([[1.0, 100.0]], dtype=xp.float32)))
    assert np.isnan(p[0, 1])
    safe = xentlib.softmax(xp.asarray([[1.0, 100.0]], dtype=xp.float32))
    assert np.all(np.isfinite(xentlib.to_numpy(safe)))


def test_softmax_is_right_when_nothing_overflows(xp):
    x = xp.asarray([[0.5, -1.0, 2.0]])
    assert_close(naive.softmax(x), xentlib.softmax(x))


def test_batch_softmax_rows_do_not_sum_to_one(xp):
    x = xp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    rows = xentlib.to_numpy(naive.batch_softmax(x).sum(axis=1))
    assert not np.allclose(rows, 1.0)
    np.testing.assert_allclose(rows.sum(), 1.0)


def test_log_of_softmax_hits_log_zero(xp):
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        log_p = xentlib.to_numpy(naive.log_softmax(xp.asarray([[0.0, -1000.0]])))
    assert log_p[0, 1] == -np.inf
    assert float(xentlib.log_softmax(xp.asarray([[0.0, -1000.0]]))[0, 1]) == -1000.0


def test_logsumexp_overflows(xp):
    with pytest.warns(RuntimeWarning, match="overflow"):
        assert np.isinf(float(naive.logsumexp(xp.asarray([[710.0, 0.0]]))[0]))


def test_onehot_product_is_nan_when_a_probability_underflows(xp):
    logits = xp.asarray([[0.0, -800.0, 1.0]])
    probs = xentlib.softmax(logits)
    assert float(probs[0, 1]) == 0.0
    with pytest.warns(RuntimeWarning):
        loss = naive.cross_entropy_onehot(probs, xentlib.one_hot(xp.asarray([0]), 3))
    assert np.isnan(float(loss))
    assert np.isfinite(float(xentlib.cross_entropy(logits, xp.asarray([0]))))


def test_gather_on_probabilities_is_right_then_infinite(xp):
    logits = xp.asarray([[1.0, 2.0], [0.5, -0.5]])
    labels = xp.asarray([1, 0])
    assert_close(
        naive.cross_entropy_gather(xentlib.softmax(logits), labels),
        xentlib.cross_entropy(logits, labels),
    )
    far = xp.asarray([[0.0, -800.0]])
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        assert float(naive.cross_entropy_gather(xentlib.softmax(far), xp.asarray([1]))) == np.inf
    assert float(xentlib.cross_entropy(far, xp.asarray([1]))) == 800.0


def test_gather_wraps_a_negative_label_silently():
    probs = np.array([[0.2, 0.8]])
    wrapped = naive.cross_entropy_gather(probs, np.array([-1]))
    assert wrapped == naive.cross_entropy_gather(probs, np.array([1]))
    with pytest.raises(ValueError, match=r"target\[0\] = -1"):
        xentlib.cross_entropy(np.log(probs), np.array([-1]))
