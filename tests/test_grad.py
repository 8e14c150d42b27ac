"""The analytic gradient: against finite differences and the float64 reference for every option.

The reference gradient itself is checked here against torch autograd and
against finite differences of the reference loss.
"""

import numpy as np
import pytest

import xentlib

from .helpers import BFLOAT16, assert_close, reference_cross_entropy, reference_cross_entropy_grad

RNG = np.random.default_rng(11)
WEIGHT = np.array([0.5, 2.0, 1.0, 3.0])

CASES = {
    "plain": dict(),
    "weight": dict(weight=WEIGHT),
    "ignore_index": dict(ignore_index=-100),
    "label_smoothing": dict(label_smoothing=0.3),
    "z_loss": dict(z_loss=0.1),
    "everything": dict(weight=WEIGHT, ignore_index=-100, label_smoothing=0.1, z_loss=0.05),
    "sum": dict(reduction="sum"),
    "number": dict(reduction=3.5),
    "weighted_sum": dict(weight=WEIGHT, reduction="sum", label_smoothing=0.2),
}


def _index_problem(shape=(5, 4), axis=-1):
    logits = RNG.normal(scale=2.0, size=shape)
    batch = list(shape)
    del batch[axis]
    labels = RNG.integers(0, shape[axis], size=batch)
    labels.flat[1] = -100
    return logits, labels


def _check_against_finite_differences(xp, logits, target, **options):
    logits, target = xp.asarray(logits), xp.asarray(target)

    def loss(z):
        return xentlib.cross_entropy(z, target, **options)

    analytic = xentlib.cross_entropy_grad(logits, target, **options)
    assert_close(analytic, xentlib.numerical_gradient(loss, logits), rtol=1e-6, atol=1e-9)
    expected = reference_cross_entropy_grad(xentlib.to_numpy(logits), xentlib.to_numpy(target),
                                            **options)
    assert_close(analytic, xp.asarray(expected), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
def test_index_targets(xp, options):
    logits, labels = _index_problem()
    if "ignore_index" not in options:
        labels.flat[1] = 0
    _check_against_finite_differences(xp, logits, labels, **options)


@pytest.mark.parametrize(
    "options", [o for o in CASES.values() if "ignore_index" not in o],
    ids=[k for k, o in CASES.items() if "ignore_index" not in o],
)
def test_probability_targets(xp, options):
    logits = RNG.normal(size=(4, 4))
    target = RNG.dirichlet(np.ones(4), size=4)
    _check_against_finite_differences(xp, logits, target, **options)


def test_class_axis_1_with_extra_dims(xp):
    logits, labels = _index_problem(shape=(2, 4, 3), axis=1)
    _check_against_finite_differences(xp, logits, labels, axis=1, ignore_index=-100,
                                      label_smoothing=0.1)


def test_reduction_none_gives_each_items_own_gradient(xp):
    logits, labels = _index_problem()
    labels.flat[1] = 2
    per_item = xentlib.cross_entropy_grad(xp.asarray(logits), xp.asarray(labels), reduction="none")
    summed = xentlib.cross_entropy_grad(xp.asarray(logits), xp.asarray(labels), reduction="sum")
    assert_close(per_item, summed)
    # One item's gradient involves only its own logits.
    for i in range(logits.shape[0]):
        own = xentlib.cross_entropy_grad(xp.asarray(logits[i : i + 1]),
                                         xp.asarray(labels[i : i + 1]), reduction="sum")
        assert_close(per_item[i : i + 1], own)


def test_is_softmax_minus_one_hot_over_n(xp):
    logits, labels = _index_problem()
    labels.flat[1] = 3
    expected = (xentlib.softmax(xp.asarray(logits)) - xentlib.one_hot(xp.asarray(labels), 4)) / 5
    assert_close(xentlib.cross_entropy_grad(xp.asarray(logits), xp.asarray(labels)), expected)


class TestFused:
    @pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
    def test_equals_the_reference(self, xp, options):
        logits, labels = _index_problem()
        ignore = dict(ignore_index=-100) if "ignore_index" not in options else {}
        for reduction in ("mean", "none"):
            opts = {"reduction": reduction, **ignore, **options}
            loss, grad = xentlib.cross_entropy_with_grad(xp.asarray(logits), xp.asarray(labels),
                                                         **opts)
            assert_close(loss, xp.asarray(reference_cross_entropy(logits, labels, **opts)),
                         rtol=1e-13, atol=1e-16)
            assert_close(grad, xp.asarray(reference_cross_entropy_grad(logits, labels, **opts)),
                         rtol=1e-12, atol=1e-15)
            # Users swap one for the other and expect the same number, to the last bit.
            alone = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), **opts)
            assert_close(loss, alone, rtol=0)

    def test_out_buffer_is_filled_and_returned(self, xp):
        logits, labels = _index_problem()
        labels.flat[1] = 0
        out = np.full_like(logits, np.nan)
        out = xp.asarray(out) if xp.__name__ != "numpy" else out
        loss, grad = xentlib.cross_entropy_with_grad(xp.asarray(logits), xp.asarray(labels),
                                                     out=out)
        assert grad is out
        assert_close(grad, xentlib.cross_entropy_grad(xp.asarray(logits), xp.asarray(labels)))

    @pytest.mark.parametrize("axis", [-1, 1])
    def test_in_place_into_the_logits(self, axis):
        logits, labels = _index_problem(shape=(3, 4, 2), axis=axis)
        labels.flat[1] = 0
        expected_loss = xentlib.cross_entropy(logits, labels, axis=axis)
        expected_grad = xentlib.cross_entropy_grad(logits, labels, axis=axis)
        work = logits.copy()
        loss, grad = xentlib.cross_entropy_with_grad(work, labels, axis=axis, out=work)
        assert grad is work
        assert_close(loss, expected_loss, rtol=0)
        assert_close(work, expected_grad, rtol=0)

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
    def test_half_precision_in_place(self, dtype):
        if dtype == "bfloat16" and BFLOAT16 is None:
            pytest.skip("bfloat16 needs ml_dtypes")
        dtype = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
        logits, labels = _index_problem()
        labels.flat[1] = 0
        work = logits.astype(dtype)
        expected = xentlib.cross_entropy_grad(work.astype(np.float32), labels).astype(dtype)
        loss, grad = xentlib.cross_entropy_with_grad(work, labels, out=work)
        assert loss.dtype == np.float32
        assert grad is work
        assert_close(work, expected, rtol=0)


