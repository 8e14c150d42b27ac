"""The package's layout: one home per idea, imports that run one way, every function explained."""

import ast
import importlib
import inspect
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parent.parent / "xentlib"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")

# Who may import whom inside xentlib (ARCHITECTURE.md draws the same picture): the maths
# modules sit on the private ones, never on each other's internals.
ALLOWED = {
    "_namespace": set(),
    "_checks": {"_namespace"},
    "_blocked": set(),
    "_typing": set(),
    "_lse": {"_namespace"},
    "_targets": {"_namespace"},
    "_pass": {"_blocked", "_lse", "_namespace", "_targets"},
    "softmax": {"_checks", "_lse", "_namespace", "_typing"},
    "loss": {"_checks", "_namespace", "_pass", "_targets", "_typing"},
    "linear": {"_blocked", "_checks", "_lse", "_namespace", "_targets", "_typing"},
    "sharded": {"_blocked", "_checks", "_lse", "_namespace", "_targets", "_typing"},
    "gradcheck": {"_checks", "_namespace", "_typing"},
    "naive": {"_namespace", "_typing"},
}


def _name(path):
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _tree(path):
    return ast.parse(path.read_text(), filename=str(path))


def _package_imports(path):
    """The xentlib modules one file imports, by their name inside the package."""
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_run_one_way(module):
    assert _package_imports(PACKAGE / f"{module}.py") <= ALLOWED[module]


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_every_module_class_and_function_has_a_docstring(path):
    tree = _tree(path)
    missing = [] if ast.get_docstring(tree) else ["<module>"]
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if not ast.get_docstring(node) and not node.name.startswith("__"):
                missing.append(f"{node.name} (line {node.lineno})")
    assert not missing, f"{_name(path)}: no docstring on {', '.join(missing)}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_all_lists_exactly_the_public_names(path):
    module = importlib.import_module(_name(path))
    if not hasattr(module, "__all__"):
        pytest.skip("no __all__: a package __init__ or a script")
    defined = {
        node.name for node in _tree(path).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
    }
    unlisted = defined - set(module.__all__)
    assert not unlisted, f"public but not in __all__: {unlisted}"
    assert all(hasattr(module, name) for name in module.__all__)


def _public_functions():
    import xentlib
    import xentlib.naive
    import xentlib.sharded

    for module, names in ((xentlib, xentlib.__all__), (xentlib.naive, xentlib.naive.__all__),
                          (xentlib.sharded, xentlib.sharded.__all__)):
        for name in names:
            value = getattr(module, name)
            if inspect.isfunction(value):
                yield f"{module.__name__}.{name}", value


@pytest.mark.parametrize(("name", "function"), list(_public_functions()),
                         ids=[name for name, _ in _public_functions()])
def test_public_functions_are_annotated_in_full(name, function):
    signature = inspect.signature(function)
    bare = [p.name for p in signature.parameters.values() if p.annotation is p.empty]
    assert not bare, f"{name}: no annotation on {bare}"
    assert signature.return_annotation is not signature.empty, f"{name}: no return annotation"


def test_user_code_gets_types(tmp_path):
    # py.typed ships with the package, so mypy reads the annotations instead of
    # reporting import-untyped and typing every result as Any.
    mypy = pytest.importorskip("mypy.api", reason="mypy is not installed")
    user = tmp_path / "user.py"
    user.write_text(
        "import numpy as np\nimport xentlib\n"
        "loss = xentlib.cross_entropy(np.zeros((2, 3)), np.array([0, 1]))\n"
        "reveal_type(loss)\n"
        "xentlib.cross_entropy(np.zeros((2, 3)), [0, 1], reduction='average')\n"
    )
    out, _, status = mypy.run([str(user), "--cache-dir", str(tmp_path / "cache"),
                               "--no-error-summary"])
    assert "import-untyped" not in out
    assert 'Revealed type is "numpy.ndarray' in out, out
    assert "reduction" in out and status == 1, out  # a typo in a literal option is caught
