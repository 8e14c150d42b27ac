"""Edge cases of every entry point: one table of input classes, run on every path.

Each row of ``CASES`` is one class of bad or extreme input (dtypes, shapes,
labels, options, non-finite logits, memory layouts, ``out=`` aliasing,
probability targets). Each row says what must happen: an error (type, and a
message that names the function, the argument and, where there is one, the
offending position and value), or a loss and gradient equal to the dense
float64 reference of ``tests.helpers``. The paths are the dense functions
(with and without ``out=``, and ``out=logits``), the linear layer with
``hidden = logits`` and ``classifier = I`` (so its logits are the table's
exactly), and ``xentlib.sharded`` on Dask chunks. Where a class cannot apply
to a path (probabilities on the linear layer, ``out=`` on the loss), the row
asserts the refusal. Every row also checks that no input is modified and no
warning escapes. ``test_defect_*`` reproduce the ten defects of issue 15 as
the issue states them.
"""

import dataclasses
import importlib.util
import math
import re
import warnings
from fractions import Fraction

import numpy as np
import pytest
import scipy.special

import xentlib

from .helpers import (
    BFLOAT16,
    assert_close,
    backend,
    reference_cross_entropy,
    reference_cross_entropy_grad,
)

INF, NAN = np.inf, np.nan
# Small problems: two items of three classes, four items of five.
L23 = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]])
Y23 = np.array([0, 2])
L45 = np.random.default_rng(15).normal(scale=2.0, size=(4, 5))
Y45 = np.array([0, 4, 1, 3])
P45 = np.random.default_rng(16).dirichlet(np.ones(5), size=4)
L243 = np.random.default_rng(17).normal(size=(2, 4, 3))  # (N, C, d): classes on axis 1
Y23D = np.array([[0, 3, 1], [2, 2, 0]])
W5 = np.array([0.5, 2.0, 1.0, 0.0, 1.5])

# Function names as messages spell them, per path.
FUNC = {
    "loss": "cross_entropy",
    "grad": "cross_entropy_grad",
    "with_grad": "cross_entropy_with_grad",
    "with_grad_out": "cross_entropy_with_grad",
    "with_grad_inplace": "cross_entropy_with_grad",
    "linear": "linear_cross_entropy",
    "linear_grad": "linear_cross_entropy_with_grad",
    "sharded": "sharded.cross_entropy",
}
DENSE = ("loss", "grad", "with_grad", "with_grad_out", "with_grad_inplace")
LINEAR = ("linear", "linear_grad")


# ---------------------------------------------------------------------------
# What a row expects


@dataclasses.dataclass(frozen=True)
class Raises:
    """An error of ``type`` whose message matches ``pattern`` from its start.

    ``{func}`` in the pattern becomes the function's name as the path calls
    it, ``{logits}`` the logits argument's name (``hidden`` on the linear path).
    """

    type: type | tuple
    pattern: str


@dataclasses.dataclass(frozen=True)
class ValueOrRaises:
    """Either the reference value (the option read as a float) or the error ``raises``.

    For the numbers issue 15 lets the library convert or refuse (a Fraction).
    """

    raises: Raises


@dataclasses.dataclass(frozen=True)
class Exact:
    """A loss and gradient worked out by hand, where the float64 reference itself overflows."""

    loss: object
    grad: object


REFERENCE = "reference"  # the dense float64 reference, with the masked-row rule below
OMIT = "omit"  # the path cannot express the row (e.g. a per-item -inf through a matrix product)
OUT_REFUSED = Raises(TypeError, r".*\(\) got an unexpected keyword argument 'out'")
AXIS_REFUSED = Raises(TypeError, r".*\(\) got an unexpected keyword argument 'axis'")
NOT_DASK = Raises(TypeError, r"^{func}: logits is (builtins\.)?list; expected a dask array")
PROBABILITIES_REFUSED = Raises(TypeError, r"^{func}: target has shape \([0-9, ]+\), probabilities")


def _float(value):
    """Options as the reference reads them: Fractions become floats."""
    return float(value) if isinstance(value, Fraction) else value


@dataclasses.dataclass(frozen=True)
class Case:
    """One row: the inputs, and what every path must do with them.

    ``logits``, ``target`` and ``options['weight']`` that are NumPy arrays
    are converted with the ``xp`` fixture; lists and scalars are passed as
    they are. ``layout`` rearranges the logits in memory without changing
    their values; ``out`` builds an ``out=`` buffer from the logits (the
    ``out=`` rows). ``expect`` holds for every path unless ``linear`` or
    ``sharded`` says otherwise.
    """

    id: str
    logits: object
    target: object
    options: dict = dataclasses.field(default_factory=dict)
    axis: object = -1
    layout: str | None = None
    out: object = None
    expect: object = REFERENCE
    linear: object = None
    sharded: object = None

    def expectation(self, path):
        """What ``path`` must do with this row."""
        if self.out is not None and path != "with_grad":
            return OUT_REFUSED
        override = self.linear if path in LINEAR else self.sharded if path == "sharded" else None
        return self.expect if override is None else override


def _err(type_, pattern, **overrides):
    return {"expect": Raises(type_, pattern), **overrides}


def _bad_label(value, position="1", classes=5, sharded_position=None):
    pattern = rf"^{{func}}: target\[{position}\] = {value} is outside \[0, {classes}\)"
    fields = _err(ValueError, pattern)
    if sharded_position is not None:
        fields["sharded"] = Raises(
            ValueError, rf"^{{func}}: target\[{sharded_position}\] = {value} is outside")
    return fields


def _with(array, index, value, dtype=None):
    copy = np.array(array, dtype=dtype)
    copy[index] = value
    return copy


def _option_error(name, value, type_=ValueError):
    return _err(type_, rf"^{{func}}: {name} = {re.escape(repr(value))}")


# ---------------------------------------------------------------------------
# The table

# Issue 15 lets a Fraction be read as a float or refused in the house format.
SMOOTHING_FRACTION = ValueOrRaises(
    Raises(ValueError, r"^{func}: label_smoothing = Fraction\(1, 10\)"))

