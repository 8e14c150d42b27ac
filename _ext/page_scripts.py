"""Give every page each script once."""


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    # sphinx-thebe and sphinx-togglebutton register their inline scripts once
    # with Sphinx and once more through Jupyter Book (filename None, then "");
    # thebe's `const THEBE_JS_URL` declared twice throws a SyntaxError on every page.
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
