"""Sphinx extension of the report: stop early, with the fix, when its inputs are not staged; and
put each script on a page once."""

from pathlib import Path

from sphinx.errors import ExtensionError


def _check_inputs(app) -> None:
    book = Path(app.srcdir)
    needed = [book / "generated" / f"{page}.ipynb" for page in ("diffusion_probe", "analysis")]
    needed.append(book / "_static" / "html-manager" / "embed.js")
    missing = [str(path.relative_to(book)) for path in needed if not path.is_file()]
    if not list((book / "generated" / "arms").glob("*.ipynb")):
        missing.append("generated/arms/*.ipynb (each arm's training chapter)")
    if missing:
        raise ExtensionError(
            "the report's inputs are not staged (" + ", ".join(missing) + "). Run the study first, then "
            "`python -m imginav_core stage --out OUTPUT_ROOT` (bash hpc/analysis.sh does both; or `make book`)"
        )


def _each_script_once(app, pagename, templatename, context, doctree) -> None:
    """sphinx-thebe (a theme default of Jupyter Book) adds its inline configuration script with
    ``app.add_js_file(None, body=...)`` after the builder started: Sphinx keeps it once as a file
    named None and adds it again from its registry as one named "", so every page declared
    ``const THEBE_JS_URL`` twice and the browser logged "Identifier 'THEBE_JS_URL' has already been
    declared". A script with the same file (None and "" alike) and the same attributes is kept once."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = (getattr(script, "filename", script) or "", tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app):
    app.connect("builder-inited", _check_inputs)
    app.connect("html-page-context", _each_script_once)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
