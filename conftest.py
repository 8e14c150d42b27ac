"""Let nbval collect the book's chapters, which are MyST Markdown, not .ipynb.

nbval only collects ``.ipynb`` files. For each ``book/*.md`` that carries a
jupytext header we hand nbval the notebook that ``jupytext.read`` makes of it,
so ``pytest --nbval --nbval-current-env book/`` runs every cell of every
chapter, with no .ipynb ever written beside the sources (that breaks the
book's -W build).
"""

from pathlib import Path
from unittest import mock

import jupytext
import nbval.plugin

from _ext.notebook_download import is_myst_notebook

BOOK = Path(__file__).parent / "book"


class MystNotebook(nbval.plugin.IPyNbFile):
    """nbval's notebook collector, reading the notebook through jupytext."""

    def collect(self):
        # nbval reads the file with nbformat.read; only during this collection
        # does that read go through jupytext instead.
        def read(path, as_version):
            return jupytext.read(path, as_version=as_version)

        with mock.patch.object(nbval.plugin.nbformat, "read", read):
            yield from super().collect()


def pytest_collect_file(file_path, parent):
    option = parent.config.option
    if (
        (option.nbval or option.nbval_lax)
        and file_path.parent == BOOK
        and is_myst_notebook(file_path)
    ):
        return MystNotebook.from_parent(parent, path=file_path)
    return None
