"""cross_entropy: every option against the dense reference, shapes, axes and dtypes."""

import itertools

import numpy as np
import pytest

import xentlib

from .helpers import BFLOAT16, assert_close, reference_cross_entropy

RNG = np.random.default_rng(7)
N, C = 6, 5
WEIGHT = np.array([0.5, 2.0, 1.0, 0.0, 3.0])


def _problem(kind, shape=(N, C), axis=-1, ignore_index=None):
    logits = RNG.normal(scale=2.0, size=shape)
    num_classes = shape[axis]
    batch_shape = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    if kind == "index":
        target = RNG.integers(0, num_classes, size=batch_shape)
        if ignore_index is not None:
            target.flat[::3] = ignore_index
    else:
        target = np.moveaxis(RNG.dirichlet(np.ones(num_classes), size=batch_shape), -1, axis)
    return logits, target


OPTIONS = [
    dict(weight=w, ignore_index=ii, label_smoothing=eps, z_loss=zl, reduction=r)
    for w, ii, eps, zl, r in itertools.product(
        [None, WEIGHT], [None, -100], [0.0, 0.2], [0.0, 1e-2], ["mean", "sum", "none", 8.0]
    )
]


def _id(options):
    return "-".join(
        f"{k}={'w' if k == 'weight' and v is not None else v}" for k, v in options.items()
    )


@pytest.mark.parametrize("options", OPTIONS, ids=_id)
def test_index_targets_match_reference(xp, options):
    logits, target = _problem("index", ignore_index=options["ignore_index"])
    loss = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(target), **options)
    assert_close(loss, xp.asarray(reference_cross_entropy(logits, target, **options)), rtol=1e-12)


@pytest.mark.parametrize("options", [o for o in OPTIONS if o["ignore_index"] is None], ids=_id)
def test_probability_targets_match_reference(xp, options):
    logits, target = _problem("probability")
    loss = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(target), **options)
    assert_close(loss, xp.asarray(reference_cross_entropy(logits, target, **options)), rtol=1e-12)


def test_gather_formula_by_hand(xp):
    logits, labels = _problem("index")
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    by_hand = -log_p[np.arange(N), labels].mean()
    assert_close(xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels)), xp.asarray(by_hand))


def test_one_hot_probabilities_equal_class_indices(xp):
    logits, labels = _problem("index")
    onehot = xentlib.one_hot(xp.asarray(labels), C)
    for reduction in ("none", "mean"):
        assert_close(
            xentlib.cross_entropy(xp.asarray(logits), onehot, reduction=reduction),
            xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction=reduction),
        )


def test_weighted_mean_divides_by_summed_label_weights(xp):
    logits, labels = _problem("index")
    items = xentlib.to_numpy(
        xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction="none")
    )
    w = WEIGHT[labels]
    loss = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), weight=xp.asarray(WEIGHT))
    assert_close(loss, xp.asarray(np.sum(w * items) / np.sum(w)))


def test_ignored_items_leave_sum_and_mean(xp):
    logits, labels = _problem("index", ignore_index=-1)
    kept = labels != -1
    expected = reference_cross_entropy(logits[kept], labels[kept])
    loss = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), ignore_index=-1)
    assert_close(loss, xp.asarray(expected))
    items = xentlib.to_numpy(xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels),
                                                   ignore_index=-1, reduction="none"))
    assert np.all(items[~kept] == 0)


def test_ignore_index_may_be_a_real_class(xp):
    logits, labels = _problem("index")
    kept = labels != 2
    loss = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), ignore_index=2)
    assert_close(loss, xp.asarray(reference_cross_entropy(logits[kept], labels[kept])))


def test_number_reduction_divides_the_sum(xp):
    logits, labels = _problem("index")
    total = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction="sum")
    assert_close(xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction=4096),
                 total / 4096)


