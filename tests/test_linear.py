"""linear_cross_entropy: the chunked loss and gradients equal the float64 reference, in bounded
memory.

The reference is the dense definition (``tests/helpers``) applied to the full
logits ``hidden @ classifier.T + bias`` in float64, its gradient pushed
through the layer by hand: nothing of xentlib's own dense loss.
"""

import tracemalloc

import numpy as np
import pytest

import xentlib
from xentlib import _blocked
from xentlib._lse import merge_partials

from .helpers import BFLOAT16, assert_close, reference_cross_entropy, reference_cross_entropy_grad

RNG = np.random.default_rng(23)
N, D, V = 6, 5, 11
WEIGHT = RNG.uniform(0.5, 2.0, size=V)
WEIGHT[4] = 0.0

CASES = {
    "plain": dict(),
    "bias": dict(bias=True),
    "weight": dict(weight=WEIGHT),
    "ignore_index": dict(ignore_index=-100),
    "label_smoothing": dict(label_smoothing=0.3),
    "z_loss": dict(z_loss=0.05),
    "sum": dict(reduction="sum"),
    "none": dict(reduction="none", bias=True, ignore_index=-1),
    "number": dict(reduction=3.5, label_smoothing=0.1),
    "everything": dict(bias=True, weight=WEIGHT, ignore_index=-100, label_smoothing=0.2,
                       z_loss=0.01),
    "everything_none": dict(bias=True, weight=WEIGHT, ignore_index=-100, label_smoothing=0.2,
                            z_loss=0.01, reduction="none"),
}
# 1 and 3 do not divide V = 11; 64 is more than V; None picks the default.
CHUNKS = [1, 3, 11, 64, None]


def _problem(items=N, ignore_index=None, dtype=np.float64):
    hidden = RNG.normal(size=(items, D)).astype(dtype)
    classifier = RNG.normal(size=(V, D)).astype(dtype)
    bias = RNG.normal(size=V).astype(dtype)
    labels = RNG.integers(0, V, size=items)
    if ignore_index is not None:
        labels[1::3] = ignore_index
    return hidden, classifier, bias, labels


def _dense(xp, hidden, classifier, labels, bias=None, dtype=np.float64, **options):
    """Loss and gradients from the float64 reference on the full logits, as ``dtype`` on ``xp``.

    The layer's chain rule by hand: with ``g`` the gradient of the logits,
    ``grad_hidden = g W``, ``grad_classifier = g^T h``, ``grad_bias = sum_i g_i``.
    """
    h, w = (xentlib.to_numpy(a).astype(np.float64) for a in (hidden, classifier))
    logits = h @ w.T
    if bias is not None:
        logits = logits + xentlib.to_numpy(bias).astype(np.float64)
    labels = xentlib.to_numpy(labels)
    loss = reference_cross_entropy(logits, labels, **options)
    g = reference_cross_entropy_grad(logits, labels, **options)
    grads = [g @ w, g.T @ h] + ([] if bias is None else [np.sum(g, axis=0)])
    return xp.asarray(np.asarray(loss, dtype)), [xp.asarray(x.astype(dtype)) for x in grads]


def _case(xp, options, items=N):
    options = dict(options)
    hidden, classifier, bias, labels = _problem(items, options.get("ignore_index"))
    bias = bias if options.pop("bias", False) else None
    arrays = [xp.asarray(a) for a in (hidden, classifier, labels)]
    return arrays, (None if bias is None else xp.asarray(bias)), options


