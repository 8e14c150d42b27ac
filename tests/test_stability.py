"""Huge offsets per dtype, and shift invariance of loss and gradient.

After optax's stability tests.
"""

import numpy as np
import pytest

import xentlib

from .helpers import BFLOAT16, assert_close

C = 7


def _dtype(name, xp):
    if name == "bfloat16":
        if BFLOAT16 is None or xp.__name__ != "numpy":
            pytest.skip("bfloat16 needs ml_dtypes and NumPy")
        return BFLOAT16
    return np.dtype(name)


@pytest.mark.parametrize(
    ("dtype", "offset"),
    [
        ("float64", 1e8),
        ("float32", 1e6),
        ("float32", 1e8),
        ("float16", 4096.0),
        ("bfloat16", 256.0),
    ],
)
def test_uniform_logits_far_from_zero(xp, dtype, offset):
    # Uniform logits: the loss is log C whatever the offset, to float32 rounding or better.
    dtype = _dtype(dtype, xp)
    logits = np.full((3, C), offset).astype(dtype)
    loss, grad = xentlib.cross_entropy_with_grad(xp.asarray(logits), xp.asarray([0, 3, 6]))
    work = np.float64 if dtype == np.float64 else np.float32
    eps = np.finfo(work).eps
    np.testing.assert_allclose(float(loss), np.log(C), rtol=2 * eps)
    expected = np.full((3, C), 1 / C) - np.eye(C)[[0, 3, 6]]
    grad_eps = np.finfo(np.float16 if dtype.itemsize == 2 else work).eps
    np.testing.assert_allclose(
        xentlib.to_numpy(grad).astype(np.float64), expected / 3, atol=2 * float(grad_eps)
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shift_changes_neither_loss_nor_gradient(xp, dtype):
    # Integer-valued logits, so adding the shift is exact in the dtype.
    rng = np.random.default_rng(3)
    logits = rng.integers(-20, 20, size=(5, C)).astype(dtype)
    labels = rng.integers(0, C, size=5)
    base = xentlib.cross_entropy_with_grad(
        xp.asarray(logits), xp.asarray(labels), label_smoothing=0.1
    )
    shifted = xentlib.cross_entropy_with_grad(
        xp.asarray(logits + 1e6), xp.asarray(labels), label_smoothing=0.1
    )
    assert_close(shifted[0], base[0], rtol=4 * np.finfo(dtype).eps)
    assert_close(shifted[1], base[1], rtol=0, atol=4 * np.finfo(dtype).eps)


def test_minus_inf_non_target_logit_does_no_harm(xp):
    logits = np.array([[3.0, -np.inf, 1.0, 0.0]])
    masked = xentlib.cross_entropy_with_grad(xp.asarray(logits), xp.asarray([2]))
    dropped = xentlib.cross_entropy_with_grad(xp.asarray(logits[:, [0, 2, 3]]), xp.asarray([1]))
    assert_close(masked[0], dropped[0], rtol=1e-15)
    assert_close(masked[1][:, [0, 2, 3]], dropped[1], rtol=1e-15)


def test_confident_right_prediction_keeps_its_tiny_loss(xp):
    # -log p_y = log1p(e^-40) = 4.2e-18; log(sum(exp)) - z_y would round it to 0.
    loss = xentlib.cross_entropy(xp.asarray([[40.0, 0.0]]), xp.asarray([0]))
    assert_close(loss, xp.asarray(np.log1p(np.exp(-40.0))), rtol=1e-15)


def test_half_precision_batch_whose_naive_mean_overflows(xp):
    # Each item's loss is ~100; summing 1024 of them in float16 passes 65504.
    logits = np.zeros((1024, 3), dtype=np.float16)
    logits[:, 0] = 100.0
    labels = np.full(1024, 2)
    items = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction="none")
    with np.errstate(over="ignore"):
        assert np.isinf(np.sum(xentlib.to_numpy(items).astype(np.float16), dtype=np.float16))
    loss = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction="sum")
    expected = np.float32(1024 * (100.0 + np.log1p(2 * np.exp(-100.0))))
    assert_close(loss, xp.asarray(expected), rtol=1e-6)


FLOAT32_LN_MAX = float(np.log(np.finfo(np.float32).max))


@pytest.mark.parametrize("num_classes", [2, 10, 1000, 32768, 131072])
def test_float32_rows_at_and_past_the_unshifted_exp_bound(num_classes):
    # float32 may skip the max shift while a row's C exponentials cannot overflow in sum:
    # max <= ln(float32 max) - ln C - 1. Equal logits at, just past and far past that bound
    # must still give log C and the uniform softmax; without the ln C the sum overflows.
    bound = FLOAT32_LN_MAX - np.log(num_classes) - 1
    values = np.array([bound - 0.01, bound + 0.01, 87.0, FLOAT32_LN_MAX - 0.1])
    logits = np.repeat(values[:, None], num_classes, axis=1).astype(np.float32)
    labels = np.arange(len(values)) % num_classes
    loss, grad = xentlib.cross_entropy_with_grad(logits, labels, reduction="none")
    expected = np.full(logits.shape, 1 / num_classes)
    expected[np.arange(len(values)), labels] -= 1
    # float32 tolerances (4 sqrt(eps)): a sum of 131072 unshifted float32 exponentials
    # is accurate to about 1e-5 relative; an overflow gives inf or NaN.
    assert_close(loss, np.full(len(values), np.log(num_classes), dtype=np.float32))
    assert_close(grad, expected.astype(np.float32), atol=1e-7 / num_classes)
