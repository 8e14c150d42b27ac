"""The chapters as readers download them: executed notebooks that run anywhere."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import SITE, chapters

pytestmark = pytest.mark.site


def exported(page):
    return nbformat.read(SITE / "notebooks" / f"{Path(page).name}.ipynb", as_version=4)


@pytest.mark.parametrize("page", chapters())
def test_download_carries_outputs_and_no_glue(page):
    notebook = exported(page)
    assert "pip install xentlib-" in notebook.cells[0].source
    assert any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert "{glue" not in markdown, f"{page}: a glue role was left for Jupyter to show raw"


@pytest.mark.slow
@pytest.mark.parametrize("page", chapters())
def test_download_runs_in_a_plain_kernel(page, notebook_venv, tmp_path, monkeypatch):
    # Only the throwaway venv's kernel, started in an empty folder: no myst_nb, no checkout.
    monkeypatch.setenv("JUPYTER_PATH", str(notebook_venv / "share" / "jupyter"))
    client = NotebookClient(exported(page), kernel_name="throwaway", timeout=600,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
