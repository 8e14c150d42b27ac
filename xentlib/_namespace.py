"""Backend dispatch: which array module (NumPy or CuPy) a call runs on.

Every backend branch of the package lives here, so the math modules never ask
"is this CuPy?". CuPy is never imported by this module: an array can only be a
CuPy array if the caller already imported CuPy, so looking in ``sys.modules``
is enough and ``import xentlib`` stays free of it.
"""

import contextlib
import os
import sys
from types import ModuleType
from typing import Any

import numpy as np

# The first three are public (xentlib re-exports them); the rest serve the package.
__all__ = ["get_namespace", "default_namespace", "to_numpy", "address", "errstate",
           "in_row_blocks", "namespace_of"]

_BACKEND_VARIABLE = "XENTLIB_BACKEND"

# Tuples, not ``A | B`` unions: a union is built anew on every call, and these run on every call.
_NUMPY_TYPES = (np.ndarray, np.generic)
_OTHER_ARITHMETIC = (np.ma.MaskedArray, np.matrix)


def _is_cupy_array(x):
    """Whether ``x`` is a CuPy array, without importing CuPy."""
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def _kind(x):
    """The type of ``x`` as an error message names it."""
    return "cupy.ndarray" if _is_cupy_array(x) else f"{type(x).__module__}.{type(x).__name__}"


def _refuse_foreign(func, name, x):
    """Raise for an array of another library, or an ndarray subclass with other arithmetic.

    Converting them silently would lose what they carry (autograd, a device, a
    mask, laziness) or change the arithmetic (``np.matrix`` multiplies rows).
    Plain NumPy and CuPy arrays, scalars and sequences pass.
    """
    if isinstance(x, _NUMPY_TYPES):
        if isinstance(x, _OTHER_ARITHMETIC):
            msg = (f"{func}: {name} is {_kind(x)}; expected a plain numpy.ndarray "
                   f"(np.asarray({name}))")
            raise TypeError(msg)
        return
    protocols = ("__array_namespace__", "__dlpack__", "__array__")
    if not any(hasattr(x, protocol) for protocol in protocols):
        return
    kind = _kind(x)
    if kind.startswith("dask."):
        how = "xentlib.sharded.cross_entropy takes Dask arrays, or call .compute() first"
    elif kind.startswith("torch."):
        how = f"convert it with {name}.detach().cpu().numpy()"
    else:
        how = f"convert it first, e.g. np.asarray({name})"
    msg = f"{func}: {name} is {kind}; expected a NumPy or CuPy array ({how})"
    raise TypeError(msg)


def namespace_of(func, **arrays):
    """Return the array module for the named arrays, or raise naming the two that disagree.

    ``func`` and the keyword names only feed the error messages. ``None``,
    Python scalars and sequences take no side: they are converted by
    whichever module the real arrays choose. Arrays of other libraries are
    refused, never converted behind the caller's back.
    """
    cupy_name = numpy_name = None
    for name, x in arrays.items():
        if x is None:
            continue
        if _is_cupy_array(x):
            cupy_name = cupy_name or name
            continue
        if type(x) is not np.ndarray:  # a plain ndarray, the usual case, needs no more checks
            _refuse_foreign(func, name, x)
        if isinstance(x, _NUMPY_TYPES):
            numpy_name = numpy_name or name
    if cupy_name is None:
        return np
    if numpy_name is not None:
        first, second = sorted((cupy_name, numpy_name), key=list(arrays).index)
        msg = (
            f"{func}: {first} is {_kind(arrays[first])} but {second} is "
            f"{_kind(arrays[second])}; put both on one backend "
            "(xentlib.to_numpy or cupy.asarray)"
        )
        raise TypeError(msg)
    return sys.modules["cupy"]


