"""The wheel `make book` builds installs and imports in a fresh venv, away from the checkout."""

import json
import math
import subprocess
from pathlib import Path

import pytest

import xentlib

pytestmark = pytest.mark.site

PROBE = """
import importlib.metadata, json, xentlib
print(json.dumps({"file": xentlib.__file__, "version": xentlib.__version__,
                  "metadata": importlib.metadata.version("xentlib"),
                  "license": importlib.metadata.metadata("xentlib")["License-Expression"],
                  "loss": float(xentlib.cross_entropy([[0.0, 0.0]], [1]))}))
"""


def test_wheel_installs_and_imports(notebook_venv, tmp_path):
    result = subprocess.run([str(notebook_venv / "bin" / "python"), "-c", PROBE], cwd=tmp_path,
                            capture_output=True, text=True, check=True)
    found = json.loads(result.stdout)
    assert Path(found["file"]).is_relative_to(notebook_venv), (
        f"imported {found['file']}, not the wheel"
    )
    assert found["version"] == found["metadata"] == xentlib.__version__
    assert found["license"] == "MIT"
    assert math.isclose(found["loss"], math.log(2), rel_tol=1e-15)
