"""Sphinx extension of the report: stop early, with the fix, when its inputs are not staged."""

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


def setup(app):
    app.connect("builder-inited", _check_inputs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
