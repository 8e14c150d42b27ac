"""Input validation: one function per rule for bad input, each with its message.

Messages follow one pattern, ``<function>: <argument>[<index>] = <value> <what
is wrong>; expected <what is right>``, and tests match them, so they are API.
A check costs one device-to-host sync (``bool(bad.any())``); only when it is
about to raise does it look for the first offender.
"""

import numbers
import sys

from ._namespace import address

__all__ = [
    "check_chunk_size",
    "check_ignore_index",
    "check_linear_shapes",
    "check_num_classes",
    "as_array",
    "check_out",
    "class_indices_only",
    "classes_last",
    "index_target",
    "is_same_view",
    "logits_dtype",
    "options",
    "probability_target",
    "result_dtype",
    "target_kind",
    "weight_vector",
    "work_dtype",
]

_REDUCTIONS = ("none", "mean", "sum")


def as_array(func, name, value, xp):
    """``value`` as an array of ``xp``, or the house error for what cannot be one.

    A ragged list, or one holding strings or objects NumPy cannot convert,
    would otherwise fail deep inside NumPy naming neither function nor argument.
    """
    try:
        return xp.asarray(value)
    except (ValueError, TypeError) as error:
        msg = (f"{func}: {name} cannot be read as an array ({error}); expected an array or "
               "a nested list of numbers of one shape")
        raise ValueError(msg) from None


def _where(position):
    """``[1, 0]`` for a position tuple, nothing for a 0-d array."""
    return f"[{', '.join(map(str, position))}]" if position else ""


def _first(xp, bad):
    """Index tuple of the first True entry of ``bad``."""
    return tuple(int(i) for i in xp.argwhere(bad)[0])


def _is_half(dtype):
    """Whether ``dtype`` is float16 or bfloat16, computed in float32."""
    # bfloat16 comes from ml_dtypes and has no NumPy kind of its own; its type's name is
    # stable (and cheaper to read than dtype.name, which NumPy builds in Python).
    return dtype.type.__name__ in ("float16", "bfloat16")


def work_dtype(func, name, dtype, xp):
    """The dtype to compute in: float32 for half precision, float64 for integers."""
    if _is_half(dtype):
        return xp.dtype(xp.float32)
    if dtype.kind == "f":
        return dtype
    if dtype.kind in "iu":
        return xp.dtype(xp.float64)
    msg = f"{func}: {name} has dtype {dtype}; expected real numbers (floating point or integer)"
    raise TypeError(msg)


def result_dtype(dtype, xp):
    """The dtype results come back in: the input's, or float64 for integer input."""
    return xp.dtype(xp.float64) if dtype.kind in "iu" else dtype


def classes_last(func, logits, axis, xp, empty_ok=False):
    """Validate ``logits`` and ``axis``; return the logits as a float view with classes last.

    The view is the caller's own array whenever no conversion is needed, so
    nothing downstream may write into it.
    """
    dtype = logits_dtype(func, logits, axis, xp, empty_ok)
    return xp.moveaxis(logits, axis, -1).astype(dtype, copy=False)


def logits_dtype(func, logits, axis, xp, empty_ok=False):
    """Validate ``logits`` and ``axis``; return the dtype to compute in (see `work_dtype`).

    An empty class axis is refused unless ``empty_ok`` (a sum over nothing).
    """
    dtype = work_dtype(func, "logits", logits.dtype, xp)
    if logits.ndim == 0:
        msg = f"{func}: logits is 0-dimensional; expected an array with a class axis"
        raise ValueError(msg)
    if type(axis) is not int and (not isinstance(axis, numbers.Integral)
                                  or isinstance(axis, bool)):
        msg = f"{func}: axis = {axis!r}; expected an integer"
        raise TypeError(msg)
    if not -logits.ndim <= axis < logits.ndim:
        msg = f"{func}: axis = {axis} is out of range for logits with {logits.ndim} dims"
        raise ValueError(msg)
    if logits.shape[axis] == 0 and not empty_ok:
        msg = f"{func}: logits has no classes (size 0 on axis {axis}); expected at least one"
        raise ValueError(msg)
    return dtype


def target_kind(func, target, logits_shape, axis):
    """Return ``"index"`` or ``"probability"`` from the target's shape and dtype."""
    a = axis % len(logits_shape)
    batch_shape = logits_shape[:a] + logits_shape[a + 1 :]
    kind = target.dtype.kind
    if target.shape == batch_shape and kind in "iu":
        return "index"
    if target.shape == logits_shape and (kind == "f" or _is_half(target.dtype)):
        return "probability"
    if target.shape == batch_shape:
        msg = (
            f"{func}: target has dtype {target.dtype} and shape {target.shape}, the shape of "
            f"class indices for logits of shape {logits_shape}; expected an integer dtype, "
            f"or probabilities of shape {logits_shape}"
        )
        raise TypeError(msg)
    if target.shape == logits_shape:
        msg = (
            f"{func}: target has dtype {target.dtype} and the shape of logits {logits_shape}; "
            "expected floating-point probabilities (xentlib.one_hot makes them from labels), "
            f"or integer class indices of shape {batch_shape}"
        )
        raise TypeError(msg)
    msg = (
        f"{func}: target has shape {target.shape}; expected {batch_shape} (class indices) "
        f"or {logits_shape} (probabilities) for logits of shape {logits_shape} with axis={axis}"
    )
    if a != 1 and len(logits_shape) > 2 and target.shape == logits_shape[:1] + logits_shape[2:]:
        msg += " (did you mean axis=1, torch's class axis?)"
    raise ValueError(msg)


