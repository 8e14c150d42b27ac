"""Fixes to the theme's pages: each script once, every sidebar toggle bound, code that fits."""

from pathlib import Path

STATIC = Path(__file__).parent / "static"

# pydata-sphinx-theme 0.17 renders a second `.primary-toggle` (and
# `.secondary-toggle`) and binds only the first it finds, which sphinx-book-theme
# hides: the visible buttons did nothing, on a phone or a desktop
# (pydata-sphinx-theme#2451, sphinx-book-theme#988). Each other toggle now
# clicks the bound one.
BIND_EVERY_TOGGLE = """
document.addEventListener("DOMContentLoaded", () => {
  for (const kind of ["primary", "secondary"]) {
    const [bound, ...others] = document.querySelectorAll(`.${kind}-toggle`);
    for (const button of others) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        bound.click();
      });
    }
  }
});
"""


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    # sphinx-thebe and sphinx-togglebutton register their inline scripts once
    # with Sphinx and once more through Jupyter Book (filename None, then "");
    # thebe's `const THEBE_JS_URL` declared twice threw a SyntaxError on every page.
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _add_static_folder(app):
    # A folder of our own: a _static/ at the book root would be injected into every page.
    app.config.html_static_path.append(str(STATIC))


def setup(app):
    app.connect("builder-inited", _add_static_folder)
    app.add_css_file("theme-fixes.css")
    app.add_js_file(None, body=BIND_EVERY_TOGGLE)
    app.connect("html-page-context", _drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
