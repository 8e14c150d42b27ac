"""Bad input raises, naming the function, the argument, the position and the value."""

import re
import sys
import types

import numpy as np
import pytest

import xentlib

LOGITS = np.zeros((4, 5))
LABELS = np.array([0, 1, 2, 3])


class TestTarget:
    def test_label_above_range(self, xp):
        labels = xp.asarray([0, 1, 2, 7])
        with pytest.raises(ValueError, match=r"^cross_entropy: target\[3\] = 7 is outside \[0, 5\) "
                                             r"\(5 classes on axis -1\)$"):
            xentlib.cross_entropy(xp.asarray(LOGITS), labels)

    def test_negative_label_is_not_wrapped(self, xp):
        # NumPy indexing would silently read the last class for -1.
        with pytest.raises(ValueError, match=r"target\[1\] = -1 is outside \[0, 5\) .* "
                                             r"and is not ignore_index=-100$"):
            xentlib.cross_entropy(xp.asarray(LOGITS), xp.asarray([0, -1, 2, 3]), ignore_index=-100)

    def test_position_is_a_full_index(self, xp):
        labels = np.zeros((2, 3), dtype=np.int64)
        labels[1, 2] = 9
        with pytest.raises(ValueError, match=r"target\[1, 2\] = 9 is outside \[0, 4\) "
                                             r"\(4 classes on axis 1\)"):
            xentlib.cross_entropy(xp.asarray(np.zeros((2, 4, 3))), xp.asarray(labels), axis=1)

    def test_float_labels_shaped_like_indices(self, xp):
        with pytest.raises(TypeError, match=r"^cross_entropy: target has dtype float64 and "
                                            r"shape \(4,\), the shape of class indices "
                                            r".*expected an integer dtype"):
            xentlib.cross_entropy(xp.asarray(LOGITS), xp.asarray(LABELS.astype(float)))

    def test_integer_target_shaped_like_logits(self, xp):
        with pytest.raises(TypeError, match=r"target has dtype int64 and the shape of logits "
                                            r"\(4, 5\); expected floating-point probabilities"):
            xentlib.cross_entropy(
                xp.asarray(LOGITS), xp.asarray(np.zeros((4, 5), dtype=np.int64))
            )

    @pytest.mark.parametrize("shape", [(4, 1), (3,), (4, 4)])
    def test_shape_mismatch(self, xp, shape):
        # (4, 1) is the labels-as-column mistake that broadcasts to (4, 4) elsewhere.
        labels = np.zeros(shape, dtype=np.int64)
        msg = (f"cross_entropy: target has shape {shape}; expected (4,) (class indices) or (4, 5) "
               "(probabilities) for logits of shape (4, 5) with axis=-1")
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            xentlib.cross_entropy(xp.asarray(LOGITS), xp.asarray(labels))

    def test_negative_probability(self, xp):
        target = np.full((4, 5), 0.25)
        target[1, 0] = -0.25
        with pytest.raises(ValueError, match=r"^cross_entropy: target\[1, 0\] = -0.25 is negative; "
                                             r"expected probabilities >= 0$"):
            xentlib.cross_entropy(xp.asarray(LOGITS), xp.asarray(target))

    def test_nan_probability(self, xp):
        target = np.full((4, 5), 0.2)
        target[2, 3] = np.nan
        with pytest.raises(ValueError, match=r"target\[2, 3\] = nan is not a number"):
            xentlib.cross_entropy(xp.asarray(LOGITS), xp.asarray(target))

    def test_ignore_index_with_probabilities(self, xp):
        with pytest.raises(ValueError, match=r"ignore_index = -100 applies to class-index "
                                             r"targets only"):
            xentlib.cross_entropy(
                xp.asarray(LOGITS), xp.asarray(np.full((4, 5), 0.2)), ignore_index=-100
            )