def test_z_loss_adds_squared_logsumexp(xp):
    logits, labels = _problem("index")
    plain = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction="none")
    with_z = xentlib.cross_entropy(
        xp.asarray(logits), xp.asarray(labels), z_loss=0.5, reduction="none"
    )
    lse = xentlib.logsumexp(xp.asarray(logits))
    assert_close(with_z, plain + 0.5 * lse**2)


def test_label_smoothing_one_is_uniform_target(xp):
    logits, labels = _problem("index")
    uniform = np.full((N, C), 1 / C)
    assert_close(xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), label_smoothing=1.0),
                 xentlib.cross_entropy(xp.asarray(logits), xp.asarray(uniform)))


@pytest.mark.parametrize("kind", ["index", "probability"])
def test_class_axis_1_with_extra_dims_equals_moving_it_last(xp, kind):
    logits, target = _problem(kind, shape=(3, C, 4, 2), axis=1)
    moved_target = target if kind == "index" else np.moveaxis(target, 1, -1)
    for reduction in ("none", "mean"):
        expected = xentlib.cross_entropy(xp.asarray(np.moveaxis(logits, 1, -1)),
                                         xp.asarray(moved_target), reduction=reduction)
        actual = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(target), axis=1,
                                       reduction=reduction)
        assert_close(actual, expected, rtol=1e-14)


def test_sequence_batch_shape(xp):
    logits, target = _problem("index", shape=(2, 3, 7))
    items = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(target), reduction="none")
    assert items.shape == (2, 3)
    assert_close(items, xp.asarray(reference_cross_entropy(logits, target, reduction="none")))


def test_single_item_without_batch_axis(xp):
    loss = xentlib.cross_entropy(xp.asarray([2.0, 0.5, -1.0]), xp.asarray(np.int64(0)))
    assert_close(loss, xp.asarray(reference_cross_entropy(np.array([2.0, 0.5, -1.0]), np.int64(0))))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_computes_in_float32(xp, dtype):
    if dtype == "bfloat16" and (BFLOAT16 is None or xp.__name__ != "numpy"):
        pytest.skip("bfloat16 needs ml_dtypes and NumPy")
    dtype = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    logits, labels = _problem("index")
    half = logits.astype(dtype)
    for reduction in ("mean", "none"):
        loss = xentlib.cross_entropy(xp.asarray(half), xp.asarray(labels), reduction=reduction)
        expected = reference_cross_entropy(half.astype(np.float64), labels, reduction=reduction)
        assert_close(loss, xp.asarray(expected).astype(np.float32), rtol=1e-6)


def test_half_precision_mean_does_not_overflow(xp):
    # 4096 items of loss ~30: the sum (~123000) is past float16's 65504.
    logits = np.zeros((4096, 2), dtype=np.float16)
    logits[:, 0] = 30.0
    labels = np.ones(4096, dtype=np.int64)
    loss = xentlib.cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction="sum")
    assert_close(loss, xp.asarray(np.float32(4096 * (30.0 + np.log1p(np.exp(-30.0))))), rtol=1e-6)


def test_integer_logits_become_float64(xp):
    loss = xentlib.cross_entropy(xp.asarray([[1, 2, 3]]), xp.asarray([2]))
    expected = reference_cross_entropy(np.array([[1.0, 2.0, 3.0]]), np.array([2]))
    assert_close(loss, xp.asarray(expected))


def test_float32_stays_float32(xp):
    logits, labels = _problem("index")
    loss = xentlib.cross_entropy(xp.asarray(logits.astype(np.float32)), xp.asarray(labels))
    expected = np.float32(reference_cross_entropy(logits.astype(np.float32), labels))
    assert_close(loss, xp.asarray(expected), rtol=1e-6)


class TestOneHot:
    @pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
    def test_rows_pick_the_label(self, xp, shape):
        labels = RNG.integers(0, 5, size=shape)
        expected = np.eye(5)[labels]
        assert_close(xentlib.one_hot(xp.asarray(labels), 5), xp.asarray(expected))

    def test_dtype_on_request(self, xp):
        assert xentlib.one_hot(xp.asarray([0, 1]), 2, dtype=xp.float32).dtype == np.float32
