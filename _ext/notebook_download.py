"""Offer every chapter as a Jupyter notebook (.ipynb) on its page.

The chapters are MyST Markdown notebooks. Jupyter Book 1 offers an ``.ipynb``
download for them only when launch buttons (Binder, Colab, ...) are set up,
which this offline book has none of. This extension writes each chapter's
executed notebook, with its outputs, to ``<outdir>/notebooks/<chapter>.ipynb``
and puts a link to it first in the page's download menu.

The download runs in a plain Jupyter kernel with ``xentlib`` and the
chapter's own imports: values pasted with ``{glue:text}`` become text, and a
first cell says what to install.
"""

import ast
import json
import re
import sys
from pathlib import Path

import nbformat
from myst_nb.core.variables import format_plain_text
from myst_nb.sphinx_ext import OUTPUT_FOLDER

NOTEBOOK_DIR = "notebooks"

# Import names whose distribution is called something else.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "dask": "dask[array]"}
# The book's own machinery: present when the book is built, optional outside it.
NOT_NEEDED = {"xentlib", "myst_nb"}

GLUE_ROLE = re.compile(r"\{glue:text\}`([^`:]+)(?::([^`]*))?`")


def is_myst_notebook(path):
    """Whether a source file is a jupytext MyST notebook (its header says so)."""
    path = Path(path)
    return path.suffix == ".md" and path.read_text(encoding="utf-8").startswith("---\njupytext:")


def chapter_requirements(notebook):
    """The distributions a chapter imports, besides xentlib and the standard library."""
    names = set()
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    names -= NOT_NEEDED | set(sys.stdlib_module_names)
    return sorted(DISTRIBUTIONS.get(name, name) for name in names)


def paste_glue(markdown, values):
    """Replace ``{glue:text}`key:format``` roles by the glued values, formatted."""

    def value(match):
        key, spec = match.group(1), match.group(2) or ""
        text = values[key]["data"]["text/plain"]
        try:
            return format_plain_text(text, spec)
        except ValueError:  # myst-nb warns about the same value, which fails the -W build
            return text

    return GLUE_ROLE.sub(value, markdown)


def install_note(notebook):
    import xentlib  # the book's package, for the wheel's name

    requirements = " ".join(
        f'"{name}"' if "[" in name else name for name in chapter_requirements(notebook)
    )
    return nbformat.v4.new_markdown_cell(
        "This notebook is a chapter of the book *Why is cross-entropy written like that?*, "
        "executed when the site was built: the outputs are that run's.\n\n"
        "To run it yourself, download the `xentlib` wheel from the book's first page "
        "(\"How to run it\") and install it beside the chapter's other imports:\n\n"
        f"```bash\npip install xentlib-{xentlib.__version__}-py3-none-any.whl "
        f"{requirements} ipykernel\n```"
    )


def export_notebook(app, pagename, target):
    """Write the executed notebook of ``pagename``, ready for a plain kernel, to ``target``."""
    executed = Path(app.outdir).parent / OUTPUT_FOLDER / f"{pagename}.ipynb"
    notebook = nbformat.read(executed, as_version=4)
    glue_file = executed.with_suffix(".glue.json")
    values = json.loads(glue_file.read_text(encoding="utf-8")) if glue_file.exists() else {}
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = paste_glue(cell.source, values)
    notebook.cells.insert(0, install_note(notebook))
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)


def _add_notebook_download(app, pagename, templatename, context, doctree):
    if doctree is None or pagename not in app.env.all_docs:
        return
    if not is_myst_notebook(app.env.doc2path(pagename)):
        return
    name = f"{Path(pagename).name}.ipynb"
    export_notebook(app, pagename, Path(app.outdir) / NOTEBOOK_DIR / name)

    link = {
        "type": "link",
        "url": context["pathto"](f"{NOTEBOOK_DIR}/{name}", 1),
        "text": ".ipynb",
        "icon": "fas fa-code",
        "tooltip": "Download this chapter as a Jupyter notebook, with its outputs",
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