class TestOptions:
    def test_weight_of_wrong_length(self, xp):
        with pytest.raises(ValueError, match=r"^cross_entropy: weight has 3 entries; "
                                             r"expected one per class \(5\)$"):
            xentlib.cross_entropy(
                xp.asarray(LOGITS), xp.asarray(LABELS), weight=xp.asarray([1.0, 2.0, 3.0])
            )

    def test_weight_of_wrong_shape(self, xp):
        with pytest.raises(ValueError, match=r"weight has shape \(5, 1\); "
                                             r"expected one per class \(5\)"):
            xentlib.cross_entropy(
                xp.asarray(LOGITS), xp.asarray(LABELS), weight=xp.asarray(np.ones((5, 1)))
            )

    @pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.1", True])
    def test_label_smoothing_outside_unit_interval(self, value):
        with pytest.raises(ValueError, match=rf"^cross_entropy: label_smoothing = {value!r}; "
                                             r"expected a number in \[0, 1\]$"):
            xentlib.cross_entropy(LOGITS, LABELS, label_smoothing=value)

    @pytest.mark.parametrize("value", [-1.0, float("inf")])
    def test_z_loss_negative_or_infinite(self, value):
        with pytest.raises(ValueError, match=rf"z_loss = {value!r}; expected a finite number >= 0"):
            xentlib.cross_entropy(LOGITS, LABELS, z_loss=value)

    @pytest.mark.parametrize("value", ["avg", 0, -2.0, None, True])
    def test_unknown_reduction(self, value):
        with pytest.raises(ValueError, match=rf"^cross_entropy: reduction = {value!r}; "
                                             r"expected 'none', 'mean', 'sum' or a positive, "
                                             r"finite, normal number \(the count"):
            xentlib.cross_entropy(LOGITS, LABELS, reduction=value)

    def test_ignore_index_not_an_integer(self):
        with pytest.raises(TypeError, match=r"ignore_index = 1.5; expected an integer or None"):
            xentlib.cross_entropy(LOGITS, LABELS, ignore_index=1.5)

    def test_the_message_names_the_function_called(self):
        with pytest.raises(ValueError, match=r"^cross_entropy_grad: reduction = 'avg'"):
            xentlib.cross_entropy_grad(LOGITS, LABELS, reduction="avg")
        with pytest.raises(ValueError, match=r"^cross_entropy_with_grad: reduction = 'avg'"):
            xentlib.cross_entropy_with_grad(LOGITS, LABELS, reduction="avg")


class TestLogits:
    def test_axis_out_of_range(self, xp):
        with pytest.raises(ValueError, match=r"^softmax: axis = 2 is out of range "
                                             r"for logits with 2 dims$"):
            xentlib.softmax(xp.asarray(LOGITS), axis=2)

    def test_axis_not_an_integer(self):
        with pytest.raises(TypeError, match=r"log_softmax: axis = None; expected an integer"):
            xentlib.log_softmax(LOGITS, axis=None)

    def test_no_classes(self, xp):
        with pytest.raises(ValueError, match=r"log_softmax: logits has no classes "
                                             r"\(size 0 on axis -1\)"):
            xentlib.log_softmax(xp.asarray(np.zeros((3, 0))))

    def test_logsumexp_of_nothing_is_minus_infinity(self, xp):
        # As scipy.special.logsumexp: the log of an empty sum.
        lse = xentlib.logsumexp(xp.asarray(np.zeros((3, 0))))
        assert lse.shape == (3,) and bool(xp.all(xp.isneginf(lse)))

    def test_zero_dimensional(self):
        with pytest.raises(ValueError, match=r"cross_entropy: logits is 0-dimensional"):
            xentlib.cross_entropy(np.float64(1.0), np.int64(0))

    @pytest.mark.parametrize("dtype", [bool, complex])
    def test_not_real_numbers(self, dtype):
        with pytest.raises(TypeError, match=rf"softmax: logits has dtype {np.dtype(dtype)}; "
                                            r"expected real numbers"):
            xentlib.softmax(np.zeros(3, dtype=dtype))