def get_namespace(*arrays: Any) -> ModuleType:
    """Return the array module (``numpy`` or ``cupy``) that the arrays live in.

    Parameters
    ----------
    *arrays : array_like
        Any mix of arrays, scalars and ``None``. Only NumPy and CuPy arrays
        choose the backend; everything else follows them.

    Returns
    -------
    xp : module
        ``cupy`` if any argument is a CuPy array, otherwise ``numpy``.

    Raises
    ------
    TypeError
        If NumPy and CuPy arrays are mixed: "arrays[i] is cupy.ndarray but
        arrays[j] is numpy.ndarray".

    See Also
    --------
    default_namespace : the module chosen by the ``XENTLIB_BACKEND`` variable.

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> xentlib.get_namespace(np.zeros(3), [1, 2], None).__name__
    'numpy'
    """
    return namespace_of("get_namespace", **{f"arrays[{i}]": x for i, x in enumerate(arrays)})


def _cupy_with_device():
    """Import CuPy and check that it can reach a GPU (importing alone proves nothing)."""
    import cupy

    if not cupy.cuda.is_available():
        msg = f"{_BACKEND_VARIABLE}=cupy but CuPy finds no CUDA device; unset it to run on NumPy"
        raise RuntimeError(msg)
    return cupy


def default_namespace() -> ModuleType:
    """Return the array module that chapters and scripts should create arrays with.

    The choice comes from the environment variable ``XENTLIB_BACKEND``:
    ``numpy`` (the default), ``cupy`` (fail if CuPy or a GPU is missing), or
    ``auto`` (CuPy when it is installed and sees a GPU, NumPy otherwise).
    The same notebook then runs on a laptop and on a GPU machine.

    Returns
    -------
    xp : module
        ``numpy`` or ``cupy``.

    Raises
    ------
    ValueError
        If ``XENTLIB_BACKEND`` holds anything else.
    ModuleNotFoundError, RuntimeError
        If ``XENTLIB_BACKEND=cupy`` and CuPy is not installed or sees no GPU.

    See Also
    --------
    get_namespace : the module that given arrays already live in.

    Examples
    --------
    >>> import xentlib
    >>> xp = xentlib.default_namespace()  # numpy unless XENTLIB_BACKEND=cupy
    >>> float(xentlib.softmax(xp.asarray([0.0, 0.0])).sum())
    1.0
    """
    choice = os.environ.get(_BACKEND_VARIABLE, "numpy").strip().lower()
    if choice == "numpy":
        return np
    if choice == "cupy":
        return _cupy_with_device()
    if choice == "auto":
        try:
            return _cupy_with_device()
        except (ImportError, RuntimeError):
            return np
    msg = f"{_BACKEND_VARIABLE} = {choice!r}; expected 'numpy', 'cupy' or 'auto'"
    raise ValueError(msg)


def to_numpy(x: Any) -> np.ndarray:
    """Return a NumPy copy of a CuPy array, or the NumPy array itself.

    Chapters call it before printing and plotting, so the same cell works on
    both backends.

    Parameters
    ----------
    x : array_like
        A CuPy array (copied to the host), a NumPy array (returned as is) or
        anything ``numpy.asarray`` accepts.

    Returns
    -------
    numpy.ndarray
        ``x`` itself when it is already a NumPy array, else a host copy.

    Examples
    --------
    >>> import numpy as np
    >>> import xentlib
    >>> a = np.arange(3)
    >>> xentlib.to_numpy(a) is a
    True
    """
    if _is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def address(x):
    """Where an array's first element lives, in host or device memory."""
    return x.data.ptr if _is_cupy_array(x) else x.__array_interface__["data"][0]


def in_row_blocks(xp):
    """Whether a pass over the logits goes block by block on threads, or whole.

    NumPy: blocks of rows that stay in cache, on a few threads (`xentlib._blocked`).
    CuPy: the whole array per step, since a GPU wants few large launches and a
    Python loop over blocks would only add them.
    """
    return xp is np


def errstate(xp, **kwargs):
    """NumPy's ``errstate`` for NumPy; CuPy never warns about float errors."""
    return np.errstate(**kwargs) if xp is np else contextlib.nullcontext()
