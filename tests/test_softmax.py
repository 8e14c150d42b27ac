"""softmax, log_softmax and logsumexp: values, dtypes, axes and the hard cases."""

import numpy as np
import pytest
import scipy.special

import xentlib

from .helpers import BFLOAT16, assert_close

RNG = np.random.default_rng(20261124)
INF = np.inf


def _logits(shape, scale=3.0):
    return RNG.normal(scale=scale, size=shape)


class TestSoftmax:
    @pytest.mark.parametrize(
        ("shape", "axis"), [((5,), -1), ((4, 7), -1), ((4, 7), 0), ((2, 3, 4), 1)]
    )
    def test_matches_scipy(self, xp, shape, axis):
        x = _logits(shape)
        assert_close(xentlib.softmax(xp.asarray(x), axis=axis),
                     xp.asarray(scipy.special.softmax(x, axis=axis)), rtol=1e-13)

    def test_rows_are_distributions(self, xp):
        p = xentlib.to_numpy(xentlib.softmax(xp.asarray(_logits((6, 9), scale=30.0))))
        assert np.all((p >= 0) & (p <= 1))
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-14)

    def test_huge_logits_do_not_overflow(self, xp):
        p = xentlib.softmax(xp.asarray([1000.0, 999.0, 0.0]))
        expected = scipy.special.softmax(np.array([1.0, 0.0, -999.0]))
        assert_close(p, xp.asarray(expected), rtol=1e-14)

    def test_minus_inf_masks_a_class(self, xp):
        p = xentlib.softmax(xp.asarray([[0.0, -INF, 0.0]]))
        assert_close(p, xp.asarray([[0.5, 0.0, 0.5]]))

    def test_fully_masked_row_is_zero_and_leaves_others(self, xp):
        p = xentlib.softmax(xp.asarray([[-INF, -INF], [0.0, 0.0]]))
        assert_close(p, xp.asarray([[0.0, 0.0], [0.5, 0.5]]))

    @pytest.mark.parametrize("bad", [INF, np.nan])
    def test_plus_inf_or_nan_gives_nan_in_its_row_only(self, xp, bad):
        p = xentlib.to_numpy(xentlib.softmax(xp.asarray([[1.0, bad], [0.0, 0.0]])))
        assert np.isnan(p[0]).all()  # no distribution at all, not a half-finite one
        np.testing.assert_array_equal(p[1], [0.5, 0.5])

    @pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
    def test_keeps_floating_dtype(self, xp, dtype):
        if dtype == "bfloat16" and (BFLOAT16 is None or xp.__name__ != "numpy"):
            pytest.skip("bfloat16 needs ml_dtypes and NumPy")
        dtype = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
        x = np.array([[1.0, 2.0, 3.0]]).astype(dtype)
        p = xentlib.softmax(xp.asarray(x))
        assert p.dtype == dtype
        np.testing.assert_allclose(xentlib.to_numpy(p).astype(np.float64),
                                   scipy.special.softmax(x.astype(np.float64), axis=-1), rtol=1e-2)

    def test_integers_become_float64(self, xp):
        p = xentlib.softmax(xp.asarray([[0, 0]]))
        assert_close(p, xp.asarray([[0.5, 0.5]]))

    def test_python_lists_run_on_numpy(self):
        assert_close(xentlib.softmax([0.0, 0.0]), np.array([0.5, 0.5]))


class TestLogSoftmax:
    @pytest.mark.parametrize(
        ("shape", "axis"), [((5,), -1), ((4, 7), -1), ((4, 7), 0), ((2, 3, 4), 1)]
    )
    def test_matches_scipy(self, xp, shape, axis):
        x = _logits(shape)
        assert_close(xentlib.log_softmax(xp.asarray(x), axis=axis),
                     xp.asarray(scipy.special.log_softmax(x, axis=axis)), rtol=1e-13)

    def test_far_behind_class_keeps_its_log_probability(self, xp):
        # log(softmax) would give log(0) = -inf for the second class.
        assert_close(xentlib.log_softmax(xp.asarray([0.0, -1000.0])), xp.asarray([0.0, -1000.0]))

    def test_confident_row_keeps_tiny_mass(self, xp):
        # log p_0 = -log1p(e^-50) = -1.9287e-22; log(1 / (1 + e^-50)) rounds to 0.
        log_p = xentlib.log_softmax(xp.asarray([0.0, -50.0]))
        assert_close(log_p, xp.asarray([-np.log1p(np.exp(-50.0)), -50.0 - np.log1p(np.exp(-50.0))]),
                     rtol=1e-15)

    def test_fully_masked_row_is_minus_inf(self, xp):
        log_p = xentlib.log_softmax(xp.asarray([[-INF, -INF], [0.0, 0.0]]))
        assert_close(log_p, xp.asarray([[-INF, -INF], [-np.log(2), -np.log(2)]]))

    def test_equals_x_minus_logsumexp(self, xp):
        x = _logits((3, 5))
        expected = x - scipy.special.logsumexp(x, axis=-1, keepdims=True)
        assert_close(xentlib.log_softmax(xp.asarray(x)), xp.asarray(expected), rtol=1e-13)