class TestOut:
    def test_wrong_shape(self, xp):
        with pytest.raises(ValueError, match=r"^cross_entropy_with_grad: out has shape \(4, 4\); "
                                             r"expected the shape of logits \(4, 5\)$"):
            xentlib.cross_entropy_with_grad(
                xp.asarray(LOGITS), xp.asarray(LABELS), out=np.zeros((4, 4))
            )

    def test_wrong_dtype(self):
        with pytest.raises(TypeError, match=r"out has dtype float32; expected float64, "
                                            r"the dtype of the gradient"):
            xentlib.cross_entropy_with_grad(LOGITS, LABELS, out=np.zeros((4, 5), dtype=np.float32))

    def test_the_target_itself(self, xp):
        # The pass would write the gradient into the probabilities it is still reading.
        target = xp.full((4, 5), 0.2)
        with pytest.raises(ValueError, match=r"^cross_entropy_with_grad: out shares memory "
                                             r"with target; expected a separate array$"):
            xentlib.cross_entropy_with_grad(xp.asarray(LOGITS), target, out=target)

    def test_the_weights(self):
        out = np.zeros((1, 5))
        with pytest.raises(ValueError, match=r"out shares memory with weight; "
                                             r"expected a separate array$"):
            xentlib.cross_entropy_with_grad(np.zeros((1, 5)), np.array([0]), weight=out[0], out=out)

    def test_overlapping_the_logits(self):
        logits = np.arange(20.0).reshape(4, 5)
        with pytest.raises(ValueError, match=r"out overlaps logits without being logits itself; "
                                             r"expected out=logits \(to overwrite them\) "
                                             r"or a separate"):
            xentlib.cross_entropy_with_grad(logits, LABELS, out=logits[::-1])

    def test_another_view_of_all_the_logits_is_the_logits(self):
        logits = np.arange(20.0).reshape(4, 5)
        expected = xentlib.cross_entropy_grad(logits, LABELS)
        _, grad = xentlib.cross_entropy_with_grad(logits, LABELS, out=logits[:])
        np.testing.assert_array_equal(grad, expected)


class TestOneHot:
    def test_label_outside_range(self):
        with pytest.raises(ValueError, match=r"^one_hot: labels\[1\] = -1 is outside \[0, 3\)$"):
            xentlib.one_hot(np.array([0, -1]), 3)

    def test_float_labels(self):
        with pytest.raises(TypeError, match=r"one_hot: labels has dtype float64; expected integer"):
            xentlib.one_hot(np.array([0.0, 1.0]), 3)

    @pytest.mark.parametrize("value", [0, 2.0, True])
    def test_num_classes(self, value):
        with pytest.raises(ValueError, match=rf"one_hot: num_classes = {value!r}; "
                                             r"expected a positive integer"):
            xentlib.one_hot(np.array([0]), value)


def test_numerical_gradient_step(xp):
    with pytest.raises(ValueError, match=r"numerical_gradient: eps = 0; "
                                         r"expected a positive number"):
        xentlib.numerical_gradient(lambda v: v.sum(), xp.asarray([1.0]), eps=0)


class TestMixedBackends:
    """NumPy and CuPy arrays in one call.

    A stand-in ``cupy`` module makes this testable without a GPU.
    """

    @pytest.fixture
    def fake_cupy(self, monkeypatch):
        module = types.ModuleType("cupy")

        class ndarray(np.ndarray):  # noqa: N801 - named as CuPy names it
            pass

        ndarray.__module__ = "cupy"
        module.ndarray = ndarray
        monkeypatch.setitem(sys.modules, "cupy", module)
        return module

    def test_logits_and_target(self, fake_cupy):
        gpu_logits = LOGITS.view(fake_cupy.ndarray)
        with pytest.raises(TypeError, match=r"^cross_entropy: logits is cupy.ndarray but target is "
                                            r"numpy.ndarray; put both on one backend"):
            xentlib.cross_entropy(gpu_logits, LABELS)

    def test_out_on_the_other_backend(self, fake_cupy):
        with pytest.raises(TypeError, match=r"logits is numpy.ndarray but out is cupy.ndarray"):
            xentlib.cross_entropy_with_grad(
                LOGITS, LABELS, out=np.zeros((4, 5)).view(fake_cupy.ndarray)
            )

    def test_get_namespace_names_positions(self, fake_cupy):
        with pytest.raises(TypeError, match=r"get_namespace: arrays\[0\] is numpy.ndarray but "
                                            r"arrays\[2\] is cupy.ndarray"):
            xentlib.get_namespace(LOGITS, None, LOGITS.view(fake_cupy.ndarray))

    def test_cupy_arrays_choose_cupy(self, fake_cupy):
        assert xentlib.get_namespace(None, LOGITS.view(fake_cupy.ndarray)) is fake_cupy


