"""The Jupyter Book report: the numbers its introduction quotes, and staging its inputs.

``python -m imginav_core.report stage --output-root OUT`` copies the executed notebooks of a
study into ``book/generated/`` and puts the ipywidgets HTML manager into ``book/_static/`` (from
the npm registry, so the report loads no script from a CDN); then ``jupyter-book build book``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from .runs import RunSummary
from .workflow import REPO_ROOT, analysis_parameters, study_phase

BOOK = REPO_ROOT / "book"
GENERATED = "generated"
# The HTML manager that matches ipywidgets 8 (its __html_manager_version__ is ^1.0).
HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.15"
WIDGETS_DIR = "html-manager"
# Book page name -> executed notebook under OUTPUT_ROOT/<phase>/runs/
PAGES = {"V1_training": "experiment_v1", "V2_training": "experiment_v2", "analysis": None}


def key_numbers(runs: list[RunSummary], latent_metrics: dict, decision: dict, train_images: int) -> dict[str, Any]:
    """The values the book's introduction pastes with ``{glue}``, keyed ``v1_...``/``v2_...``."""
    numbers: dict[str, Any] = {
        "decision_summary": decision["summary"],
        "decision_data_sufficient": "yes" if decision["data_sufficient"] else "no",
        "decision_data_limits": "; ".join(decision["data_limits"]) or "none",
        "decision_flags": "; ".join(decision["flags"]) or "none",
        "train_images": train_images,
        "validation_images": latent_metrics["validation_images"],
        "resolution": runs[0].config.data.resolution,
        "dataset": runs[0].config.data.manifest or "the embedded synthetic layouts",
    }
    for run in runs:
        key = run.label.lower()
        model = latent_metrics["models"][run.name]
        rec = model["reconstruction"]["all"]
        best = run.best_row
        numbers.update({
            f"{key}_val_mse": float(best["val_mse"]),
            f"{key}_epochs": run.epochs_run,
            f"{key}_best_epoch": run.best_epoch,
            f"{key}_minutes": run.minutes,
            f"{key}_psnr": rec["psnr"],
            f"{key}_ssim": rec["ssim"],
            f"{key}_miou": rec["miou"],
            f"{key}_sharpness": rec["sharpness_ratio"],
            f"{key}_purity": rec["palette_purity"],
            f"{key}_path_ratio": model["interpolation"]["linear"]["mean_path_length_ratio"],
            f"{key}_midpoint_purity": model["interpolation"]["linear"]["mean_midpoint_palette_purity"],
            f"{key}_noise_growth": decision["criteria"]["noise_robustness"][
                "vae" if run.config.model.variational else "deterministic"],
        })
        if "posterior" in model:
            post = model["posterior"]
            numbers.update({
                f"{key}_kld_weighted": post["kld_weighted"],
                f"{key}_active_units": f"{post['active_units']} of {post['channels']}",
            })
    return numbers


# ---- staging the book ----------------------------------------------------------------------

def ensure_html_manager(static_dir: Path = BOOK / "_static") -> Path:
    """``_static/html-manager/embed.js`` (and the fonts it loads), taken from the npm registry with
    ``npm pack``; or from ``$IMGINAV_HTML_MANAGER`` (a downloaded package .tgz) on offline nodes."""
    target = static_dir / WIDGETS_DIR
    if (target / "embed.js").is_file():
        return target / "embed.js"
    with tempfile.TemporaryDirectory() as tmp:
        package = os.environ.get("IMGINAV_HTML_MANAGER")
        if not package:
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError(
                    f"the report needs {HTML_MANAGER} for its widgets and npm is not installed: install Node.js "
                    "(conda install nodejs), or run `npm pack " + HTML_MANAGER + "` elsewhere and set "
                    "IMGINAV_HTML_MANAGER to the .tgz"
                )
            done = subprocess.run([npm, "pack", HTML_MANAGER, "--silent"], cwd=tmp, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"npm pack {HTML_MANAGER} failed: {done.stderr.strip()}")
            package = str(Path(tmp) / done.stdout.strip().splitlines()[-1])
        staging = Path(tmp) / "dist"
        with tarfile.open(package) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("package/dist/")
                       and not m.name.endswith((".map", "-amd.js"))]
            for member in members:
                member.name = member.name.removeprefix("package/dist/")
            tar.extractall(staging, members=members, filter="data")
        if not (staging / "embed.js").is_file():
            raise RuntimeError(f"{package}: no dist/embed.js in this package")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(staging, target)
    return target / "embed.js"


def stage(output_root: str | Path, book: Path = BOOK, experiment_v1: str | None = None,
          experiment_v2: str | None = None) -> list[Path]:
    """Copy the executed notebooks into ``book/generated/`` and make sure the widget script is there."""
    params = analysis_parameters(output_root=str(output_root), experiment_v1=experiment_v1,
                                 experiment_v2=experiment_v2)
    runs_dir = Path(params["output_root"]) / study_phase() / "runs"
    sources = {page: runs_dir / f"{params[key] if key else 'analysis'}.ipynb" for page, key in PAGES.items()}
    missing = [str(path) for path in sources.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError("the report is built from executed notebooks that are not there yet: "
                                + ", ".join(missing) + " (run the training and analysis jobs first)")
    target = book / GENERATED
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for page, source in sources.items():
        shutil.copyfile(source, target / f"{page}.ipynb")
        copied.append(target / f"{page}.ipynb")
    ensure_html_manager(book / "_static")
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imginav_core.report")
    sub = parser.add_subparsers(dest="command", required=True)
    p_stage = sub.add_parser("stage", help="copy the executed notebooks into book/ and fetch the widget script")
    p_stage.add_argument("--output-root", default=os.environ.get("IMGINAV_OUTPUTS", "outputs"))
    p_stage.add_argument("--experiment-v1")
    p_stage.add_argument("--experiment-v2")
    args = parser.parse_args(argv)
    try:
        for path in stage(args.output_root, experiment_v1=args.experiment_v1, experiment_v2=args.experiment_v2):
            print(f"staged {path}")
    except (FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