CASES = [
    # dtypes
    Case("dtype-float64", L45, Y45),
    Case("dtype-float32", L45.astype(np.float32), Y45),
    Case("dtype-float16", L45.astype(np.float16), Y45),
    *([Case("dtype-bfloat16", L45.astype(BFLOAT16), Y45)] if BFLOAT16 is not None else []),
    Case("dtype-int64", np.array([[1, 2, 0], [3, -1, 2]]), Y23),
    Case("dtype-int8", np.array([[1, 2, 0], [3, -1, 2]], np.int8), Y23),
    Case("dtype-bool", L23 > 1, Y23,
         **_err(TypeError, r"^{func}: {logits} has dtype bool; expected real numbers")),
    Case("dtype-complex", L23.astype(complex), Y23,
         **_err(TypeError, r"^{func}: {logits} has dtype complex128; expected real numbers")),
    Case("dtype-object", L23.astype(object), Y23,
         **_err(TypeError, r"^{func}: {logits} has dtype object; expected real numbers")),
    Case("dtype-lists", L23.tolist(), Y23.tolist(), sharded=NOT_DASK),
    Case("dtype-ragged-list", [[1.0, 2.0, 0.5], [0.3]], [0, 2], sharded=NOT_DASK,
         **_err((TypeError, ValueError), r"^{func}: {logits}\b")),  # defect 6
    # shapes
    Case("shape-0d", np.float64(1.0), np.int64(0),
         **_err(ValueError, r"^{func}: {logits} is 0-dimensional"),
         sharded=Raises(ValueError, r"^{func}: logits has shape \(\); expected \(N, C\)")),
    Case("shape-1d", np.array([1.0, 2.0, 0.5]), np.int64(2),
         sharded=Raises(ValueError, r"^{func}: logits has shape \(3,\); expected \(N, C\)")),
    Case("shape-1d-none", np.array([1.0, 2.0, 0.5]), np.int64(2), {"reduction": "none"},
         sharded=Raises(ValueError, r"^{func}: logits has shape \(3,\); expected \(N, C\)")),
    Case("shape-empty-batch-mean", np.zeros((0, 3)), np.zeros(0, np.int64)),  # defect 2
    Case("shape-empty-batch-none", np.zeros((0, 3)), np.zeros(0, np.int64),
         {"reduction": "none"}),  # defect 2
    Case("shape-empty-batch-sum-float32", np.zeros((0, 3), np.float32), np.zeros(0, np.int64),
         {"reduction": "sum"}),  # defect 2
    Case("shape-no-classes", np.zeros((2, 0)), np.zeros(2, np.int64),
         **_err(ValueError, r"^{func}: logits has no classes"),
         linear=Raises(ValueError, r"^{func}: classifier has no rows \(0 classes\)")),
    Case("shape-NCd-axis1", L243, Y23D, axis=1),
    Case("shape-NCd-axis1-none", L243, Y23D, {"reduction": "none"}, axis=1),
    Case("shape-axis0", L45.T, Y45, axis=0),
    Case("shape-target-too-short", L45, Y45[:3],
         **_err(ValueError, r"^{func}: target has shape \(3,\); expected")),
    Case("shape-target-column", L45, Y45[:, None],
         **_err(ValueError, r"^{func}: target has shape \(4, 1\); expected")),
    Case("shape-torch-target-default-axis", L243, Y23D, linear=OMIT, sharded=OMIT,
         **_err(ValueError, r"^{func}: target has shape \(2, 3\); .*did you mean axis=1")),
    # label values
    Case("label-negative", L45, _with(Y45, 1, -1), **_bad_label(-1)),
    Case("label-equal-C", L45, _with(Y45, 1, 5), **_bad_label(5)),
    Case("label-above-C", L45, _with(Y45, 1, 7), **_bad_label(7)),
    Case("label-minus-100-hint", L45, _with(Y45, 1, -100),
         **_err(ValueError, r"^{func}: target\[1\] = -100 is outside \[0, 5\).*"
                             r"did you mean ignore_index=-100")),
    Case("label-position-NCd", L243, _with(Y23D, (1, 2), 9), axis=1,
         **_bad_label(9, "1, 2", 4, sharded_position="5")),
    Case("label-float", L45, Y45.astype(float),
         **_err(TypeError, r"^{func}: target has dtype float64")),
    Case("label-bool", L23, Y23 > 0, **_err(TypeError, r"^{func}: target has dtype bool")),
    Case("label-int32", L45, Y45.astype(np.int32)),
    Case("label-uint8", L45, Y45.astype(np.uint8)),
    # ignore_index
    Case("ignore-some", L45, _with(Y45, [1, 3], -100), {"ignore_index": -100}),
    Case("ignore-all-mean", L45, np.full(4, -100), {"ignore_index": -100}),
    Case("ignore-all-sum", L45, np.full(4, -1), {"ignore_index": -1, "reduction": "sum"}),
    Case("ignore-all-none", L45, np.full(4, -1), {"ignore_index": -1, "reduction": "none"}),
    Case("ignore-a-real-class", L45, Y45, {"ignore_index": 4}),
    Case("ignore-nan-row", _with(L45, (1, 2), NAN), _with(Y45, 1, -100),
         {"ignore_index": -100}),
    Case("ignore-not-an-integer", L45, Y45, {"ignore_index": 1.5},
         **_option_error("ignore_index", 1.5, TypeError)),
    Case("ignore-with-probabilities", L45, P45, {"ignore_index": -100},
         **_err(ValueError, r"^{func}: ignore_index = -100 applies to class-index targets only"),
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    # weights
    Case("weight", L45, Y45, {"weight": W5}),
    Case("weight-list", L45, Y45, {"weight": W5.tolist()}),
    Case("weight-int", L45, Y45, {"weight": np.array([1, 2, 0, 3, 1])}),
    Case("weight-negative", L23, Y23, {"weight": np.array([1.0, -1.0, 1.0])},
         **_err(ValueError, r"^{func}: weight\[1\] = -1(\.0)?\b")),  # defect 9
    Case("weight-nan", L23, Y23, {"weight": np.array([1.0, NAN, 1.0])},
         **_err(ValueError, r"^{func}: weight\[1\] = nan\b")),  # defect 9
    Case("weight-inf", L23, Y23, {"weight": np.array([1.0, INF, 1.0])},
         **_err(ValueError, r"^{func}: weight\[1\] = inf\b")),  # defect 9
    Case("weight-wrong-length", L45, Y45, {"weight": np.ones(3)},
         **_err(ValueError, r"^{func}: weight has 3 entries; expected one per class \(5\)")),
    Case("weight-2d", L45, Y45, {"weight": np.ones((5, 1))},
         **_err(ValueError, r"^{func}: weight has shape \(5, 1\)")),
    Case("weight-complex", L45, Y45, {"weight": np.ones(5, complex)},
         **_err(TypeError, r"^{func}: weight has dtype complex128")),
    Case("weight-tiny-float64", L23, np.array([0, 0]),
         {"weight": np.array([1e-310, 1.0, 1.0])}),  # defect 1
    Case("weight-tiny-float32", L23.astype(np.float32), np.array([0, 0]),
         {"weight": np.array([1e-39, 1.0, 1.0], np.float32)}),  # defect 1
    Case("weight-tiny-none", L23, np.array([0, 0]),
         {"weight": np.array([1e-310, 1.0, 1.0]), "reduction": "none"}),  # defect 1
    Case("weight-zero-sum", L23, np.array([0, 0]), {"weight": np.array([0.0, 1.0, 1.0])}),
    Case("weight-all-zero-smoothing", L23, Y23,
         {"weight": np.zeros(3), "label_smoothing": 0.2}),
    Case("weight-smoothing-ignore", L45, _with(Y45, 2, -1),
         {"weight": W5, "label_smoothing": 0.3, "ignore_index": -1}),
    # label smoothing
    Case("smoothing-0", L45, Y45, {"label_smoothing": 0.0}),
    Case("smoothing-1", L45, Y45, {"label_smoothing": 1.0}),
    # At ddf59b3 the float32 scalar made the gradient float32-accurate (cf. defect 6).
    Case("smoothing-numpy-float32", L45, Y45, {"label_smoothing": np.float32(0.25)}),
    Case("smoothing-negative", L45, Y45, {"label_smoothing": -0.1},
         **_option_error("label_smoothing", -0.1)),
    Case("smoothing-above-1", L45, Y45, {"label_smoothing": 1.5},
         **_option_error("label_smoothing", 1.5)),
    Case("smoothing-nan", L45, Y45, {"label_smoothing": NAN},
         **_option_error("label_smoothing", NAN)),
    Case("smoothing-fraction", L45, Y45, {"label_smoothing": Fraction(1, 10)},  # defect 6
         expect=SMOOTHING_FRACTION),
    Case("smoothing-fraction-none", L45, Y45,
         {"label_smoothing": Fraction(1, 10), "reduction": "none"},  # defect 6
         expect=SMOOTHING_FRACTION),
    Case("smoothing-fraction-probabilities", L45, P45, {"label_smoothing": Fraction(1, 10)},
         expect=SMOOTHING_FRACTION,
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),  # defect 6
    # z-loss
    Case("zloss", L45, Y45, {"z_loss": 1e-2}),
    Case("zloss-ignore-none", L45, _with(Y45, 0, -1),
         {"z_loss": 1e-2, "ignore_index": -1, "reduction": "none"}),
    Case("zloss-negative", L45, Y45, {"z_loss": -1.0}, **_option_error("z_loss", -1.0)),
    Case("zloss-nan", L45, Y45, {"z_loss": NAN}, **_option_error("z_loss", NAN)),
    Case("zloss-inf", L45, Y45, {"z_loss": INF}, **_option_error("z_loss", INF)),
    Case("zloss-masked-row-with-mass", np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]]),
         np.array([0, 1]), {"z_loss": 1e-2, "reduction": "none"}, linear=OMIT),  # defect 7
    Case("zloss-masked-row-ignored", np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]]),
         np.array([-1, 1]), {"z_loss": 1e-2, "ignore_index": -1}, linear=OMIT),  # defect 7
    Case("zloss-masked-zero-weights", np.array([[-INF, -INF]]), np.array([0]),
         {"weight": np.zeros(2), "z_loss": 1e-4}),  # defect 7, the issue's reproducer
    # reductions
    Case("reduction-sum", L45, Y45, {"reduction": "sum"}),
    Case("reduction-none", L45, Y45, {"reduction": "none"}),
    Case("reduction-number", L45, Y45, {"reduction": 2.5}),
    Case("reduction-numpy-float32", L45, Y45, {"reduction": np.float32(4.0)}),
    Case("reduction-int", L45, Y45, {"reduction": 3}),
    Case("reduction-unknown", L45, Y45, {"reduction": "avg"}, **_option_error("reduction", "avg")),
    Case("reduction-none-object", L45, Y45, {"reduction": None},
         **_option_error("reduction", None)),
    Case("reduction-bool", L45, Y45, {"reduction": True}, **_option_error("reduction", True)),
    Case("reduction-0", L45, Y45, {"reduction": 0}, **_option_error("reduction", 0)),
    Case("reduction-negative", L45, Y45, {"reduction": -2.0},
         **_option_error("reduction", -2.0)),
    Case("reduction-nan", L45, Y45, {"reduction": NAN}, **_option_error("reduction", NAN)),
    Case("reduction-inf", L45, Y45, {"reduction": INF}, **_option_error("reduction", INF)),
    Case("reduction-10**400", L45, Y45, {"reduction": 10**400},
         **_err(ValueError, r"^{func}: reduction = 10000000000")),  # defect 8
    Case("reduction-subnormal", L45, Y45, {"reduction": 1e-320},
         **_option_error("reduction", 1e-320)),  # defect 8
    Case("reduction-fraction", L45, Y45, {"reduction": Fraction(2)},  # defect 6
         expect=ValueOrRaises(Raises(ValueError, r"^{func}: reduction = Fraction\(2, 1\)"))),
    # axis: the linear layer and the shards have no axis to choose
    Case("axis-out-of-range", L45, Y45, axis=2,
         **_err(ValueError, r"^{func}: axis = 2 is out of range"),
         linear=AXIS_REFUSED, sharded=AXIS_REFUSED),
    Case("axis-too-negative", L45, Y45, axis=-3,
         **_err(ValueError, r"^{func}: axis = -3 is out of range"),
         linear=AXIS_REFUSED, sharded=AXIS_REFUSED),
    Case("axis-float", L243, Y23D, axis=1.0,
         **_err(TypeError, r"^{func}: axis = 1\.0; expected an integer"),
         linear=AXIS_REFUSED, sharded=AXIS_REFUSED),
    # non-finite logits (the linear layer takes a -inf column through its bias)
    Case("neginf-masks-a-class", np.array([[0.0, -INF, 1.0], [2.0, -INF, 0.0]]), np.array([0, 2])),
    Case("neginf-masks-the-label", np.array([[0.0, -INF, 1.0], [2.0, -INF, 0.0]]),
         np.array([1, 2]), {"reduction": "none"}),
    Case("neginf-smoothing-puts-mass-on-it", np.array([[0.0, -INF, 1.0], [2.0, -INF, 0.0]]),
         np.array([0, 2]), {"label_smoothing": 0.1, "reduction": "none"}),
    Case("neginf-zero-weight-smoothing", np.array([[0.0, -INF, 1.0], [2.0, -INF, 0.0]]),
         np.array([0, 2]), {"label_smoothing": 0.1, "weight": np.array([1.0, 0.0, 2.0])}),
    Case("neginf-row-with-mass", np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]]),
         np.array([0, 1]), {"reduction": "none"}, linear=OMIT),  # defect 7
    Case("neginf-row-mean", np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]]),
         np.array([0, 1]), linear=OMIT),  # defect 7
    Case("neginf-row-alone", np.array([[-INF, -INF, -INF]]), np.array([2])),  # defect 7
    Case("neginf-row-ignored", np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]]),
         np.array([-100, 1]), {"ignore_index": -100, "reduction": "none"}, linear=OMIT),
    Case("neginf-row-no-probability-mass", np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]]),
         np.array([[0.0, 0.0, 0.0], [0.2, 0.3, 0.5]]), {"reduction": "none"},
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    Case("posinf", np.array([[0.5, INF, 1.0, 2.0]]), np.array([3])),  # defect 10
    Case("posinf-other-items-untouched", np.array([[0.5, INF, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]]),
         np.array([3, 0]), {"reduction": "none"}),  # defect 10
    Case("nan-other-items-untouched", _with(L45, (2, 1), NAN), Y45, {"reduction": "none"}),
    Case("nan-mean", _with(L45, (2, 1), NAN), Y45),
    Case("huge-float32", np.array([[3e38, -3e38, 0.0]], np.float32), np.array([2])),  # defect 3
    Case("huge-float32-label-max", np.array([[3e38, -3e38, 0.0]], np.float32), np.array([0])),
    Case("huge-float64", np.array([[1e308, -1e308, 0.0]]), np.array([2])),  # defect 3
    # LSE = 1e308, p = (1, 0, 0), q = (0.9 + eps/3, eps/3, eps/3): the loss
    # eps/3 (0 + 2e308 + 1e308) is finite, but its term z - LSE = -2e308 is not.
    # The documented limit (as torch): the loss is inf, the gradient still exact.
    Case("huge-float64-smoothing", np.array([[1e308, -1e308, 0.0]]), np.array([0]),
         {"label_smoothing": 0.1, "reduction": "none"},
         expect=Exact(np.array([np.inf]), np.array([[0.2, -0.1, -0.1]]) / 3)),
    Case("shift-1e6-float32", (L45 + 1e6).astype(np.float32), Y45),
    # memory layouts
    Case("layout-fortran", L45, Y45, layout="F"),
    Case("layout-transposed-view", L45, Y45, layout="T"),
    Case("layout-negative-strides", L45, Y45, layout="reversed"),
    Case("layout-NCd-strided", L243, Y23D, {"reduction": "none"}, axis=1, layout="strided"),
    Case("layout-NCd-fortran", L243, Y23D, axis=1, layout="F"),
    Case("layout-read-only", L45, Y45, layout="readonly"),
    Case("layout-memmap", L45, Y45, layout="memmap"),
    Case("layout-fortran-probabilities", L45, P45, layout="F",
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    # probability targets
    Case("prob", L45, P45, linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    Case("prob-rows-not-summing-to-1", L45, 3 * P45, {"reduction": "none"},
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    Case("prob-weight-smoothing-zloss", L45, P45,
         {"weight": W5, "label_smoothing": 0.2, "z_loss": 1e-3},
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    Case("prob-float32-target-float64-logits", L45, P45.astype(np.float32),
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    Case("prob-NCd-axis1", L243, np.moveaxis(np.full((2, 3, 4), 0.25), 2, 1), axis=1,
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    Case("prob-negative", L45, _with(P45, (1, 0), -0.25),
         **_err(ValueError, r"^{func}: target\[1, 0\] = -0\.25 is negative"),
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    Case("prob-nan", L45, _with(P45, (2, 3), NAN),
         **_err(ValueError, r"^{func}: target\[2, 3\] = nan is not a number"),
         linear=PROBABILITIES_REFUSED, sharded=PROBABILITIES_REFUSED),
    Case("prob-integer", L45, np.zeros((4, 5), np.int64),
         **_err(TypeError, r"^{func}: target has dtype int64 and the shape of logits"),
         linear=Raises(ValueError, r"^{func}: target has shape \(4, 5\); expected"),
         sharded=Raises(ValueError, r"^{func}: target has shape \(4, 5\); expected")),
    # out=: cross_entropy_with_grad only; every other path refuses the argument
    Case("out-fresh-fortran", L45, Y45, out=lambda z, t, xp: xp.asfortranarray(xp.empty_like(z))),
    Case("out-logits-view", L45, Y45, out=lambda z, t, xp: z[:]),
    Case("out-read-only", L45, Y45, out=lambda z, t, xp: _read_only(xp.zeros_like(z)),
         **_err(ValueError, r"^{func}: out is read-only")),  # defect 6
    Case("out-list", L23, Y23, out=lambda z, t, xp: [[0.0] * 3] * 2,
         **_err(TypeError, r"^{func}: out is (builtins\.)?list\b")),  # defect 6
    Case("out-matrix", L23, Y23, out=lambda z, t, xp: _matrix(z.shape),
         **_err(TypeError, r"^{func}: out is numpy\.matrix\b")),  # defect 6
    Case("out-wrong-shape", L45, Y45, out=lambda z, t, xp: xp.zeros((4, 4)),
         **_err(ValueError, r"^{func}: out has shape \(4, 4\); expected the shape of logits")),
    Case("out-wrong-dtype", L45, Y45, out=lambda z, t, xp: xp.zeros(z.shape, xp.float32),
         **_err(TypeError, r"^{func}: out has dtype float32; expected float64")),
    Case("out-float32-for-float16", L45.astype(np.float16), Y45,
         out=lambda z, t, xp: xp.zeros(z.shape, xp.float32),
         **_err(TypeError, r"^{func}: out has dtype float32; expected float16")),
    Case("out-overlapping-view", L45, Y45, out=lambda z, t, xp: z[::-1],
         **_err(ValueError, r"^{func}: out overlaps logits without being logits itself")),
    Case("out-transposed-same-address", L45[:4, :4], Y45 % 4, out=lambda z, t, xp: z.T,
         **_err(ValueError, r"^{func}: out overlaps logits without being logits itself")),
    Case("out-is-the-target", L45, P45, out=lambda z, t, xp: t,
         **_err(ValueError, r"^{func}: out shares memory with target")),
]


def _read_only(array):
    array.flags.writeable = False
    return array


def _matrix(shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(np.zeros(shape))


# ---------------------------------------------------------------------------
# The dense float64 references


def _mass_and_count(target, axis, num_classes, options):
    """Each item's target mass ``sum_k q_k`` (0 if ignored), and the mean's denominator.

    The denominator is the summed label weight of the non-ignored items for
    class indices, the number of items for probabilities (as torch).
    """
    target = np.asarray(target)
    weight = options.get("weight")
    w = np.ones(num_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = options.get("label_smoothing", 0.0)
    if target.dtype.kind in "iu":
        ignore = options.get("ignore_index")
        valid = np.ones(target.shape, bool) if ignore is None else target != ignore
        label_weight = np.where(valid, w[np.where(valid, target, 0)], 0)
        mass = (1 - eps) * label_weight + np.where(valid, eps * np.mean(w), 0)
        return mass, float(np.sum(label_weight))
    t = np.moveaxis(target.astype(np.float64), axis, -1)
    return np.sum(w * ((1 - eps) * t + eps / num_classes), axis=-1), math.prod(t.shape[:-1])


def expected(logits, target, axis, options):
    """The reference loss and gradient, host float64, with issue 15's masked-row rule.

    A row whose every logit is -inf has loss +inf when it carries target mass
    and 0 when it carries none, and a zero gradient either way (defect 7); the
    dense references give NaN there. The reduction divides by the count
    rather than multiplying by its reciprocal, which overflows for a tiny
    count (defect 1).
    """
    options = {k: _float(v) for k, v in options.items()}
    reduction = options.pop("reduction", "mean")
    logits = np.asarray(logits, dtype=np.float64)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if not options.get("z_loss"):
            # The loss is shift-invariant, and the references' z-loss term, 0 * LSE**2,
            # is NaN once LSE**2 overflows: shift each item by its largest finite logit.
            finite = np.where(np.isfinite(logits), logits, -INF)
            shift = np.max(finite, axis=axis, keepdims=True) if logits.size else 0.0
            logits = logits - np.where(np.isfinite(shift), shift, 0.0)
        items = np.asarray(reference_cross_entropy(logits, target, axis=axis,
                                                   reduction="none", **options))
        grad = np.moveaxis(reference_cross_entropy_grad(logits, target, axis=axis,
                                                        reduction="none", **options), axis, -1)
    z = np.moveaxis(logits, axis, -1)
    mass, count = _mass_and_count(target, axis, z.shape[-1], options)
    masked = np.all(z == -INF, axis=-1)
    items = np.where(masked, np.where(mass > 0, INF, 0.0), items)
    grad = np.where(masked[..., None], 0.0, grad)
    if reduction == "none":
        return items, np.moveaxis(grad, -1, axis)
    if reduction != "mean":
        count = 1.0 if reduction == "sum" else float(reduction)
    if count == 0:
        return np.float64(0.0), np.zeros(logits.shape)
    return np.float64(np.sum(items) / count), np.moveaxis(grad / count, -1, axis)


# ---------------------------------------------------------------------------
# Running a row on a path


def _is_float(dtype):
    return dtype.kind == "f" or dtype == BFLOAT16


def _loss_dtype(dtype):
    """float32 for half precision, float64 for integers, else the logits' dtype (DESIGN §2)."""
    if dtype.name in ("float16", "bfloat16"):
        return np.dtype(np.float32)
    return np.dtype(np.float64) if dtype.kind in "iu" else dtype


def _grad_dtype(dtype):
    return np.dtype(np.float64) if dtype.kind in "iu" else dtype


def _tolerances(dtype):
    """``(rtol, atol)`` for results in ``dtype``: the house rtol, or one rounding of a half.

    The absolute part covers entries that cancel to about 0 (a label's ``p - 1``).
    """
    if dtype.name in ("float16", "bfloat16"):
        import ml_dtypes

        return float(ml_dtypes.finfo(dtype).eps), 4 * float(np.finfo(np.float32).eps)
    eps = float(np.finfo(dtype).eps)
    return 4 * eps**0.5, 4 * eps


def _memmap(a, folder):
    """The same values in a file mapped into memory (NumPy only)."""
    if backend(a) != "numpy":
        return a
    mapped = np.memmap(folder / "logits", dtype=a.dtype, mode="w+", shape=a.shape)
    mapped[...] = a
    return mapped


def _strided(a, xp):
    """The same values every other element of a twice-as-long last axis."""
    wide = xp.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


# Each rearranges an array in memory and keeps its values.
LAYOUTS = {
    "F": lambda a, xp: xp.asfortranarray(a),
    "T": lambda a, xp: xp.ascontiguousarray(a.T).T,
    "reversed": lambda a, xp: xp.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1],
    "strided": _strided,
    "readonly": lambda a, xp: _read_only(a.copy()) if backend(a) == "numpy" else a,
}


def _convert(value, xp):
    """NumPy arrays go to ``xp``; lists and scalars stay as they are."""
    return xp.asarray(value) if isinstance(value, np.ndarray) else value


def _inputs(case, xp, folder):
    """``(logits, target, options)`` on ``xp``, the logits laid out as the row asks."""
    logits = _convert(case.logits, xp)
    target = _convert(case.target, xp)
    if case.out is not None:  # the out= rows may write into the logits or the target
        logits, target = logits.copy(), target.copy()
    if case.layout == "memmap":
        logits = _memmap(logits, folder)
    elif case.layout is not None:
        logits = LAYOUTS[case.layout](logits, xp)
    options = dict(case.options)
    if "weight" in options:
        options["weight"] = _convert(options["weight"], xp)
    return logits, target, options


def _valid_axis(axis, logits):
    ndim = np.ndim(logits)
    return isinstance(axis, int) and ndim > 0 and -ndim <= axis < ndim


def _dense(case, path, xp, folder):
    """The call of a dense path, the arrays it must leave alone, and its ``out`` (or None)."""
    logits, target, options = _inputs(case, xp, folder)
    options["axis"] = case.axis
    out = None
    if case.out is not None:
        out = case.out(logits, target, xp)
        options["out"] = out
    elif path == "with_grad_out":
        dtype = _grad_dtype(logits.dtype)
        out = options["out"] = xp.empty(logits.shape, dtype=dtype)
    elif path == "with_grad_inplace":
        logits = out = options["out"] = logits.copy(order="K")
    function = {"loss": xentlib.cross_entropy, "grad": xentlib.cross_entropy_grad}.get(
        path, xentlib.cross_entropy_with_grad)

    def call():
        result = function(logits, target, **options)
        if path == "loss":
            return {"loss": result}
        if path == "grad":
            return {"grad": result}
        return {"loss": result[0], "grad": result[1]}

    untouched = {"logits": logits, "target": target, "weight": options.get("weight")}
    if hasattr(out, "dtype"):
        untouched = {k: v for k, v in untouched.items() if v is not out}
        overwritten = "logits" in untouched and xp.may_share_memory(out, logits)
        if overwritten and not isinstance(case.expectation(path), Raises):
            del untouched["logits"]  # out=logits[:] is the logits, and accepted
    return call, untouched, out


def _linear_layer(logits, target, axis, xp):
    """``(hidden, classifier, bias, target)`` with ``hidden @ classifier.T + bias == logits``.

    ``hidden`` is the logits with classes last and ``classifier`` the identity;
    a column of -inf goes into the bias, since ``0 * -inf`` in the product
    would be NaN. A -inf that is not a whole column cannot be expressed: it is
    left in ``hidden``, for rows whose linear paths refuse the input anyway.
    """
    if isinstance(logits, list):
        return logits, xp.eye(len(logits[0])), None, target
    if logits.ndim == 0 or not _valid_axis(axis, logits):
        classes = logits.shape[-1] if logits.ndim else 1
        return logits, xp.eye(classes, dtype=logits.dtype), None, target
    hidden = xp.moveaxis(logits, axis, -1)
    if np.ndim(target) == logits.ndim:
        target = xp.moveaxis(target, axis, -1)
    classes = hidden.shape[-1]
    classifier = xp.eye(classes, dtype=hidden.dtype)
    bias = None
    if _is_float(hidden.dtype) and hidden.size and bool(xp.any(xp.isneginf(hidden))):
        masked = xp.isneginf(hidden).reshape(-1, classes)
        column = xp.all(masked, axis=0)
        if not bool(xp.all(masked == column)):  # the row must say linear=OMIT or a refusal
            return hidden, classifier, None, target
        bias = xp.where(column, -xp.inf, 0).astype(hidden.dtype)
        hidden = xp.where(xp.isneginf(hidden), 0, hidden).astype(hidden.dtype)
    return hidden, classifier, bias, target


def _linear(case, path, xp, folder):
    """The call of a linear path, the arrays it must leave alone, and ``(hidden, bias)``."""
    logits, target, options = _inputs(case, xp, folder)
    hidden, classifier, bias, target = _linear_layer(logits, target, case.axis, xp)
    if case.out is not None:
        options["out"] = case.out(logits, target, xp)
    if not isinstance(logits, list) and np.ndim(logits) and not _valid_axis(case.axis, logits):
        options["axis"] = case.axis
    function = xentlib.linear_cross_entropy if path == "linear" else (
        xentlib.linear_cross_entropy_with_grad)

    def call():
        result = function(hidden, classifier, target, bias=bias, **options)
        if path == "linear":
            return {"loss": result}
        names = ("loss", "grad_hidden", "grad_classifier", "grad_bias")
        return dict(zip(names, result, strict=False))

    untouched = {"hidden": hidden, "classifier": classifier, "bias": bias, "target": target,
                 "weight": options.get("weight"), "logits": logits}
    return call, untouched, (hidden, bias)


def _sharded(case, path, xp, folder):
    """The call of the sharded path (NumPy chunks, two shards per axis), and its inputs."""
    import dask.array as da

    logits, target, options = _inputs(case, np, folder)
    if isinstance(logits, list):  # refused: the shards are a Dask array's chunks
        return (lambda: xentlib.sharded.cross_entropy(logits, target, **options)), {}, None
    logits = np.asarray(logits)
    if case.out is not None:
        options["out"] = case.out(logits, target, np)
    shape = np.shape(target)
    z, t = logits, target
    if _valid_axis(case.axis, logits) and logits.ndim >= 2:
        z = np.moveaxis(logits, case.axis, -1)
        if np.ndim(target) == logits.ndim:
            t = np.moveaxis(target, case.axis, -1)
            shape = t.shape[:-1]
        if logits.ndim > 2:  # items by classes, as the shards take them
            items = math.prod(z.shape[:-1])
            t = np.reshape(t, (items, -1) if np.ndim(t) == logits.ndim else (items,))
            z = z.reshape(items, z.shape[-1])
    elif np.ndim(logits) and not _valid_axis(case.axis, logits):
        options["axis"] = case.axis
    chunks = tuple(max(1, math.ceil(n / 2)) for n in z.shape)
    shards = da.from_array(z, chunks=chunks)

    def call():
        loss = xentlib.sharded.cross_entropy(shards, t, **options).compute(scheduler="sync")
        if options.get("reduction") == "none":
            loss = loss.reshape(shape)
        return {"loss": loss}

    untouched = {"logits": logits, "target": target, "weight": options.get("weight")}
    return call, untouched, None


def _host_bytes(array):
    a = xentlib.to_numpy(array)
    return a.dtype, a.shape, a.tobytes()


_EXPECTED = {}  # case id -> the reference (loss, grad): every path of a row shares them


def _check_values(results, case, path, xp, extra, expectation):
    """Compare every result of a path with the reference, in the dtype DESIGN §2 gives it."""
    host = np.asarray(case.logits)
    dtype = host.dtype
    if isinstance(expectation, Exact):
        loss, grad = expectation.loss, expectation.grad
    else:
        if case.id not in _EXPECTED:
            _EXPECTED[case.id] = expected(host, case.target, case.axis, case.options)
        loss, grad = _EXPECTED[case.id]
    if "loss" in results:
        rtol, _ = _tolerances(_loss_dtype(dtype))
        _assert_close(results["loss"], loss, _loss_dtype(dtype), xp, rtol, 0.0)
    rtol, atol = _tolerances(_grad_dtype(dtype))
    if "grad" in results:
        _assert_close(results["grad"], grad, _grad_dtype(dtype), xp, rtol, atol)
        if extra is not None:
            assert results["grad"] is extra, "the gradient is not the out= buffer"
    if "grad_hidden" in results:
        hidden, bias = extra
        g = np.moveaxis(grad, case.axis, -1) if np.ndim(grad) > 1 else grad
        _assert_close(results["grad_hidden"], g, _grad_dtype(dtype), xp, rtol, atol)
        g2 = g.reshape(-1, g.shape[-1])
        h2 = xentlib.to_numpy(xp.asarray(hidden)).astype(np.float64).reshape(g2.shape)
        with np.errstate(all="ignore"):
            _assert_close(results["grad_classifier"], g2.T @ h2, _grad_dtype(dtype), xp,
                          rtol, atol * max(1, len(g2)))
        if bias is not None:
            _assert_close(results["grad_bias"], g2.sum(axis=0), _grad_dtype(dtype), xp, rtol,
                          atol * max(1, len(g2)))


def _assert_close(actual, desired, dtype, xp, rtol, atol):
    with np.errstate(over="ignore"):  # a reference beyond the dtype's range is its inf
        desired = xp.asarray(np.asarray(desired).astype(dtype))
    assert_close(actual, desired, rtol=rtol, atol=atol)


RUNNERS = {**dict.fromkeys(DENSE, _dense), **dict.fromkeys(LINEAR, _linear), "sharded": _sharded}


def run_row(case, path, xp, folder=None):
    """Run one row on one path: the outcome it expects, no input modified, no warning."""
    expectation = case.expectation(path)
    call, untouched, extra = RUNNERS[path](case, path, xp, folder)
    untouched = {k: v for k, v in untouched.items() if hasattr(v, "dtype")}
    before = {k: _host_bytes(v) for k, v in untouched.items()}
    results = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if isinstance(expectation, Raises):
            with pytest.raises(expectation.type, match=_pattern(expectation, path)):
                call()
        elif isinstance(expectation, ValueOrRaises):
            try:
                results = call()
            except expectation.raises.type as error:
                assert re.match(_pattern(expectation.raises, path), str(error)), str(error)
        else:
            results = call()
    for name, array in untouched.items():
        assert _host_bytes(array) == before[name], f"{FUNC[path]} modified {name}"
    if results is not None:
        _check_values(results, case, path, xp, extra, expectation)


def _pattern(raises, path):
    return raises.pattern.format(func=re.escape(FUNC[path]),
                                 logits="hidden" if path in LINEAR else "logits")


def _backends(expectation):
    """The ``xp`` fixture's backends for a row: read-only NumPy only where values come back.

    An error does not depend on whether the inputs can be written; CuPy only
    where it is installed (the fixture skips it where there is no GPU).
    """
    names = ["numpy"] if isinstance(expectation, Raises) else ["numpy", "numpy:readonly"]
    if importlib.util.find_spec("cupy") is not None:
        names.append(pytest.param("cupy", marks=pytest.mark.gpu))
    return names


def _rows(paths, backends=True):
    for case in CASES:
        for path in paths:
            expectation = case.expectation(path)
            if expectation == OMIT:
                continue
            if path in ("with_grad_out", "with_grad_inplace") and (
                    case.out is not None or isinstance(case.logits, list)):
                continue
            if path == "with_grad_inplace" and np.asarray(case.logits).dtype.kind in "iu":
                continue  # integer logits cannot hold their own gradient
            if not backends:
                yield pytest.param(case, path, id=f"{path}-{case.id}")
                continue
            for xp in _backends(expectation):
                name = xp if isinstance(xp, str) else xp.values[0]
                yield pytest.param(case, path, xp, id=f"{name}-{path}-{case.id}")


def _folder(case, request):
    return request.getfixturevalue("tmp_path") if case.layout == "memmap" else None


@pytest.mark.parametrize(("case", "path", "xp"), list(_rows(DENSE + LINEAR)), indirect=["xp"])
def test_row(case, path, xp, request):
    run_row(case, path, xp, _folder(case, request))


@pytest.mark.parametrize(("case", "path"), list(_rows(("sharded",), backends=False)))
def test_row_sharded(case, path, request):
    pytest.importorskip("dask.array", reason="xentlib.sharded needs Dask")
    import xentlib.sharded  # noqa: F401 - loaded on first use

    run_row(case, path, np, _folder(case, request))


# ---------------------------------------------------------------------------
# The softmax family: softmax, log_softmax, logsumexp (with and without keepdims)

SOFTMAX_FUNCTIONS = {
    "softmax": (xentlib.softmax, {}),
    "log_softmax": (xentlib.log_softmax, {}),
    "logsumexp": (xentlib.logsumexp, {}),
    "logsumexp-keepdims": (xentlib.logsumexp, {"keepdims": True}),
}
_X = r"^{func}: (x|logits)"  # the argument is `x`; messages have said "logits"


@dataclasses.dataclass(frozen=True)
class SoftmaxCase:
    """One row of the softmax family: an input and an axis, and an error or the reference.

    ``logsumexp`` overrides ``expect`` for logsumexp, which has a value where
    the others have none (the log of an empty sum is -inf, as in scipy).
    """

    id: str
    x: object
    axis: object = -1
    layout: str | None = None
    expect: object = REFERENCE
    logsumexp: object = None

    def expectation(self, name):
        if name.startswith("logsumexp") and self.logsumexp is not None:
            return self.logsumexp
        return self.expect


SOFTMAX_CASES = [
    SoftmaxCase("float64", L45),
    SoftmaxCase("float32", L45.astype(np.float32)),
    SoftmaxCase("float16", L45.astype(np.float16)),
    *([SoftmaxCase("bfloat16", L45.astype(BFLOAT16))] if BFLOAT16 is not None else []),
    SoftmaxCase("int64", np.array([[1, 2, 0], [3, -1, 2]])),
    SoftmaxCase("list", L23.tolist()),
    SoftmaxCase("1d", np.array([1.0, 2.0, 0.5])),
    SoftmaxCase("axis0", L45, axis=0),
    SoftmaxCase("NCd-axis1", L243, axis=1),
    SoftmaxCase("empty-batch", np.zeros((0, 3))),
    SoftmaxCase("neginf-masks-a-class", np.array([[0.0, -INF, 1.0], [2.0, -INF, 0.0]])),
    SoftmaxCase("neginf-row", np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]])),
    SoftmaxCase("posinf-row", np.array([[0.5, INF, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]])),  # 3, 10
    SoftmaxCase("nan-row", _with(L45, (2, 1), NAN)),
    SoftmaxCase("huge-float32", np.array([[3e38, -3e38, 0.0]], np.float32)),  # defect 3
    SoftmaxCase("huge-float64", np.array([[1e308, -1e308, 0.0]])),  # defect 3
    SoftmaxCase("layout-fortran", L45, layout="F"),
    SoftmaxCase("layout-transposed-view", L45, layout="T"),
    SoftmaxCase("layout-negative-strides", L45, layout="reversed"),
    SoftmaxCase("layout-NCd-strided", L243, axis=1, layout="strided"),
    SoftmaxCase("layout-read-only", L45, layout="readonly"),
    SoftmaxCase("bool", L23 > 1, expect=Raises(TypeError, _X + r" has dtype bool")),
    SoftmaxCase("complex", L23.astype(complex),
                expect=Raises(TypeError, _X + r" has dtype complex128")),
    SoftmaxCase("object", L23.astype(object), expect=Raises(TypeError, _X + r" has dtype object")),
    SoftmaxCase("0d", np.float64(1.0), expect=Raises(ValueError, _X + r" is 0-dimensional")),
    SoftmaxCase("no-classes", np.zeros((2, 0)), expect=Raises(ValueError, _X + r" has no classes"),
                logsumexp=REFERENCE),
    SoftmaxCase("axis-out-of-range", L45, axis=2,
                expect=Raises(ValueError, r"^{func}: axis = 2 is out of range")),
    SoftmaxCase("axis-float", L45, axis=1.0,
                expect=Raises(TypeError, r"^{func}: axis = 1\.0; expected an integer")),
]


def softmax_expected(name, x, axis):
    """scipy.special in float64, with the conventions for rows that hold no finite maximum.

    A row of -inf has softmax 0, log_softmax -inf and logsumexp -inf (scipy:
    NaN); a row with +inf or NaN is NaN throughout (defect 10), except that
    the logsumexp of +inf without NaN is +inf.
    """
    z = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    function = name.removesuffix("-keepdims")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        value = getattr(scipy.special, function)(z, axis=-1)
    masked = np.all(z == -INF, axis=-1)
    undefined = np.any(np.isnan(z) | (z == INF), axis=-1)
    if function == "logsumexp":
        value = np.where(masked, -INF, np.where(np.any(np.isnan(z), axis=-1), NAN, value))
        return value[..., None] if name.endswith("keepdims") else value
    value = np.where(masked[..., None], 0.0 if function == "softmax" else -INF, value)
    value = np.where(undefined[..., None], NAN, value)
    return np.moveaxis(value, -1, axis)


def _softmax_rows():
    for case in SOFTMAX_CASES:
        for name in SOFTMAX_FUNCTIONS:
            for xp in _backends(case.expectation(name)):
                backend_name = xp if isinstance(xp, str) else xp.values[0]
                yield pytest.param(case, name, xp, id=f"{backend_name}-{name}-{case.id}")


@pytest.mark.parametrize(("case", "name", "xp"), list(_softmax_rows()), indirect=["xp"])
def test_softmax_row(case, name, xp):
    function, options = SOFTMAX_FUNCTIONS[name]
    x = _convert(case.x, xp)
    if case.layout is not None:
        x = LAYOUTS[case.layout](x, xp)
    before = _host_bytes(x) if hasattr(x, "dtype") else None
    func = name.removesuffix("-keepdims")
    expectation = case.expectation(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if isinstance(expectation, Raises):
            pattern = expectation.pattern.format(func=func)
            with pytest.raises(expectation.type, match=pattern):
                function(x, axis=case.axis, **options)
            result = None
        else:
            result = function(x, axis=case.axis, **options)
    if before is not None:
        assert _host_bytes(x) == before, f"{func} modified its input"
    if result is not None:
        dtype = _grad_dtype(np.asarray(case.x).dtype)
        rtol, atol = _tolerances(dtype)
        desired = softmax_expected(name, case.x, case.axis)
        if name.endswith("keepdims"):
            desired = np.moveaxis(desired, -1, case.axis)
        _assert_close(result, desired, dtype, xp, rtol, atol)


# ---------------------------------------------------------------------------
# The ten defects of issue 15, each with the issue's own reproducer

L = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]])  # the issue's L


def _quiet(function, *args, **kwargs):
    """Call with every warning an error, as pytest's ``-W error`` does."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function(*args, **kwargs)


def _sharded_loss(logits, target, **options):
    da = pytest.importorskip("dask.array", reason="xentlib.sharded needs Dask")
    import xentlib.sharded

    shards = da.from_array(logits, chunks=(len(logits), 2))
    return xentlib.sharded.cross_entropy(shards, target, **options).compute(scheduler="sync")


def _linear_loss(logits, target, **options):
    return xentlib.linear_cross_entropy(logits, np.eye(logits.shape[-1], dtype=logits.dtype),
                                        target, **options)


def test_defect_1_tiny_total_weight():
    # 1 / (2e-310) overflows: the mean was inf and the gradient [[nan, inf, inf], ...].
    torch = pytest.importorskip("torch", reason="torch is the optional test oracle")
    weight = np.array([1e-310, 1.0, 1.0])
    labels = np.array([0, 0])
    oracle = torch.nn.functional.cross_entropy(torch.tensor(L), torch.tensor(labels),
                                               weight=torch.tensor(weight)).item()
    assert oracle == pytest.approx(1.6867, abs=1e-4)  # as the issue quotes torch 2.13
    # Both items weigh the same, so the weighted mean is the plain one.
    plain = xentlib.cross_entropy(L, labels)
    for loss in (_quiet(xentlib.cross_entropy, L, [0, 0], weight=weight),
                 _quiet(_linear_loss, L, labels, weight=weight),
                 _quiet(_sharded_loss, L, labels, weight=weight)):
        assert float(loss) == pytest.approx(oracle, rel=1e-12)
        assert float(loss) == pytest.approx(float(plain), rel=1e-12)
    grad = _quiet(xentlib.cross_entropy_grad, L, labels, weight=weight)
    np.testing.assert_allclose(grad, xentlib.cross_entropy_grad(L, labels), rtol=1e-12)
    # float32: a weight of 1e-39 is subnormal there
    z32 = L.astype(np.float32)
    weight32 = np.array([1e-39, 1.0, 1.0], np.float32)
    loss32 = _quiet(xentlib.cross_entropy, z32, labels, weight=weight32)
    assert loss32.dtype == np.float32
    assert float(loss32) == pytest.approx(float(plain), rel=1e-4)


def test_defect_2_sharded_empty_batch():
    da = pytest.importorskip("dask.array", reason="xentlib.sharded needs Dask")
    import xentlib.sharded

    logits, target = da.zeros((0, 3), chunks=(1, 2)), np.zeros(0, np.int64)
    loss = _quiet(lambda: xentlib.sharded.cross_entropy(logits, target).compute())
    assert float(loss) == 0.0 and loss.dtype == np.float64
    items = _quiet(lambda: xentlib.sharded.cross_entropy(logits, target,
                                                         reduction="none").compute())
    assert items.shape == (0,) and items.dtype == np.float64


@pytest.mark.parametrize("call", [
    pytest.param(lambda: xentlib.cross_entropy(np.array([[3e38, -3e38, 0]], np.float32), [2]),
                 id="cross_entropy-float32"),
    pytest.param(lambda: xentlib.cross_entropy_grad(np.array([[3e38, -3e38, 0]], np.float32),
                                                    [2]), id="cross_entropy_grad-float32"),
    pytest.param(lambda: xentlib.cross_entropy(np.array([[1e308, -1e308, 0]]), [2]),
                 id="cross_entropy-float64"),
    pytest.param(lambda: xentlib.softmax(np.array([[3e38, -3e38, 0]], np.float32)),
                 id="softmax-float32"),
    pytest.param(lambda: xentlib.logsumexp(np.array([[3e38, -3e38, 0]], np.float32)),
                 id="logsumexp-float32"),
    pytest.param(lambda: xentlib.log_softmax(np.array([[1e308, -1e308, 0]])),
                 id="log_softmax-float64"),
    pytest.param(lambda: xentlib.log_softmax(np.array([[0.5, INF, 1, 2]])),
                 id="log_softmax-posinf"),
    pytest.param(lambda: xentlib.cross_entropy_with_grad(L, [0, 0],
                                                         weight=np.array([1e-310, 1, 1])),
                 id="tiny-weight"),
    pytest.param(lambda: _sharded_loss(np.array([[3e38, -3e38, 0]], np.float32), [2]),
                 id="sharded-float32"),
])
def test_defect_3_no_warning_on_valid_input(call):
    _quiet(call)


def test_defect_3_huge_logits_values():
    z32 = np.array([[3e38, -3e38, 0]], np.float32)
    assert float(_quiet(xentlib.cross_entropy, z32, [2])) == float(np.float32(3e38))
    assert float(_quiet(xentlib.cross_entropy, np.array([[1e308, -1e308, 0]]), [2])) == 1e308
    np.testing.assert_array_equal(_quiet(xentlib.softmax, z32), [[1, 0, 0]])
    assert float(_quiet(xentlib.logsumexp, z32)[0]) == float(np.float32(3e38))


def _ulps(actual, exact, dtype):
    """The error of ``actual`` in units of the last place of ``exact`` in ``dtype``."""
    value = dtype.type(float(exact))
    return abs(float(actual) - float(exact)) / float(np.spacing(abs(value)))


def _mpmath_label_loss(row, label):
    """``logsumexp(row) - row[label]`` at 50 digits.

    Terms below ``e**-20`` of the largest are summed in float64 (each exp to
    1e-16 of itself, so their total to 1e-20 of the sum for 50000 terms),
    the few others in mpmath: fast, and exact enough to count ulps.
    """
    mpmath = pytest.importorskip("mpmath")
    shifted = row.astype(np.float64) - float(row.max())  # exact: float32 differences fit
    small = shifted < -20
    with mpmath.workdps(50):
        total = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in shifted[~small])
        total += math.fsum(np.exp(shifted[small]))
        return mpmath.log(total) - mpmath.mpf(float(shifted[label]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_defect_4_row_sums_are_accurate_and_batch_independent(dtype):
    z = (np.random.default_rng(0).normal(size=(2, 50000)) * 10).astype(dtype)
    y = z.argmax(1)
    items = _quiet(xentlib.cross_entropy, z, y, reduction="none")
    alone = _quiet(xentlib.cross_entropy, z[:1], y[:1], reduction="none")
    exact = _mpmath_label_loss(z[0], y[0])
    assert _ulps(items[0], exact, np.dtype(dtype)) <= 2  # einsum: 27.5 (float64), 6 (float32)
    assert _ulps(alone[0], exact, np.dtype(dtype)) <= 2
    grad = _quiet(xentlib.cross_entropy_grad, z, y, reduction="none")
    grad_alone = _quiet(xentlib.cross_entropy_grad, z[:1], y[:1], reduction="none")
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(grad_alone[0], grad[0], rtol=4 * eps, atol=4 * eps)


def test_defect_5_label_gradient_is_never_positive():
    z = np.array([[-16.364605, 14.633046]] * 3, np.float32)
    grad = _quiet(xentlib.cross_entropy_grad, z, [1, 1, 1])
    # d/dz_1 = (p_1 - 1) / 3 = -p_0 / 3 = -1.15e-14; it was +2.98e-8. torch gives 0.
    p0 = float(scipy.special.softmax(z[0].astype(np.float64))[0])
    label_grad = grad[:, 1].astype(np.float64)
    assert np.all((label_grad == 0) | (np.abs(label_grad + p0 / 3) <= 1e-3 * p0 / 3))
    for classes in range(2, 8):
        for seed in range(4):
            logits = (np.random.default_rng(seed).normal(size=(100, classes)) * 20)
            logits = logits.astype(np.float32)
            labels = logits.argmax(1)
            g = _quiet(xentlib.cross_entropy_grad, logits, labels)
            assert np.all(g[np.arange(100), labels] <= 0), (classes, seed)


def _torch_tensor_with_grad():
    torch = pytest.importorskip("torch", reason="torch is the optional test oracle")
    return torch.tensor(L, requires_grad=True)


@pytest.mark.parametrize(("call", "raises"), [
    pytest.param(lambda: xentlib.cross_entropy_with_grad(L, [0, 1], out=_read_only(L.copy())),
                 Raises(ValueError, r"^cross_entropy_with_grad: out is read-only"),
                 id="out-read-only"),
    pytest.param(lambda: xentlib.cross_entropy_with_grad(L, [0, 1], out=[[0.0] * 3] * 2),
                 Raises(TypeError, r"^cross_entropy_with_grad: out is (builtins\.)?list\b"),
                 id="out-list"),
    pytest.param(lambda: xentlib.cross_entropy_with_grad(L, [0, 1], out=_matrix(L.shape)),
                 Raises(TypeError, r"^cross_entropy_with_grad: out is numpy\.matrix\b"),
                 id="out-matrix"),
    pytest.param(lambda: xentlib.cross_entropy([[1.0, 2.0, 0.5], [0.3]], [0, 1]),
                 Raises((TypeError, ValueError), r"^cross_entropy: logits\b"), id="ragged"),
    pytest.param(lambda: xentlib.cross_entropy(_torch_tensor_with_grad(), [0, 1]),
                 Raises(TypeError, r"^cross_entropy: logits is torch\.Tensor"),
                 id="torch-requires-grad"),
])
def test_defect_6_errors_name_function_and_argument(call, raises):
    with pytest.raises(raises.type, match=raises.pattern):
        _quiet(call)


@pytest.mark.parametrize("function", [xentlib.cross_entropy, xentlib.cross_entropy_grad,
                                      xentlib.cross_entropy_with_grad])
@pytest.mark.parametrize(("target", "options"), [
    pytest.param([0, 1], {"label_smoothing": Fraction(1, 10)}, id="smoothing-indices"),
    pytest.param([0, 1], {"label_smoothing": Fraction(1, 10), "reduction": "none"},
                 id="smoothing-indices-none"),
    pytest.param(np.eye(3)[[0, 1]], {"label_smoothing": Fraction(1, 10)},
                 id="smoothing-probabilities"),
    pytest.param([0, 1], {"reduction": Fraction(2)}, id="reduction"),
])
def test_defect_6_fractions_are_converted_or_refused(function, target, options):
    name = next(iter(options))
    try:
        result = _quiet(function, L, target, **options)
    except ValueError as error:  # refused: in the house format
        assert re.match(rf"^{function.__name__}: {name} = Fraction\(", str(error)), str(error)
        return
    floats = {k: _float(v) for k, v in options.items()}
    desired = function(L, target, **floats)
    for a, b in zip(result if isinstance(result, tuple) else (result,),
                    desired if isinstance(desired, tuple) else (desired,), strict=True):
        assert_close(a, b, rtol=1e-15)


def test_defect_7_fully_masked_rows():
    # The issue's reproducer: the weights sum to 0, so the mean is 0.0, z-loss or not.
    loss = _quiet(xentlib.cross_entropy, [[-INF, -INF]], [0], weight=[0, 0], z_loss=1e-4)
    assert float(loss) == 0.0
    masked = np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]])
    for z_loss in (0.0, 1e-2):
        loss, grad = _quiet(xentlib.cross_entropy_with_grad, masked, [0, 1], z_loss=z_loss,
                            reduction="none")
        assert loss[0] == INF  # target mass on classes that cannot happen
        np.testing.assert_array_equal(grad[0], 0.0)
        assert np.all(np.isfinite(grad[1]))
        loss, grad = _quiet(xentlib.cross_entropy_with_grad, masked, [-1, 1], z_loss=z_loss,
                            ignore_index=-1, reduction="none")
        assert loss[0] == 0.0  # no target mass: nothing to pay
        np.testing.assert_array_equal(grad[0], 0.0)


@pytest.mark.parametrize("reduction", [10**400, 1e-320], ids=["10**400", "1e-320"])
def test_defect_8_absurd_reduction_numbers(reduction):
    # They gave 0.0 and inf without a word.
    for name, call in [("cross_entropy", xentlib.cross_entropy), ("linear_cross_entropy",
                                                                   _linear_loss),
                       ("sharded.cross_entropy", _sharded_loss)]:
        with pytest.raises(ValueError, match=rf"^{re.escape(name)}: reduction = "):
            _quiet(call, L, np.array([0, 1]), reduction=reduction)


@pytest.mark.parametrize(("value", "shown"), [(-1.0, r"-1(\.0)?"), (NAN, "nan"), (INF, "inf")],
                         ids=["negative", "nan", "inf"])
def test_defect_9_class_weights_are_checked(value, shown):
    # A weight of -1 gave -0.0 as "nothing to average"; torch gives -inf.
    weight = np.array([1.0, value, 1.0])
    for name, call in [("cross_entropy", xentlib.cross_entropy), ("linear_cross_entropy",
                                                                   _linear_loss),
                       ("sharded.cross_entropy", _sharded_loss)]:
        with pytest.raises(ValueError, match=rf"^{re.escape(name)}: weight\[1\] = {shown}\b"):
            _quiet(call, L, np.array([0, 1]), weight=weight)


def test_defect_10_posinf_logit_makes_the_whole_row_nan():
    torch = pytest.importorskip("torch", reason="torch is the optional test oracle")
    z = np.array([[0.5, INF, 1.0, 2.0]])
    loss, grad = _quiet(xentlib.cross_entropy_with_grad, z, [3])
    t = torch.tensor(z, requires_grad=True)
    torch.nn.functional.cross_entropy(t, torch.tensor([3])).backward()
    assert np.isnan(float(loss))
    assert np.all(np.isnan(t.grad.numpy()))  # torch: all NaN
    assert np.all(np.isnan(grad))  # it was [0, nan, 0, -1]
    assert np.all(np.isnan(_quiet(xentlib.cross_entropy_grad, z, [3])))
    assert np.all(np.isnan(_quiet(xentlib.softmax, z)))  # it was [nan, 0, 0, 0]