class TestMatchesDense:
    @pytest.mark.parametrize("chunk_size", CHUNKS)
    @pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
    def test_loss_and_gradients(self, xp, options, chunk_size):
        arrays, bias, options = _case(xp, options)
        loss = xentlib.linear_cross_entropy(*arrays, bias=bias, chunk_size=chunk_size, **options)
        loss_g, *grads = xentlib.linear_cross_entropy_with_grad(
            *arrays, bias=bias, chunk_size=chunk_size, **options)
        dense_loss, dense_grads = _dense(xp, *arrays, bias=bias, **options)
        assert_close(loss, dense_loss, rtol=1e-12)
        assert_close(loss_g, dense_loss, rtol=1e-12)
        assert len(grads) == len(dense_grads)
        for grad, dense in zip(grads, dense_grads, strict=True):
            assert_close(grad, dense, rtol=1e-10, atol=1e-15)

    @pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
    def test_row_blocks_on_threads(self, monkeypatch, options):
        # Blocks of 2 items of a 4-class chunk, on two threads: 13 items leave a block of 1.
        monkeypatch.setattr(_blocked, "BLOCK_BYTES", 2 * 4 * 8)
        monkeypatch.setattr(_blocked, "THREADS", 2)
        arrays, bias, options = _case(np, options, items=13)
        loss, *grads = xentlib.linear_cross_entropy_with_grad(*arrays, bias=bias, chunk_size=4,
                                                              **options)
        dense_loss, dense_grads = _dense(np, *arrays, bias=bias, **options)
        assert_close(loss, dense_loss, rtol=1e-12)
        for grad, dense in zip(grads, dense_grads, strict=True):
            assert_close(grad, dense, rtol=1e-10, atol=1e-15)

    @pytest.mark.parametrize("chunk_size", [1, 4, None])
    def test_one_item(self, xp, chunk_size):
        arrays, bias, options = _case(xp, CASES["everything"], items=1)
        arrays[2] = xp.asarray([3])
        result = xentlib.linear_cross_entropy_with_grad(*arrays, bias=bias, chunk_size=chunk_size,
                                                        **options)
        dense_loss, dense_grads = _dense(xp, *arrays, bias=bias, **options)
        assert_close(result[0], dense_loss, rtol=1e-12)
        for grad, dense in zip(result[1:], dense_grads, strict=True):
            assert_close(grad, dense, rtol=1e-10, atol=1e-15)

    def test_batch_dimensions(self, xp):
        # (B, T, D) hidden states with (B, T) labels, as a language model has them.
        hidden = RNG.normal(size=(2, 3, D))
        classifier = RNG.normal(size=(V, D))
        labels = RNG.integers(0, V, size=(2, 3))
        loss, grad_hidden, _ = xentlib.linear_cross_entropy_with_grad(
            xp.asarray(hidden), xp.asarray(classifier), xp.asarray(labels), chunk_size=4,
            reduction="none")
        dense_loss, (dense_hidden, _) = _dense(xp, hidden.reshape(6, D), classifier,
                                               labels.reshape(6), reduction="none")
        assert_close(loss, dense_loss.reshape(2, 3), rtol=1e-12)
        assert_close(grad_hidden, dense_hidden.reshape(2, 3, D), rtol=1e-10)

    def test_all_ignored_gives_zero(self, xp):
        hidden, classifier, _, _ = _problem()
        labels = xp.full(N, -100)
        loss, grad_hidden, grad_classifier = xentlib.linear_cross_entropy_with_grad(
            xp.asarray(hidden), xp.asarray(classifier), labels, ignore_index=-100, chunk_size=4)
        assert float(loss) == 0.0
        assert not xp.any(grad_hidden) and not xp.any(grad_classifier)

    def test_empty_batch_gives_zero(self, xp):
        loss, grad_hidden, grad_classifier = xentlib.linear_cross_entropy_with_grad(
            xp.zeros((0, D)), xp.ones((V, D)), xp.zeros(0, dtype=xp.int64))
        assert float(loss) == 0.0
        assert grad_hidden.shape == (0, D) and not xp.any(grad_classifier)

    def test_almost_certain_item_keeps_its_tiny_loss(self, xp):
        # The label's logit is 40 above the others: the loss is about 10 exp(-40) = 4e-17,
        # which 1 + 4e-17 would round away; the running sum keeps it below its exact 1.
        hidden = np.array([[1.0]])
        classifier = np.zeros((V, 1))
        classifier[7] = 40.0
        loss = xentlib.linear_cross_entropy(xp.asarray(hidden), xp.asarray(classifier),
                                            xp.asarray([7]), chunk_size=3)
        assert_close(loss, xp.asarray((V - 1) * np.exp(-40.0)), rtol=1e-14)

    def test_minus_inf_bias_masks_a_class(self, xp):
        hidden, classifier, bias, labels = _problem()
        bias[[2, 9]] = -np.inf
        labels[labels == 2] = 0
        labels[labels == 9] = 0
        for options in (dict(), dict(weight=np.where(np.arange(V) == 2, 0.0, 1.0),
                                     label_smoothing=0.1)):
            args = [xp.asarray(a) for a in (hidden, classifier, labels)]
            result = xentlib.linear_cross_entropy_with_grad(
                *args, bias=xp.asarray(bias), chunk_size=4, reduction="none", **options)
            dense_loss, dense_grads = _dense(xp, *args, bias=xp.asarray(bias), reduction="none",
                                             **options)
            assert_close(result[0], dense_loss, rtol=1e-12)
            for grad, dense in zip(result[1:], dense_grads, strict=True):
                assert_close(grad, dense, rtol=1e-10, atol=1e-15)

    def test_minus_inf_with_smoothing_mass_is_infinite(self, xp):
        # Smoothing puts mass on every class, so a masked class costs +inf, as in the dense loss.
        hidden, classifier, bias, labels = _problem()
        bias[5] = -np.inf
        labels[labels == 5] = 0
        loss = xentlib.linear_cross_entropy(xp.asarray(hidden), xp.asarray(classifier),
                                            xp.asarray(labels), bias=xp.asarray(bias),
                                            label_smoothing=0.1, chunk_size=3)
        assert float(loss) == np.inf

    def test_every_chunk_size_gives_one_answer(self, xp):
        # From one class per chunk to all of them in one.
        arrays, bias, options = _case(xp, CASES["everything"])
        losses = [float(xentlib.linear_cross_entropy(*arrays, bias=bias, chunk_size=c, **options))
                  for c in range(1, V + 2)]
        np.testing.assert_allclose(losses, losses[0], rtol=1e-13)


