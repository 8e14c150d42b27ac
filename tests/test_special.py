"""Non-finite logits and batches with nothing to average, each with its documented behaviour."""

import numpy as np
import pytest

import xentlib

from .helpers import assert_close, reference_cross_entropy

INF = np.inf


class TestMinusInfMasks:
    def test_masked_non_target_class(self, xp):
        logits = np.array([[0.0, -INF, 0.0], [1.0, 2.0, -INF]])
        labels = np.array([0, 1])
        loss, grad = xentlib.cross_entropy_with_grad(
            xp.asarray(logits), xp.asarray(labels), reduction="none"
        )
        # The masked class simply leaves the softmax: [0.5, 0, 0.5] and the 2-class softmax.
        expected = np.array([np.log(2), np.log1p(np.exp(-1.0))])
        assert_close(loss, xp.asarray(expected), rtol=1e-15)
        grad = xentlib.to_numpy(grad)
        assert grad[0, 1] == 0 and grad[1, 2] == 0

    def test_masked_class_with_zero_target_mass_adds_nothing(self, xp):
        # torch gives NaN here: 0 * log(0) = 0 * -inf.
        logits = np.array([[0.0, -INF, 0.0]])
        target = np.array([[0.5, 0.0, 0.5]])
        loss, grad = xentlib.cross_entropy_with_grad(xp.asarray(logits), xp.asarray(target))
        assert_close(loss, xp.asarray(np.log(2.0)))
        assert_close(grad, xp.asarray(np.zeros((1, 3))))

    def test_masked_target_class_is_an_infinite_loss(self, xp):
        loss = xentlib.cross_entropy(xp.asarray([[0.0, -INF]]), xp.asarray([1]))
        assert float(loss) == INF

    def test_fully_masked_row_with_zero_target_gives_zero(self, xp):
        logits = np.array([[-INF, -INF], [0.0, 0.0]])
        target = np.array([[0.0, 0.0], [1.0, 0.0]])
        loss, grad = xentlib.cross_entropy_with_grad(
            xp.asarray(logits), xp.asarray(target), reduction="none"
        )
        assert_close(loss, xp.asarray([0.0, np.log(2.0)]))
        assert_close(grad, xp.asarray([[0.0, 0.0], [-0.5, 0.5]]))

    def test_smoothing_puts_mass_on_a_masked_class(self, xp):
        # Smoothing gives every class eps / C, so a class the model rules out costs infinitely.
        loss = xentlib.cross_entropy(
            xp.asarray([[0.0, -INF, 0.0]]), xp.asarray([0]), label_smoothing=0.1
        )
        assert float(loss) == INF


class TestBadLogitsStayInTheirItem:
    @pytest.mark.parametrize("bad", [INF, np.nan])
    @pytest.mark.parametrize("label", [0, 1])
    def test_item_loss_is_nan_others_untouched(self, xp, bad, label):
        logits = np.array([[1.0, bad, 0.0], [0.5, 0.0, -0.5]])
        labels = np.array([label, 2])
        loss = xentlib.to_numpy(
            xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction="none")
        )
        assert np.isnan(loss[0])
        np.testing.assert_allclose(
            loss[1], reference_cross_entropy(logits[1:], labels[1:]), rtol=1e-15
        )

    @pytest.mark.parametrize("bad", [INF, np.nan])
    def test_gradient_of_other_items_is_finite(self, xp, bad):
        logits = np.array([[1.0, bad, 0.0], [0.5, 0.0, -0.5]])
        labels = np.array([0, 2])
        _, grad = xentlib.cross_entropy_with_grad(
            xp.asarray(logits), xp.asarray(labels), reduction="none"
        )
        grad = xentlib.to_numpy(grad)
        assert np.all(np.isfinite(grad[1]))
        assert np.isnan(grad[0]).any()

    def test_mean_over_a_bad_item_is_nan(self, xp):
        loss = xentlib.cross_entropy(xp.asarray([[np.nan, 0.0], [0.0, 0.0]]), xp.asarray([0, 1]))
        assert np.isnan(float(loss))

    def test_ignored_bad_item_contributes_nothing(self, xp):
        logits = np.array([[INF, 0.0], [0.0, 0.0]])
        loss, grad = xentlib.cross_entropy_with_grad(
            xp.asarray(logits), xp.asarray([-1, 1]), ignore_index=-1
        )
        assert_close(loss, xp.asarray(np.log(2.0)))
        assert_close(grad, xp.asarray([[0.0, 0.0], [0.5, -0.5]]))


class TestNothingToAverage:
    """Mean over nothing is 0.0 with a zero gradient (torch: NaN)."""

    def _check_zero(self, xp, logits, target, **options):
        loss, grad = xentlib.cross_entropy_with_grad(
            xp.asarray(logits), xp.asarray(target), **options
        )
        assert_close(loss, xp.asarray(np.float64(0.0)))
        assert_close(grad, xp.asarray(np.zeros(np.shape(logits))))

    def test_empty_batch(self, xp):
        self._check_zero(xp, np.zeros((0, 3)), np.zeros(0, dtype=np.int64))

    def test_empty_batch_of_probabilities(self, xp):
        self._check_zero(xp, np.zeros((0, 3)), np.zeros((0, 3)))

    def test_every_item_ignored(self, xp):
        self._check_zero(xp, np.ones((3, 4)), np.full(3, -100), ignore_index=-100)

    def test_weights_sum_to_zero(self, xp):
        self._check_zero(xp, np.ones((2, 3)), np.array([1, 1]), weight=np.array([1.0, 0.0, 1.0]))

    def test_empty_batch_reduction_none(self, xp):
        loss = xentlib.cross_entropy(
            xp.asarray(np.zeros((0, 3))),
            xp.asarray(np.zeros(0, dtype=np.int64)),
            reduction="none",
        )
        assert loss.shape == (0,)
