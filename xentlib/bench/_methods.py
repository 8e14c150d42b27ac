"""What the benchmark times: the methods, their arrays, and torch's adapter.

A method is a `_Method`: a call to time, an untimed ``prepare`` that runs
before each call, and the names that its ratios divide by. Every table here
builds its methods over arrays made once, so that a timed call does nothing
but the computation.
"""

import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from .. import _blocked, cross_entropy, cross_entropy_with_grad, naive

OPTIONS = ("probabilities", "label smoothing", "class weights", "ignore_index", "z-loss")

# The methods of the sweep, in the order its table and figure show them.
SWEPT = ("xentlib loss", "torch", "numpy stable", "xentlib fused", "torch + backward",
         "numpy stable + grad")


class _Method(NamedTuple):
    """One timed computation.

    ``prepare`` runs untimed before each call; ``baseline`` names the method
    that its ratio divides by (by default the baseline of its ``kind``);
    ``option`` is the xentlib option it measures, if any.
    """

    kind: str
    call: Callable[[], object]
    prepare: Callable[[], object] | None = None
    baseline: str | None = None
    option: str | None = None


def _import_torch() -> Any:
    """The torch module, or None where it is not installed."""
    # Idle OpenMP threads that spin (libgomp's default) steal the cores from whichever method
    # runs next, xentlib's threads or torch's own; sleeping threads keep the comparison fair.
    # This only takes effect if torch is not imported yet.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return None
    return torch


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Standard normal numbers of ``shape``, drawn in ``dtype`` itself (float32 or float64)."""
    out = np.empty(shape, dtype=dtype)
    rng.standard_normal(dtype=out.dtype.type, out=out)
    return out


def _logits(rng: np.random.Generator, rows: int, classes: int, dtype: str) -> np.ndarray:
    """Standard normal ``(rows, classes)`` logits of ``dtype``."""
    return _normal(rng, (rows, classes), dtype)


def _numpy_stable_loss(z: np.ndarray, y: np.ndarray) -> np.floating:
    """The whole-array loss a careful NumPy user writes: shift, logsumexp, gather."""
    shifted = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1))
    return np.mean(lse - shifted[np.arange(len(y)), y])


def _numpy_stable_loss_and_grad(z: np.ndarray, y: np.ndarray) -> tuple[np.floating, np.ndarray]:
    """The same loss and its gradient, softmax minus one-hot over ``N``, in whole arrays."""
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, y])
    grad = e / total
    grad[rows, y] -= 1
    grad /= len(y)
    return loss, grad


def _exp_floor(z: np.ndarray) -> None:
    """One exp of every logit into per-thread scratch, in blocks, on xentlib's threads."""
    rows = _blocked.rows_per_block(z.shape[1] * z.itemsize)
    blocks = [slice(i, i + rows) for i in range(0, z.shape[0], rows)]

    def work(block: slice, scratch: np.ndarray) -> None:
        """Exponentiate the rows of ``block`` into this thread's scratch."""
        part = z[block]
        np.exp(part, out=scratch[: part.shape[0]])

    _blocked.for_each_block(blocks, work, lambda: np.empty((rows, z.shape[1]), z.dtype))


class _TorchLogits:
    """The logits as torch tensors it allocated itself, made once for all of torch's methods."""

    def __init__(self, torch: Any, z: np.ndarray) -> None:
        """Copy ``z`` into torch's own memory, once plain and once as a leaf that takes grad."""
        self.torch = torch
        # from_numpy memory is only 16-byte aligned, which slows some of torch's kernels.
        self.z = torch.from_numpy(z).clone()
        self.leaf = self.z.clone().requires_grad_()

    def methods(self, target: np.ndarray, options: Mapping[str, Any]) -> tuple[_Method, _Method]:
        """torch's loss, and loss with backward, against ``target`` with ``options``."""
        functional, leaf = self.torch.nn.functional, self.leaf
        target = self.torch.from_numpy(target).clone()
        options = {name: self.torch.from_numpy(v).clone() if isinstance(v, np.ndarray) else v
                   for name, v in options.items()}

        def forward_backward() -> None:
            """The loss, then its gradient into a fresh ``leaf.grad``."""
            leaf.grad = None
            functional.cross_entropy(leaf, target, **options).backward()

        return (_Method("loss", lambda: functional.cross_entropy(self.z, target, **options)),
                _Method("loss+grad", forward_backward))


