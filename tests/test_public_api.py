"""The public names and signatures, and an import that leaves CuPy and Dask alone."""

import inspect
import os
import subprocess
import sys

import pytest

import xentlib

OPTIONS = ["axis", "weight", "ignore_index", "label_smoothing", "z_loss", "reduction"]
# The large-vocabulary functions take class indices only, with the classes on the last axis.
INDEX_OPTIONS = OPTIONS[1:]

SIGNATURES = {
    "softmax": ["x", "axis"],
    "log_softmax": ["x", "axis"],
    "logsumexp": ["x", "axis", "keepdims"],
    "one_hot": ["labels", "num_classes", "dtype"],
    "cross_entropy": ["logits", "target", *OPTIONS],
    "cross_entropy_grad": ["logits", "target", *OPTIONS],
    "cross_entropy_with_grad": ["logits", "target", "out", *OPTIONS],
    "linear_cross_entropy": [
        "hidden", "classifier", "target", "bias", "chunk_size", *INDEX_OPTIONS
    ],
    "linear_cross_entropy_with_grad": [
        "hidden", "classifier", "target", "bias", "chunk_size", *INDEX_OPTIONS
    ],
    "numerical_gradient": ["f", "x", "eps"],
    "get_namespace": ["arrays"],
    "default_namespace": [],
    "to_numpy": ["x"],
}


def test_all_lists_the_design():
    assert sorted(xentlib.__all__) == sorted([*SIGNATURES, "naive"])


@pytest.mark.parametrize("name", SIGNATURES)
def test_signature(name):
    parameters = inspect.signature(getattr(xentlib, name)).parameters
    assert list(parameters) == SIGNATURES[name]


@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad"])
def test_options_are_keyword_only_with_torch_like_defaults(name):
    parameters = inspect.signature(getattr(xentlib, name)).parameters
    assert all(parameters[o].kind is inspect.Parameter.KEYWORD_ONLY for o in OPTIONS)
    defaults = {o: parameters[o].default for o in OPTIONS}
    assert defaults == dict(
        axis=-1,
        weight=None,
        ignore_index=None,
        label_smoothing=0.0,
        z_loss=0.0,
        reduction="mean",
    )


def test_import_does_not_import_cupy(tmp_path):
    # In a fresh interpreter (this process's conftest may already have imported CuPy), with
    # a stand-in cupy first on the path that fails loudly if imported, so that the test
    # can fail on a machine without CuPy too.
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text('raise ImportError("xentlib imported cupy")\n')
    code = "import sys, xentlib, xentlib.naive; print('cupy' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["linear_cross_entropy", "linear_cross_entropy_with_grad"])
def test_linear_arrays_are_positional_and_options_keyword_only(name):
    parameters = list(inspect.signature(getattr(xentlib, name)).parameters.values())
    assert [p.kind for p in parameters[:3]] == [inspect.Parameter.POSITIONAL_ONLY] * 3
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[3:])
    defaults = {p.name: p.default for p in parameters[3:]}
    assert defaults == dict(bias=None, chunk_size=None, weight=None, ignore_index=None,
                            label_smoothing=0.0, z_loss=0.0, reduction="mean")


def test_sharded_signature():
    sharded = pytest.importorskip("xentlib.sharded")
    parameters = inspect.signature(sharded.cross_entropy).parameters
    assert list(parameters) == ["logits", "target", *INDEX_OPTIONS]
    assert sharded.__all__ == ["cross_entropy"]


def test_import_does_not_import_dask():
    # xentlib.sharded is reachable as an attribute, and only that imports Dask.
    code = (
        "import sys, xentlib; before = 'dask' in sys.modules; "
        "f = xentlib.sharded.cross_entropy; print(before, 'dask' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False True"
