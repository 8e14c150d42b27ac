"""Offer every chapter as a Jupyter notebook (.ipynb) on its page.

The chapters are MyST Markdown notebooks. Jupyter Book 1 offers an ``.ipynb``
download for them only when launch buttons (Binder, Colab, ...) are set up,
which this offline book has none of. This extension writes each chapter,
converted by jupytext, to ``<outdir>/notebooks/<chapter>.ipynb`` and puts a
link to it first in the page's download menu, so a reader can open the
chapter in Jupyter or on a GPU service.
"""

from pathlib import Path

import jupytext

NOTEBOOK_DIR = "notebooks"


def is_myst_notebook(path):
    """Whether a source file is a jupytext MyST notebook (its header says so)."""
    path = Path(path)
    return path.suffix == ".md" and path.read_text(encoding="utf-8").startswith("---\njupytext:")


def _add_notebook_download(app, pagename, templatename, context, doctree):
    if doctree is None or pagename not in app.env.all_docs:
        return
    source = app.env.doc2path(pagename)
    if not is_myst_notebook(source):
        return
    name = f"{Path(pagename).name}.ipynb"
    target = Path(app.outdir) / NOTEBOOK_DIR / name
    target.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(jupytext.read(source), target, fmt="ipynb")

    link = {
        "type": "link",
        "url": context["pathto"](f"{NOTEBOOK_DIR}/{name}", 1),
        "text": ".ipynb",
        "icon": "fas fa-code",
        "tooltip": "Download this chapter as a Jupyter notebook",
        "label": "download-notebook-button",
    }
    for button in context.get("header_buttons", []):
        if button.get("label") == "download-buttons":
            button["buttons"].insert(0, link)
            return
    msg = f"{pagename}: the theme's download menu is missing; cannot link {name}"
    raise RuntimeError(msg)


def setup(app):
    # After sphinx-book-theme (priority 501) has built the header buttons.
    app.connect("html-page-context", _add_notebook_download, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
