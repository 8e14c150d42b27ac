"""The types the public API is annotated with.

CuPy arrays have no type stubs; they share NumPy's interface, so the public
functions are annotated for NumPy and accept and return CuPy arrays alike.
"""

from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = ["ArrayLike", "DTypeLike", "FloatArray", "IntArray", "Loss", "Reduction"]

#: A floating-point result (a CuPy array on CuPy).
FloatArray: TypeAlias = NDArray[np.floating[Any]]
#: Class indices.
IntArray: TypeAlias = NDArray[np.integer[Any]]
#: A loss: a NumPy scalar for a full reduction, an array of item losses for ``"none"``.
Loss: TypeAlias = NDArray[np.floating[Any]] | np.floating[Any]
#: ``"mean"``, ``"sum"``, ``"none"``, or the count to divide the sum by.
Reduction: TypeAlias = Literal["mean", "sum", "none"] | float