class TestInputsUnchanged:
    """Every function on inputs that refuse writes (the numpy:readonly backend covers the rest)."""

    def test_loss_and_gradient(self):
        logits = np.random.default_rng(0).normal(size=(4, 5))
        target = np.random.default_rng(1).dirichlet(np.ones(5), size=4)
        weight = np.linspace(0.5, 2.0, 5)
        copies = [a.copy() for a in (logits, target, weight)]
        for a in (logits, target, weight):
            a.flags.writeable = False
        for function in (
            xentlib.cross_entropy,
            xentlib.cross_entropy_grad,
            xentlib.cross_entropy_with_grad,
        ):
            function(logits, target, weight=weight, label_smoothing=0.1, z_loss=0.01)
        for array, copy in zip((logits, target, weight), copies, strict=True):
            np.testing.assert_array_equal(array, copy)


class TestLabelEqualToNumClasses:
    """A label of exactly C is one past the last class on every path (an off-by-one is easy)."""

    LABELS = np.array([0, 5, 1, 2])

    @pytest.mark.parametrize(
        "name", ["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad"]
    )
    def test_dense(self, name):
        with pytest.raises(ValueError, match=rf"^{name}: target\[1\] = 5 is outside \[0, 5\)"):
            getattr(xentlib, name)(LOGITS, self.LABELS)

    @pytest.mark.parametrize("name", ["linear_cross_entropy", "linear_cross_entropy_with_grad"])
    def test_linear(self, name):
        with pytest.raises(ValueError, match=rf"^{name}: target\[1\] = 5 is outside \[0, 5\)"):
            getattr(xentlib, name)(np.ones((4, 3)), np.ones((5, 3)), self.LABELS)

    def test_sharded(self):
        da = pytest.importorskip("dask.array", reason="xentlib.sharded needs Dask")
        import xentlib.sharded

        logits = da.from_array(LOGITS, chunks=(4, 2))
        with pytest.raises(ValueError, match=r"^sharded.cross_entropy: target\[1\] = 5 "
                                             r"is outside \[0, 5\)"):
            xentlib.sharded.cross_entropy(logits, self.LABELS).compute()

    def test_one_hot(self):
        with pytest.raises(ValueError, match=r"^one_hot: labels\[1\] = 5 is outside \[0, 5\)$"):
            xentlib.one_hot(self.LABELS, 5)


class TestOutSharingTheLogitsAddress:
    """``out`` that starts where the logits start but walks them in another order."""

    def _square(self):
        return np.random.default_rng(0).normal(size=(5, 5)), np.array([0, 1, 2, 3, 4])

    def test_transposed_view(self):
        logits, labels = self._square()
        copy = logits.copy()
        with pytest.raises(ValueError, match=r"out overlaps logits without being logits itself"):
            xentlib.cross_entropy_with_grad(logits, labels, out=logits.T)
        np.testing.assert_array_equal(logits, copy)

    def test_strided_view_with_the_logits_shape(self):
        logits, labels = self._square()
        # Same address, same shape, same dtype: rows that overlap each other.
        aliased = np.lib.stride_tricks.as_strided(logits, shape=(5, 5), strides=(8, 8))
        with pytest.raises(ValueError, match=r"out overlaps logits without being logits itself"):
            xentlib.cross_entropy_with_grad(logits, labels, out=aliased)


