"""Against independent oracles: mpmath at 50 digits, and torch.nn.functional.cross_entropy.

scipy.special is the oracle of softmax, log_softmax and logsumexp in
test_softmax.py.
"""

import itertools

import mpmath
import numpy as np
import pytest

import xentlib

from .helpers import reference_cross_entropy

RNG = np.random.default_rng(5)


def _mp_loss_and_grad(row, label):
    """Loss and gradient of one item, computed with 50 significant digits."""
    with mpmath.workdps(50):
        z = [mpmath.mpf(float(v)) for v in row]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z))
        grad = [mpmath.exp(v - lse) - (1 if k == label else 0) for k, v in enumerate(z)]
        probs = [float(mpmath.exp(v - lse)) for v in z]
        return float(lse - z[label]), np.array([float(g) for g in grad]), probs


CASES = {
    "normal": RNG.normal(scale=3.0, size=(4, 6)),
    "wide": RNG.normal(scale=30.0, size=(4, 6)),
    "offset": 1e5 + RNG.normal(size=(4, 6)),
    "confident": np.array([[30.0, 0.0, -5.0, 1.0, 2.0, -30.0]] * 4),
}


@pytest.mark.parametrize("logits", CASES.values(), ids=CASES.keys())
def test_loss_and_gradient_within_a_few_ulps_of_mpmath(logits):
    labels = np.array([0, 1, 2, 5])
    loss, grad = xentlib.cross_entropy_with_grad(logits, labels, reduction="none")
    for i, label in enumerate(labels):
        exact_loss, exact_grad, p = _mp_loss_and_grad(logits[i], label)
        assert abs(loss[i] - exact_loss) <= 4 * np.spacing(exact_loss), (i, loss[i], exact_loss)
        # Two effects set the gradient's bound (Blanchard, Higham & Higham 2021): exp
        # amplifies the rounding of its argument z_k - max(z) by |z_k - max(z)|, and
        # p_y - 1 cancels, so its error is an ulp of p_y, not of the tiny difference.
        condition = 2 + np.abs(logits[i] - logits[i].max())
        bound = 4 * condition * np.spacing(np.maximum(np.abs(exact_grad), p))
        assert np.all(np.abs(grad[i] - exact_grad) <= bound), (i, grad[i], exact_grad)


torch = pytest.importorskip("torch", reason="torch (the CPU build) is installed by .ci/run only")
F = torch.nn.functional

N, C = 6, 5
WEIGHT = np.array([0.5, 2.0, 1.0, 0.25, 3.0])
COMBINATIONS = list(itertools.product(
    ["index", "probability"],  # target kind
    [None, WEIGHT],             # weight
    [False, True],              # ignore_index (index targets only)
    [0.0, 0.15],                # label_smoothing
    ["none", "sum", "mean"],    # reduction
    [(N, C), (3, C, 2, 2)],     # logits shape; the second with the class axis at 1, as torch
))


def _case_id(case):
    kind, weight, ignore, eps, reduction, shape = case
    return f"{kind}-w={weight is not None}-ignore={ignore}-eps={eps}-{reduction}-{len(shape)}d"


@pytest.mark.parametrize("case", [c for c in COMBINATIONS if not (c[0] == "probability" and c[2])],
                         ids=_case_id)
def test_matches_torch(case):
    kind, weight, ignore, eps, reduction, shape = case
    axis = 1
    logits = RNG.normal(scale=2.0, size=shape)
    batch = (shape[0], *shape[2:])
    if kind == "index":
        target = RNG.integers(0, C, size=batch)
        if ignore:
            target.flat[::4] = -100
    else:
        target = np.moveaxis(RNG.dirichlet(np.ones(C), size=batch), -1, 1)
    ignore_index = -100 if ignore else None

    z = torch.from_numpy(logits.copy()).requires_grad_()
    expected = F.cross_entropy(
        z, torch.from_numpy(target), weight=None if weight is None else torch.from_numpy(weight),
        ignore_index=-100, label_smoothing=eps, reduction=reduction,
    )
    expected.sum().backward()

    options = dict(
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=eps,
        reduction=reduction,
    )
    loss, grad = xentlib.cross_entropy_with_grad(logits, target, **options)
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-12, atol=1e-15)
    # The dense reference that stands in for torch where torch has no oracle (z_loss) agrees too.
    np.testing.assert_allclose(
        reference_cross_entropy(logits, target, **options),
        expected.detach().numpy(),
        rtol=1e-12,
        atol=1e-15,
    )


def test_number_reduction_is_torch_sum_over_the_number():
    logits = RNG.normal(size=(N, C))
    labels = RNG.integers(0, C, size=N)
    total = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction="sum")
    np.testing.assert_allclose(
        xentlib.cross_entropy(logits, labels, reduction=1000),
        (total / 1000).numpy(),
        rtol=1e-14,
    )


def test_float32_matches_torch_float32():
    logits = RNG.normal(scale=4.0, size=(64, 100)).astype(np.float32)
    labels = RNG.integers(0, 100, size=64)
    z = torch.from_numpy(logits.copy()).requires_grad_()
    expected = F.cross_entropy(z, torch.from_numpy(labels), label_smoothing=0.1)
    expected.backward()
    loss, grad = xentlib.cross_entropy_with_grad(logits, labels, label_smoothing=0.1)
    assert loss.dtype == grad.dtype == np.float32
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-5, atol=1e-9)