def class_indices_only(func, target, batch_shape, num_classes):
    """Check that ``target`` holds integer class indices of ``batch_shape``; refuse probabilities.

    For the functions that never hold a whole (items, classes) array at once:
    a probability target would be exactly such an array.
    """
    if target.shape == batch_shape and target.dtype.kind in "iu":
        return
    floating = target.dtype.kind == "f" or _is_half(target.dtype)
    if target.shape == (*batch_shape, num_classes) and floating:
        msg = (
            f"{func}: target has shape {target.shape}, probabilities over the {num_classes} "
            "classes; "
            f"{func} takes class indices only: expected integers of shape {batch_shape} "
            "(xentlib.cross_entropy takes probabilities)"
        )
        raise TypeError(msg)
    if target.shape == batch_shape:
        msg = (
            f"{func}: target has dtype {target.dtype} and shape {target.shape}, the shape of class "
            "indices; expected an integer dtype"
        )
        raise TypeError(msg)
    msg = f"{func}: target has shape {target.shape}; expected class indices of shape {batch_shape}"
    raise ValueError(msg)


def index_target(func, name, labels, num_classes, axis, ignore_index, xp):
    """Check that every class index is in ``[0, num_classes)`` or is ``ignore_index``."""
    if labels.size == 0:
        return
    if ignore_index is None and num_classes <= 1 << (8 * labels.itemsize - 1):
        # Read as unsigned, a negative index is at least that large: one max finds both kinds
        # of outsider, and the usual batch needs nothing more.
        if int(labels.view(labels.dtype.str.replace("i", "u")).max()) < num_classes:
            return
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        position = _first(xp, bad)
        msg = (
            f"{func}: {name}{_where(position)} = {int(labels[position])} is outside "
            f"[0, {num_classes})"
        )
        if axis is not None:
            msg += f" ({num_classes} classes on axis {axis})"
        if ignore_index is not None:
            msg += f" and is not ignore_index={ignore_index}"
        elif int(labels[position]) == -100:
            msg += " (did you mean ignore_index=-100, torch's default?)"
        raise ValueError(msg)


def probability_target(func, target, xp):
    """Check that every probability is a number >= 0 (rows need not sum to 1, as in torch).

    One min-reduction (NaN propagates through it) instead of a logits-sized mask.
    """
    if target.size == 0 or bool(xp.min(target) >= 0):
        return
    bad = ~(target >= 0)
    if bool(bad.any()):
        position = _first(xp, bad)
        value = float(target[position])
        what = "is not a number" if value != value else "is negative"
        msg = f"{func}: target{_where(position)} = {value} {what}; expected probabilities >= 0"
        raise ValueError(msg)


def weight_vector(func, weight, num_classes, dtype, xp):
    """Return ``weight`` as a float vector of one finite, non-negative entry per class."""
    weight = as_array(func, "weight", weight, xp)
    work_dtype(func, "weight", weight.dtype, xp)
    if weight.shape != (num_classes,):
        got = f"{weight.shape[0]} entries" if weight.ndim == 1 else f"shape {weight.shape}"
        msg = f"{func}: weight has {got}; expected one per class ({num_classes})"
        raise ValueError(msg)
    weight = weight.astype(dtype, copy=False)
    bad = ~((weight >= 0) & (weight < xp.inf))
    if bool(bad.any()):
        position = _first(xp, bad)
        msg = (f"{func}: weight{_where(position)} = {float(weight[position])} is not a finite "
               "number >= 0; expected class weights in [0, inf)")
        raise ValueError(msg)
    return weight


def _is_real(x):
    """Whether ``x`` is a real number and not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_positive_integer(x):
    """Whether ``x`` is an integer >= 1 and not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool) and int(x) >= 1


def _as_float(x):
    """``x`` as a Python float, or None where it is not a real number a float can hold."""
    if type(x) is float:  # the usual case, and isinstance against an ABC is slow
        return x
    if not _is_real(x):
        return None
    try:
        return float(x)
    except OverflowError:  # an int like 10**400
        return None


