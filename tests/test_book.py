"""The chapters' own promises, read from their sources: they run outside the book,
and the core chapters end with exercises whose solutions check themselves."""

import re
from pathlib import Path

import jupytext
import pytest

from _ext.notebook_download import is_myst_notebook

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(path for path in BOOK.glob("*.md") if is_myst_notebook(path))
WITH_EXERCISES = ["formula", "gather", "overflow", "gradient", "practice"]
FOLDED = {"hide-input", "hide-cell"}


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def tags(cell):
    return set(cell.metadata.get("tags", []))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_runs_without_myst_nb(path):
    # The downloaded notebook runs in a plain kernel: only a removed first cell
    # may import myst_nb, and it must fall back to a no-op glue.
    first, *rest = code_cells(jupytext.read(path))
    assert "remove-cell" in tags(first), f"{path.name}: first code cell is not removed"
    assert re.search(r"except ImportError:.*\n\s+def glue\(", first.source, re.DOTALL), (
        f"{path.name}: first code cell has no fallback glue"
    )
    importing = [cell.source.splitlines()[0] for cell in rest if "myst_nb" in cell.source]
    assert not importing, f"{path.name}: another cell imports myst_nb: {importing[0]!r}"


def exercises(notebook):
    """``(title, solution cells)`` of each ``### Exercise`` after ``## Exercises``."""
    found, inside = [], False
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("## "):
                    inside = line.strip() == "## Exercises"
                elif inside and line.startswith("### Exercise"):
                    found.append((line[4:].strip(), []))
        elif inside and found:
            found[-1][1].append(cell)
    return found


@pytest.mark.parametrize("name", WITH_EXERCISES)
def test_exercises_have_checked_solutions(name):
    found = exercises(jupytext.read(BOOK / f"{name}.md"))
    assert 3 <= len(found) <= 5, f"{name}: {len(found)} exercises, expected 3 to 5"
    for title, cells in found:
        solutions = [cell for cell in cells if FOLDED & tags(cell)]
        assert solutions, f"{name}, {title}: no folded solution cell"
        assert any(re.search(r"^\s*assert\b|assert_\w+\(", cell.source, re.MULTILINE)
                   for cell in solutions), f"{name}, {title}: the solution asserts nothing"