def _kinds_and_cases(without=None):
    """Every case with class indices, and those without ignore_index with probabilities."""
    return [pytest.param(kind, options, id=f"{kind}-{name}")
            for kind in ("index", "probability") for name, options in CASES.items()
            if without not in options and not (kind == "probability" and "ignore_index" in options)]


class TestReference:
    """The float64 reference gradient that the library's gradients are compared with."""

    @pytest.mark.parametrize(("kind", "options"), _kinds_and_cases())
    def test_against_finite_differences_of_the_reference_loss(self, kind, options):
        logits, target = _index_problem(shape=(4, 4, 3), axis=1)
        if kind == "probability":
            target = np.moveaxis(RNG.dirichlet(np.ones(4), size=(4, 3)), -1, 1)
        elif "ignore_index" not in options:
            target.flat[1] = 0

        def loss(z):
            return np.sum(reference_cross_entropy(z, target, axis=1, **options))

        expected = xentlib.numerical_gradient(loss, logits)
        actual = reference_cross_entropy_grad(logits, target, axis=1, **options)
        assert_close(actual, expected, rtol=1e-6, atol=1e-9)

    # torch has no z-loss.
    @pytest.mark.parametrize(("kind", "options"), _kinds_and_cases(without="z_loss"))
    def test_against_torch_autograd(self, kind, options):
        torch = pytest.importorskip("torch", reason="torch (the CPU build) is the oracle")
        logits, target = _index_problem()
        if kind == "probability":
            target = RNG.dirichlet(np.ones(4), size=5)
        elif "ignore_index" not in options:
            target.flat[1] = 0
        reduction = options.get("reduction", "mean")
        weight = options.get("weight")
        weight = None if weight is None else torch.from_numpy(weight)
        z = torch.from_numpy(logits.copy()).requires_grad_()
        loss = torch.nn.functional.cross_entropy(
            z, torch.from_numpy(target), weight=weight,
            ignore_index=-100, label_smoothing=options.get("label_smoothing", 0.0),
            reduction=reduction if isinstance(reduction, str) else "sum",
        )
        (loss if isinstance(reduction, str) else loss / reduction).backward()
        expected = z.grad.numpy()
        assert_close(reference_cross_entropy_grad(logits, target, **options), expected,
                     rtol=1e-12, atol=1e-15)


def test_numerical_gradient_of_a_quadratic(xp):
    # No truncation error for a quadratic; round-off is about eps * |f| / h = 3e-8 here.
    x = xp.asarray([1.0, -2.0, 30.0])
    assert_close(xentlib.numerical_gradient(lambda v: (v**2).sum(), x), 2 * x, atol=1e-7)


def test_numerical_gradient_with_a_fixed_step(xp):
    x = xp.asarray([[0.5, 1.5]])
    grad = xentlib.numerical_gradient(lambda v: (v**3).sum(), x, eps=1e-4)
    assert_close(grad, 3 * x**2, rtol=1e-7)


def test_numerical_gradient_leaves_x_alone():
    x = np.array([1.0, 2.0])
    x.flags.writeable = False
    xentlib.numerical_gradient(lambda v: v.sum(), x)
    np.testing.assert_array_equal(x, [1.0, 2.0])