def _core_methods(z: np.ndarray, y: np.ndarray,
                  torch_logits: _TorchLogits | None) -> dict[str, _Method]:
    """The methods of `SWEPT`: xentlib, whole-array NumPy and torch, loss and loss + gradient."""
    methods = {
        "xentlib loss": _Method("loss", lambda: cross_entropy(z, y)),
        "xentlib fused": _Method("loss+grad", lambda: cross_entropy_with_grad(z, y)),
        "numpy stable": _Method("loss", lambda: _numpy_stable_loss(z, y)),
        "numpy stable + grad": _Method("loss+grad", lambda: _numpy_stable_loss_and_grad(z, y)),
    }
    if torch_logits is not None:
        methods["torch"], methods["torch + backward"] = torch_logits.methods(y, {})
    return methods


def _methods(z: np.ndarray, y: np.ndarray,
             torch_logits: _TorchLogits | None) -> dict[str, _Method]:
    """``{name: _Method}`` for the plain problem: class indices, mean, no option."""
    import scipy.special

    rows = np.arange(len(y))
    onehot = np.zeros(z.shape, z.dtype)
    onehot[rows, y] = 1
    work = np.empty_like(z)
    return _core_methods(z, y, torch_logits) | {
        "xentlib fused in-place": _Method(
            "loss+grad", lambda: cross_entropy_with_grad(work, y, out=work),
            lambda: np.copyto(work, z)),
        "naive gather": _Method("loss", lambda: naive.cross_entropy_gather(naive.softmax(z), y)),
        "naive one-hot": _Method(
            "loss", lambda: naive.cross_entropy_onehot(naive.softmax(z), onehot)),
        "scipy logsumexp": _Method(
            "loss", lambda: np.mean(scipy.special.logsumexp(z, axis=1) - z[rows, y])),
        "exp floor": _Method("floor", lambda: _exp_floor(z)),
    }


def _option_arguments(z: np.ndarray, y: np.ndarray,
                      rng: np.random.Generator) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """``{option: (target, keyword arguments)}`` for each of `OPTIONS`, arrays in ``z.dtype``."""
    probabilities = rng.random(z.shape, dtype=np.float64).astype(z.dtype)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    some_ignored = y.copy()
    some_ignored[::10] = -100
    return {
        "probabilities": (probabilities, {}),
        "label smoothing": (y, dict(label_smoothing=0.1)),
        "class weights": (y, dict(weight=rng.uniform(0.5, 2.0, z.shape[1:]).astype(z.dtype))),
        "ignore_index": (some_ignored, dict(ignore_index=-100)),
        "z-loss": (y, dict(z_loss=1e-4)),
    }


def _option_methods(z: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                    torch_logits: _TorchLogits | None) -> dict[str, _Method]:
    """Each of `OPTIONS` with xentlib's loss and in-place gradient, and torch's where it has it.

    Each ratio divides by the same library's plain call.
    """
    arguments = _option_arguments(z, y, rng)
    work = np.empty_like(z)
    methods = {}
    for option in OPTIONS:
        target, kwargs = arguments[option]
        methods[f"xentlib loss, {option}"] = _Method(
            "loss", partial(cross_entropy, z, target, **kwargs),
            baseline="xentlib loss", option=option)
        methods[f"xentlib in-place, {option}"] = _Method(
            "loss+grad", partial(cross_entropy_with_grad, work, target, out=work, **kwargs),
            lambda: np.copyto(work, z), baseline="xentlib fused in-place", option=option)
        if torch_logits is not None and option != "z-loss":  # torch has no z-loss
            loss, loss_grad = torch_logits.methods(target, kwargs)
            methods[f"torch, {option}"] = loss._replace(baseline="torch", option=option)
            methods[f"torch + backward, {option}"] = loss_grad._replace(
                baseline="torch + backward", option=option)
    return methods
