"""Assertions and a dense reference implementation shared by the tests."""

import numpy as np
import scipy.special

import xentlib

try:
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # the tests that need it skip
    BFLOAT16 = None


def backend(x):
    """'numpy' or 'cupy': the library an array (or NumPy scalar) belongs to."""
    return type(x).__module__.split(".")[0]


def assert_close(actual, desired, *, rtol=None, atol=0.0):
    """Check the backend, then the dtype, then the shape, then the values.

    ``rtol`` defaults to 4 sqrt(eps) of the dtype. NaNs must sit in the same
    places. Comparing a NumPy result with a CuPy expectation fails, so a test
    cannot claim to cover the GPU while comparing NumPy with NumPy.
    """
    assert backend(actual) == backend(desired), (
        f"{backend(actual)} result, {backend(desired)} expected")
    assert actual.dtype == desired.dtype, f"dtype {actual.dtype}, expected {desired.dtype}"
    assert actual.shape == desired.shape, f"shape {actual.shape}, expected {desired.shape}"
    if rtol is None:
        rtol = 4 * np.finfo(np.float32 if actual.dtype == BFLOAT16 else actual.dtype).eps ** 0.5
    np.testing.assert_allclose(
        xentlib.to_numpy(actual).astype(np.float64),
        xentlib.to_numpy(desired).astype(np.float64),
        rtol=rtol,
        atol=atol,
    )


def _reference_target(logits, target, axis, weight, ignore_index, label_smoothing, dtype):
    """Logits (classes last, in dtype), the dense target q, the valid items, and the mean's
    denominator."""
    z = np.moveaxis(np.asarray(logits, dtype=dtype), axis, -1)
    target = np.asarray(target)
    num_classes = z.shape[-1]
    w = np.ones(num_classes, dtype) if weight is None else np.asarray(weight, dtype=dtype)
    eps = label_smoothing
    if target.dtype.kind in "iu":
        valid = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
        labels = np.where(valid, target, 0)
        one_hot = labels[..., None] == np.arange(num_classes)
        q = ((1 - eps) * one_hot + eps / num_classes) * w * valid[..., None]
        denominator = np.sum(w[labels] * valid)
    else:
        t = np.moveaxis(target.astype(dtype), axis, -1)
        valid = np.ones(t.shape[:-1], bool)
        q = w * ((1 - eps) * t + eps / num_classes)
        denominator = valid.size
    return z, q, valid, denominator


def _reference_scale(reduction, denominator):
    """What the reduction multiplies the summed items by."""
    if reduction in ("none", "sum"):
        return 1.0
    if reduction == "mean":
        return 1 / denominator if denominator else 0.0
    return 1 / reduction


def reference_cross_entropy(
    logits, target, *, axis=-1, weight=None, ignore_index=None,
    label_smoothing=0.0, z_loss=0.0, reduction="mean", dtype=np.float64,
):
    """The loss straight from its definition, dense and in float64 (or ``dtype``) on NumPy.

    Builds the full target distribution q of every item and sums
    ``-q log_softmax``; no gathering, no shortcuts. Checked against torch in
    ``test_oracles``, and the reference for z_loss, which torch lacks.
    ``dtype=np.longdouble`` computes it in extended precision where the
    platform has it (x86: 64-bit significands), for tests in ulps of float64.
    """
    z, q, valid, denominator = _reference_target(logits, target, axis, weight, ignore_index,
                                                 label_smoothing, dtype)
    log_p = scipy.special.log_softmax(z, axis=-1)
    lse = scipy.special.logsumexp(z, axis=-1)
    with np.errstate(invalid="ignore"):  # 0 * -inf at a masked class without target mass
        items = -np.sum(np.where(q == 0, 0, q * log_p), axis=-1)
    items = np.where(valid, items + z_loss * lse**2, 0)
    if reduction == "none":
        return items
    if reduction == "sum":
        return np.sum(items)
    if reduction == "mean":
        return np.sum(items) / denominator if denominator else dtype(0)
    return np.sum(items) / reduction


def reference_cross_entropy_grad(
    logits, target, *, axis=-1, weight=None, ignore_index=None,
    label_smoothing=0.0, z_loss=0.0, reduction="mean", dtype=np.float64,
):
    """The gradient of ``reference_cross_entropy`` with respect to the logits, in float64.

    Differentiating ``-sum_k q_k log_softmax(z)_k + c LSE(z)^2`` gives
    ``(sum_k q_k + 2 c LSE(z)) softmax(z) - q`` per item, times the reduction's
    scale (``reduction="none"`` gives each item's own gradient, as the library
    does); ignored items get 0. In ``dtype`` where given, as the loss. Checked
    against torch autograd and against finite differences of the loss in
    ``test_grad``.
    """
    z, q, valid, denominator = _reference_target(logits, target, axis, weight, ignore_index,
                                                 label_smoothing, dtype)
    p = scipy.special.softmax(z, axis=-1)
    lse = scipy.special.logsumexp(z, axis=-1, keepdims=True)
    grad = (np.sum(q, axis=-1, keepdims=True) + 2 * z_loss * lse) * p - q
    grad = np.where(valid[..., None], grad, 0) * _reference_scale(reduction, denominator)
    return np.moveaxis(grad, -1, axis)