def options(func, kind, ignore_index, label_smoothing, z_loss, reduction):
    """Check the options every loss shares; return smoothing, z-loss and reduction as floats.

    Numbers of any real type (``Fraction(1, 10)``, NumPy scalars) become
    Python floats, so they cannot turn a result into an object array.
    """
    check_ignore_index(func, ignore_index, kind)
    smoothing = _as_float(label_smoothing)
    if smoothing is None or not 0 <= smoothing <= 1:
        msg = f"{func}: label_smoothing = {label_smoothing!r}; expected a number in [0, 1]"
        raise ValueError(msg)
    z = _as_float(z_loss)
    if z is None or not 0 <= z < float("inf"):
        msg = f"{func}: z_loss = {z_loss!r}; expected a finite number >= 0"
        raise ValueError(msg)
    return smoothing, z, _reduction(func, reduction)


def check_num_classes(func, num_classes):
    """Check that ``num_classes`` is a positive integer."""
    if not _is_positive_integer(num_classes):
        msg = f"{func}: num_classes = {num_classes!r}; expected a positive integer"
        raise ValueError(msg)


def check_linear_shapes(func, hidden, classifier, bias):
    """Check ``hidden`` (..., D), ``classifier`` (V, D) with V >= 1, and ``bias`` (V,) or None."""
    if hidden.ndim == 0:
        msg = (f"{func}: hidden is 0-dimensional; expected shape (N, D): one row of D features "
               "per item")
        raise ValueError(msg)
    features = hidden.shape[-1]
    if classifier.ndim != 2 or classifier.shape[1] != features:
        msg = (
            f"{func}: classifier has shape {classifier.shape}; expected (V, {features}): one row "
            f"per class, as long as the last dimension of hidden {hidden.shape}"
        )
        raise ValueError(msg)
    if classifier.shape[0] == 0:
        msg = f"{func}: classifier has no rows (0 classes); expected at least one"
        raise ValueError(msg)
    if bias is not None and bias.shape != classifier.shape[:1]:
        msg = (
            f"{func}: bias has shape {bias.shape}; expected ({classifier.shape[0]},), one entry "
            "per row of classifier"
        )
        raise ValueError(msg)


def check_chunk_size(func, chunk_size):
    """Check that ``chunk_size`` is None or a positive integer."""
    if chunk_size is None:
        return
    if not _is_positive_integer(chunk_size):
        msg = (
            f"{func}: chunk_size = {chunk_size!r}; expected a positive integer (classes per chunk) "
            "or None"
        )
        raise ValueError(msg)


def _reduction(func, reduction):
    """``reduction`` as one of the names or a positive, finite, normal float."""
    if isinstance(reduction, str) and reduction in _REDUCTIONS:
        return reduction
    number = _as_float(reduction)
    # A subnormal divisor would overflow the loss; 1e300 would flush it to 0: both are typos.
    if number is not None and sys.float_info.min <= number <= sys.float_info.max:
        return number
    msg = (f"{func}: reduction = {reduction!r}; expected 'none', 'mean', 'sum' or a positive, "
           "finite, normal number (the count to divide the sum by)")
    raise ValueError(msg)


def check_ignore_index(func, ignore_index, kind):
    """Check that ``ignore_index`` is None or an integer, and is not given with probabilities."""
    if ignore_index is None:
        return
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        msg = f"{func}: ignore_index = {ignore_index!r}; expected an integer or None"
        raise TypeError(msg)
    if kind == "probability":
        msg = (
            f"{func}: ignore_index = {ignore_index} applies to class-index targets only; "
            "target holds probabilities (leave ignore_index=None)"
        )
        raise ValueError(msg)


def check_out(func, out, logits, xp, **inputs):
    """Check that ``out`` fits the gradient and is the logits or shares no memory with the inputs.

    A buffer overlapping another input (``inputs``, by name), or overlapping
    the logits without being exactly them, would be written while the pass
    still reads it: the result would be wrong without a word.
    """
    shape, dtype = logits.shape, result_dtype(logits.dtype, xp)
    if not isinstance(out, type(logits)):
        msg = (f"{func}: out is {type(out).__module__}.{type(out).__name__}; expected a "
               f"{type(logits).__module__}.{type(logits).__name__} to write the gradient into")
        raise TypeError(msg)
    if not getattr(out.flags, "writeable", True):
        msg = f"{func}: out is read-only; expected a writeable array for the gradient"
        raise ValueError(msg)
    if out.shape != shape:
        msg = f"{func}: out has shape {out.shape}; expected the shape of logits {shape}"
        raise ValueError(msg)
    if out.dtype != dtype:
        msg = f"{func}: out has dtype {out.dtype}; expected {dtype}, the dtype of the gradient"
        raise TypeError(msg)
    for name, array in inputs.items():
        if array is not None and xp.may_share_memory(out, array):
            msg = f"{func}: out shares memory with {name}; expected a separate array"
            raise ValueError(msg)
    if xp.may_share_memory(out, logits) and not is_same_view(out, logits):
        msg = (f"{func}: out overlaps logits without being logits itself; expected out=logits "
               "(to overwrite them) or a separate array")
        raise ValueError(msg)


def is_same_view(a, b):
    """Whether two arrays of one shape and dtype are the same elements in the same order."""
    return a.strides == b.strides and address(a) == address(b)