class TestDtypes:
    @pytest.mark.parametrize("dtype", [np.float16, BFLOAT16], ids=["float16", "bfloat16"])
    def test_half_is_computed_in_float32(self, xp, dtype):
        if dtype is None:
            pytest.skip("ml_dtypes is not installed")
        hidden, classifier, bias, labels = _problem(dtype=dtype)
        result = xentlib.linear_cross_entropy_with_grad(
            xp.asarray(hidden), xp.asarray(classifier), xp.asarray(labels), bias=xp.asarray(bias),
            chunk_size=4, label_smoothing=0.1)
        dense_loss, dense_grads = _dense(xp, hidden, classifier, labels, bias=bias,
                                         dtype=np.float32, label_smoothing=0.1)
        assert_close(result[0], dense_loss, rtol=1e-5)
        for grad, dense in zip(result[1:], dense_grads, strict=True):
            assert grad.dtype == dtype
            assert_close(grad.astype(np.float32), dense, rtol=2e-2, atol=2e-3)

    def test_mixed_precision_follows_each_input(self, xp):
        hidden, classifier, _, labels = _problem()
        loss, grad_hidden, grad_classifier = xentlib.linear_cross_entropy_with_grad(
            xp.asarray(hidden.astype(np.float32)), xp.asarray(classifier), xp.asarray(labels))
        assert loss.dtype == np.float64
        assert grad_hidden.dtype == np.float32 and grad_classifier.dtype == np.float64

    def test_float32(self, xp):
        hidden, classifier, bias, labels = (a.astype(np.float32) if a.dtype.kind == "f" else a
                                            for a in _problem())
        args = [xp.asarray(a) for a in (hidden, classifier, labels)]
        result = xentlib.linear_cross_entropy_with_grad(*args, bias=xp.asarray(bias), chunk_size=3)
        dense_loss, dense_grads = _dense(xp, *args, bias=xp.asarray(bias), dtype=np.float32)
        assert_close(result[0], dense_loss, rtol=1e-5)
        for grad, dense in zip(result[1:], dense_grads, strict=True):
            assert_close(grad, dense, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("options", [CASES["everything"], CASES["everything_none"]],
                         ids=["everything", "everything_none"])
def test_gradients_against_finite_differences(options):
    options = {key: value for key, value in options.items() if key != "bias"}
    hidden, classifier, bias, labels = _problem(items=3, ignore_index=-100)

    def total(h, w, b):
        loss = xentlib.linear_cross_entropy(h, w, labels, bias=b, chunk_size=4, **options)
        return np.sum(loss)  # the gradient of the sum, which 'none' promises for the layer

    _, *grads = xentlib.linear_cross_entropy_with_grad(hidden, classifier, labels, bias=bias,
                                                       chunk_size=4, **options)
    numeric = [
        xentlib.numerical_gradient(lambda h: total(h, classifier, bias), hidden),
        xentlib.numerical_gradient(lambda w: total(hidden, w, bias), classifier),
        xentlib.numerical_gradient(lambda b: total(hidden, classifier, b), bias),
    ]
    for analytic, expected in zip(grads, numeric, strict=True):
        assert_close(analytic, expected, rtol=1e-6, atol=1e-9)


# The large-vocabulary issue: at N = 512, D = 64, V = 65536 in float32 the dense logits take
# 128 MiB; the chunked functions must stay under 10% of that beyond what they return, and
# give the dense loss.
MEMORY_SHAPE = 512, 64, 65536


@pytest.fixture(scope="module")
def large_vocabulary():
    items, features, classes = MEMORY_SHAPE
    rng = np.random.default_rng(5)
    hidden = rng.normal(size=(items, features)).astype(np.float32)
    classifier = (rng.normal(size=(classes, features)) / 8).astype(np.float32)
    return hidden, classifier, rng.integers(0, classes, size=items)


@pytest.mark.parametrize("func", [xentlib.linear_cross_entropy,
                                  xentlib.linear_cross_entropy_with_grad])
def test_peak_memory_is_a_small_fraction_of_the_logits(large_vocabulary, func):
    items, _, classes = MEMORY_SHAPE
    logits_bytes = items * classes * np.dtype(np.float32).itemsize
    tracemalloc.start()
    try:
        result = func(*large_vocabulary)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    returned = result if isinstance(result, tuple) else (result,)
    extra = peak - sum(r.nbytes for r in returned)
    # one chunk of V / 32 classes, and no (N, D) temporary for grad_hidden
    assert extra < 0.05 * logits_bytes, f"{extra / 2**20:.1f} MiB extra"
    hidden, classifier, labels = large_vocabulary
    # The reference, 64 items at a time: 32 MiB of float64 logits each.
    h, w = hidden.astype(np.float64), classifier.astype(np.float64)
    items = np.concatenate([reference_cross_entropy(h[i : i + 64] @ w.T, labels[i : i + 64],
                                                    reduction="none")
                            for i in range(0, len(labels), 64)])
    assert_close(returned[0], np.mean(items).astype(np.float32), rtol=1e-5)


def test_wide_hidden_adds_no_hidden_sized_temporary():
    # grad_hidden += g @ W[chunk] whole would hold an (N, D) product: here 1/8 of the logits.
    rng = np.random.default_rng(5)
    items, features, classes = 256, 1024, 8192
    hidden = rng.normal(size=(items, features)).astype(np.float32)
    classifier = (rng.normal(size=(classes, features)) / 32).astype(np.float32)
    labels = rng.integers(0, classes, size=items)
    tracemalloc.start()
    try:
        result = xentlib.linear_cross_entropy_with_grad(hidden, classifier, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    extra = peak - sum(r.nbytes for r in result)
    assert extra < 0.05 * items * classes * 4, f"{extra / 2**20:.2f} MiB extra"


@pytest.mark.parametrize(("items", "features", "classes", "itemsize", "expected"), [
    (4096, 1024, 32768, 4, 1024),       # a 32nd of the vocabulary
    (4096, 1024, 131072, 8, 4096),
    (64, 64, 8192, 8, 512),             # thin products: 16 MiB / (64 * 64 * 8) > 8192 // 32
    (8, 16, 32768, 4, 32768),           # thinner still: capped at V
    (1, 1, 1, 4, 1),
])
def test_default_chunk_follows_the_documented_rule(items, features, classes, itemsize,
                                                    expected):
    # max(V // 32, 16 MiB / (N D itemsize)), at most V: the rule the docstring states.
    assert xentlib.linear._default_chunk_size(items, features, classes, itemsize) == expected


def test_default_chunk_is_used():
    chunks = []
    original = xentlib.linear._Linear.logits

    def spy(self, lo, hi):
        chunks.append(hi - lo)
        return original(self, lo, hi)

    hidden, classifier = RNG.normal(size=(512, 256)), RNG.normal(size=(4096, 256))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(xentlib.linear._Linear, "logits", spy)
        xentlib.linear_cross_entropy(hidden, classifier, RNG.integers(0, 4096, size=512))
    assert chunks == [128] * 32  # 4096 // 32, more than 16 MiB / (512 * 256 * 8) = 16


def test_merging_partials_in_any_order_gives_logsumexp():
    x = RNG.normal(scale=5.0, size=(3, 12))
    x[1, :6] = -np.inf  # a part that is fully masked
    parts = []
    for lo, hi in [(0, 5), (5, 6), (6, 12)]:
        m = np.max(x[:, lo:hi], axis=1)
        t = np.where(np.isfinite(m), m, 0)
        parts.append((m, np.sum(np.exp(x[:, lo:hi] - t[:, None]), axis=1) - 1))
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        m, rest = parts[order[0]]
        for i in order[1:]:
            m, rest = merge_partials(np, (m, rest), parts[i])
        np.testing.assert_allclose(m + np.log1p(rest), xentlib.logsumexp(x, axis=1), rtol=1e-14)


class TestErrors:
    def _args(self, xp):
        hidden, classifier, _, labels = _problem()
        return xp.asarray(hidden), xp.asarray(classifier), xp.asarray(labels)

    def test_probability_target_is_refused(self, xp):
        hidden, classifier, _ = self._args(xp)
        target = xp.asarray(np.full((N, V), 1 / V))
        with pytest.raises(TypeError, match=r"linear_cross_entropy: target has shape \(6, 11\), "
                                            r"probabilities .* takes class indices only"):
            xentlib.linear_cross_entropy(hidden, classifier, target)

    def test_float_labels(self, xp):
        hidden, classifier, labels = self._args(xp)
        with pytest.raises(TypeError,
                           match=r"target has dtype float64 .*; expected an integer dtype"):
            xentlib.linear_cross_entropy_with_grad(hidden, classifier, labels.astype(xp.float64))

    def test_label_out_of_range(self, xp):
        hidden, classifier, labels = self._args(xp)
        labels = xp.asarray(np.where(np.arange(N) == 2, V, xentlib.to_numpy(labels)))
        with pytest.raises(ValueError, match=r"linear_cross_entropy_with_grad: target\[2\] = 11 "
                                             r"is outside \[0, 11\) and is not ignore_index=-100"):
            xentlib.linear_cross_entropy_with_grad(hidden, classifier, labels, ignore_index=-100)

    def test_target_shape(self, xp):
        hidden, classifier, labels = self._args(xp)
        with pytest.raises(ValueError, match=r"target has shape \(5,\); expected class indices of "
                                             r"shape \(6,\)"):
            xentlib.linear_cross_entropy(hidden, classifier, labels[:5])

    def test_classifier_shape(self, xp):
        hidden, classifier, labels = self._args(xp)
        with pytest.raises(ValueError, match=r"classifier has shape \(5, 11\); expected \(V, 5\)"):
            xentlib.linear_cross_entropy(hidden, classifier.T, labels)

    def test_bias_shape(self, xp):
        hidden, classifier, labels = self._args(xp)
        with pytest.raises(ValueError, match=r"bias has shape \(10,\); expected \(11,\)"):
            xentlib.linear_cross_entropy(hidden, classifier, labels, bias=xp.zeros(10))

    def test_hidden_0d(self, xp):
        _, classifier, labels = self._args(xp)
        with pytest.raises(ValueError, match=r"hidden is 0-dimensional"):
            xentlib.linear_cross_entropy(xp.asarray(1.0), classifier, labels)

    @pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
    def test_chunk_size(self, xp, chunk_size):
        with pytest.raises(ValueError,
                           match=rf"chunk_size = {chunk_size!r}; expected a positive integer"):
            xentlib.linear_cross_entropy(*self._args(xp), chunk_size=chunk_size)

    @pytest.mark.parametrize(("option", "match"), [
        (dict(reduction="avg"), r"reduction = 'avg'; expected 'none', 'mean', 'sum'"),
        (dict(label_smoothing=-0.1), r"label_smoothing = -0.1; expected a number in \[0, 1\]"),
        (dict(z_loss=-1.0), r"z_loss = -1.0; expected a finite number >= 0"),
        (dict(weight=np.ones(3)), r"weight has 3 entries; expected one per class \(11\)"),
    ])
    def test_options(self, xp, option, match):
        with pytest.raises(ValueError, match=r"linear_cross_entropy: " + match):
            xentlib.linear_cross_entropy(*self._args(xp), **option)

    def test_complex_hidden(self, xp):
        hidden, classifier, labels = self._args(xp)
        with pytest.raises(TypeError, match=r"hidden has dtype complex128; expected real numbers"):
            xentlib.linear_cross_entropy(hidden.astype(xp.complex128), classifier, labels)


@pytest.mark.gpu
def test_mixed_backends_are_refused():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    if not cupy.cuda.is_available():
        pytest.skip("no CUDA device available")
    hidden, classifier, _, labels = _problem()
    with pytest.raises(TypeError, match=r"linear_cross_entropy: hidden is cupy.ndarray but "
                                        r"classifier is numpy.ndarray"):
        xentlib.linear_cross_entropy(cupy.asarray(hidden), classifier, cupy.asarray(labels))