class TestForeignArrays:
    """Arrays of other libraries raise instead of being copied to NumPy behind the caller's back."""

    class _ArrayLike:  # any object that NumPy could convert: another library's array
        def __array__(self, dtype=None, copy=None):
            return np.zeros((4, 5))

    def test_object_with_array_protocol(self):
        with pytest.raises(TypeError, match=r"^cross_entropy: logits is .*_ArrayLike; "
                                            r"expected a NumPy or CuPy array \(convert it "
                                            r"first, e.g. np.asarray\(logits\)\)$"):
            xentlib.cross_entropy(self._ArrayLike(), LABELS)

    def test_torch_tensor_that_requires_grad(self):
        torch = pytest.importorskip("torch", reason="torch is the optional test oracle")
        with pytest.raises(TypeError, match=r"^cross_entropy: target is torch.Tensor; .*"
                                            r"target.detach\(\).cpu\(\).numpy\(\)"):
            xentlib.cross_entropy(LOGITS, torch.zeros(4, dtype=torch.int64, requires_grad=False))
        with pytest.raises(TypeError, match=r"^softmax: x is torch.Tensor"):
            xentlib.softmax(torch.zeros(3, requires_grad=True))

    def test_dask_array_outside_sharded(self):
        da = pytest.importorskip("dask.array", reason="xentlib.sharded needs Dask")
        with pytest.raises(TypeError, match=r"logits is dask.array.core.Array; "
                                            r".*xentlib.sharded.cross_entropy"):
            xentlib.cross_entropy_grad(da.from_array(LOGITS), LABELS)

    @pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
    @pytest.mark.parametrize("wrap", [np.matrix, np.ma.masked_array], ids=["matrix", "masked"])
    def test_ndarray_subclass_with_other_arithmetic(self, wrap):
        with pytest.raises(TypeError, match=r"^cross_entropy_with_grad: logits is "
                                            r"numpy\.(matrix|ma\.MaskedArray); "
                                            r"expected a plain numpy.ndarray"):
            xentlib.cross_entropy_with_grad(wrap(LOGITS), LABELS)

    def test_memmap_lists_and_numpy_scalars_still_work(self, tmp_path):
        mapped = np.memmap(tmp_path / "logits", dtype=np.float64, mode="w+", shape=LOGITS.shape)
        expected = float(np.log(5))
        assert float(xentlib.cross_entropy(mapped, LABELS)) == pytest.approx(expected, rel=1e-15)
        from_lists = xentlib.cross_entropy(LOGITS.tolist(), LABELS.tolist())
        assert float(from_lists) == pytest.approx(expected, rel=1e-15)
        weight = [np.float64(1.0)] * 5  # NumPy scalars in a list
        weighted = xentlib.cross_entropy(LOGITS, LABELS, weight=weight)
        assert float(weighted) == pytest.approx(expected, rel=1e-15)


class TestHintsForTorchHabits:
    def test_minus_100_labels_without_ignore_index(self):
        with pytest.raises(ValueError, match=r"target\[1\] = -100 is outside \[0, 5\) "
                                             r"\(5 classes on axis -1\) \(did you mean "
                                             r"ignore_index=-100, torch's default\?\)$"):
            xentlib.cross_entropy(LOGITS, np.array([0, -100, 2, 3]))

    def test_no_hint_for_other_labels(self):
        with pytest.raises(ValueError, match=r"target\[1\] = -1 is outside \[0, 5\) "
                                             r"\(5 classes on axis -1\)$"):
            xentlib.cross_entropy(LOGITS, np.array([0, -1, 2, 3]))

    def test_torch_shaped_target_with_the_default_axis(self):
        # logits (N, C, T) as torch takes them, target (N, T), but axis left at -1
        logits, target = np.zeros((2, 5, 3)), np.zeros((2, 3), dtype=np.int64)
        with pytest.raises(ValueError, match=r"with axis=-1 \(did you mean axis=1, "
                                             r"torch's class axis\?\)$"):
            xentlib.cross_entropy(logits, target)
        loss = xentlib.cross_entropy(logits, target, axis=1)
        assert float(loss) == pytest.approx(np.log(5), rel=1e-15)