class TestLogsumexp:
    @pytest.mark.parametrize(
        ("shape", "axis"), [((5,), -1), ((4, 7), -1), ((4, 7), 0), ((2, 3, 4), 1)]
    )
    @pytest.mark.parametrize("keepdims", [False, True])
    def test_matches_scipy(self, xp, shape, axis, keepdims):
        x = _logits(shape)
        expected = scipy.special.logsumexp(x, axis=axis, keepdims=keepdims)
        assert_close(xentlib.logsumexp(xp.asarray(x), axis=axis, keepdims=keepdims),
                     xp.asarray(expected), rtol=1e-13)

    @pytest.mark.parametrize(
        ("x", "expected"),
        [
            ([1e4, 1e4], 1e4 + np.log(2)),
            ([-INF, -INF], -INF),
            ([0.0, INF], INF),
            ([0.0, np.nan], np.nan),
            ([-INF, 0.0], 0.0),
            # log(1 + e^-40): the log1p of the non-max terms keeps it (scipy gh-18295).
            ([0.0, -40.0], np.log1p(np.exp(-40.0))),
        ],
    )
    def test_hard_cases(self, xp, x, expected):
        assert_close(xentlib.logsumexp(xp.asarray(x)), xp.asarray(expected), rtol=1e-15)

    def test_many_tiny_terms(self, xp):
        # A million copies of 1e-40 (as scipy's test): log(1e6 * 1e-40).
        x = xp.asarray(np.full(10**6, np.log(1e-40)))
        assert_close(xentlib.logsumexp(x), xp.asarray(np.log(1e-34)), rtol=1e-12)

    def test_shift_invariance(self, xp):
        x = np.round(_logits((4, 6)), 2)
        shifted = xentlib.to_numpy(xentlib.logsumexp(xp.asarray(x + 100.0)))
        np.testing.assert_allclose(shifted - 100.0, scipy.special.logsumexp(x, axis=-1), rtol=1e-12)

    def test_float16_stays_float16_without_overflow(self, xp):
        # exp(20) overflows float16 (max 65504); the max shift does not.
        lse = xentlib.logsumexp(xp.asarray(np.array([20.0, 20.0], dtype=np.float16)))
        assert_close(lse, xp.asarray(np.float16(20.0 + np.log(2))), rtol=1e-3)


class TestNumpyConventions:
    """Where the design is silent, xentlib answers as NumPy and SciPy do."""

    @pytest.mark.parametrize("func", [xentlib.logsumexp, xentlib.naive.logsumexp])
    def test_full_reduction_is_a_numpy_scalar(self, func):
        # As np.sum and scipy.special.logsumexp: a scalar, not a 0-d array.
        assert type(func(np.array([1000.0, 1000.0]) / 1000)) is np.float64

    def test_loss_reductions_are_numpy_scalars(self):
        logits, labels = np.array([[1.0, 2.0], [0.5, 0.0]], np.float32), np.array([0, 1])
        for reduction in ("mean", "sum", 2.0):
            loss = xentlib.cross_entropy(logits, labels, reduction=reduction)
            assert type(loss) is np.float32, reduction
        assert type(xentlib.cross_entropy_with_grad(logits, labels)[0]) is np.float32
        assert type(xentlib.linear_cross_entropy(logits, np.eye(2), labels)) is np.float64

    def test_logsumexp_over_an_empty_axis_is_minus_inf(self):
        x = np.zeros((2, 0, 3))
        np.testing.assert_array_equal(xentlib.logsumexp(x, axis=1),
                                      scipy.special.logsumexp(x, axis=1))
