"""Every path under an output root, one function each: the README's outputs table in code.

Nothing else in the project spells an output file's name. ``Outputs(root, phase)`` answers for
one study: ``phase`` is the folder that collects its runs' metrics, samples, notebooks and
analysis (``phase1_2_vae_test`` for Phase 1.2). ``EmbeddingFiles`` names the files of a latent
export, wherever it lies.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ANALYSIS_NOTEBOOK = "analysis"  # runs/analysis.ipynb beside the runs' NAME.ipynb
PROBE_NOTEBOOK = "diffusion_probe"


@dataclass(frozen=True)
class Outputs:
    root: Path
    phase: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ---- one training run ------------------------------------------------------------------
    @property
    def experiments(self) -> Path:
        return self.root / "experiments"

    def run_dir(self, name: str) -> Path:
        return self.experiments / name

    def metrics_csv(self, name: str) -> Path:
        return self.run_dir(name) / f"{name}_metrics.csv"

    def last_checkpoint(self, name: str) -> Path:
        return self.run_dir(name) / "last.pt"

    def best_checkpoint(self, name: str) -> Path:
        return run_best_checkpoint(self.run_dir(name))

    def run_config(self, name: str) -> Path:
        return self.run_dir(name) / "config.yaml"

    def provenance(self, name: str) -> Path:
        """What produced run NAME: commit, versions, device, precision, one entry per (re)start."""
        return self.run_dir(name) / "provenance.json"

    def split_csv(self, name: str) -> Path:
        """Which layouts run NAME trained, validated and is tested on
        (layout_path, scene_id, type, split, group, hash)."""
        return self.run_dir(name) / "split.csv"

    def split_summary(self, name: str) -> Path:
        """Run NAME's split in figures: layouts and groups per side, identical layouts, duplicate rate."""
        return self.run_dir(name) / "split_summary.json"

    def run_lock(self, name: str) -> Path:
        """Beside the run folder, not in it: held before the folder exists."""
        return self.experiments / f".{name}.lock"

    # ---- the phase folder ------------------------------------------------------------------
    @property
    def phase_dir(self) -> Path:
        return self.root / self.phase

    def phase_metrics_csv(self, name: str) -> Path:
        return self.phase_dir / f"{name}_metrics.csv"

    @property
    def samples_dir(self) -> Path:
        return self.phase_dir / "samples"

    def sample_grid(self, name: str, epoch: int) -> Path:
        return self.samples_dir / f"{name}_epoch_{epoch:03d}_comparison.png"

    def sample_grids(self, name: str) -> list[Path]:
        """The sample grids a run wrote so far, oldest epoch first."""
        return sorted(self.samples_dir.glob(f"{name}_epoch_*_comparison.png"))

    def executed_notebook(self, name: str) -> Path:
        """The executed training notebook of run NAME (or ``ANALYSIS_NOTEBOOK``)."""
        return self.phase_dir / "runs" / f"{name}.ipynb"

    @property
    def analysis_notebook(self) -> Path:
        return self.executed_notebook(ANALYSIS_NOTEBOOK)

    @property
    def latent_metrics(self) -> Path:
        return self.phase_dir / "analysis" / "latent_metrics.json"

    @property
    def per_image(self) -> Path:
        return self.phase_dir / "analysis" / "per_image.csv"

    @property
    def kl_sweep(self) -> Path:
        """The KL-weight curve's data and its recommendation, apart from the decision."""
        return self.phase_dir / "analysis" / "kl_sweep.json"

    @property
    def decision(self) -> Path:
        return self.phase_dir / "decision.json"

    @property
    def next_phase_config(self) -> Path:
        return self.phase_dir / "phase1_3_base.yaml"

    @property
    def layout_embeddings(self) -> EmbeddingFiles:
        """Where ``export-latents --study`` writes the chosen run's latents for Phase 1.3."""
        return EmbeddingFiles(self.phase_dir / "layout_embeddings")

    # ---- the diffusion probe ------------------------------------------------------------------
    @property
    def probe_dir(self) -> Path:
        return self.phase_dir / "probe"

    @property
    def probe_metrics(self) -> Path:
        return self.probe_dir / "probe_metrics.json"

    def probe_grid(self, name: str) -> Path:
        return self.probe_dir / f"{name}_generated.png"

    @property
    def probe_real_grid(self) -> Path:
        """Real validation layouts in the same grid, to compare the generated ones with."""
        return self.probe_dir / "real_layouts.png"

    def probe_seed_dir(self, name: str, seed: int) -> Path:
        return self.probe_dir / name / f"seed_{seed}"

    def probe_checkpoint(self, name: str, seed: int) -> Path:
        return self.probe_seed_dir(name, seed) / "denoiser.pt"

    def probe_generated(self, name: str, seed: int, steps: int) -> Path:
        """The standardised latents the denoiser generated after ``steps`` (decoded again when scored)."""
        return self.probe_seed_dir(name, seed) / f"generated_{steps}.pt"

    def probe_seed_result(self, name: str, seed: int, steps: int) -> Path:
        return self.probe_seed_dir(name, seed) / f"result_{steps}.json"

    @property
    def probe_notebook(self) -> Path:
        return self.executed_notebook(PROBE_NOTEBOOK)

    # ---- shared by every run -----------------------------------------------------------------
    def synthetic_set(self, samples: int, resolution: int, seed: int) -> Path:
        return self.root / "synthetic" / f"n{samples}_r{resolution}_s{seed}"

    @property
    def cache_root(self) -> Path:
        return self.root / "cache"

    @property
    def scorer_cache(self) -> Path:
        return self.cache_root / "scorer"

    # ---- what a killed run leaves -------------------------------------------------------------
    def own_files(self, name: str) -> list[tuple[Path, str]]:
        """(folder, regular expression of file names): the files only run NAME writes, so that a
        restarted run may remove the temporaries a kill left of them, and no other run's."""
        escaped = re.escape(name)
        return [
            (self.run_dir(name), ".+"),
            (self.phase_dir, rf"{escaped}_metrics\.csv"),
            (self.samples_dir, rf"{escaped}_epoch_\d+_comparison\.png"),
        ]

    # ---- showing paths ---------------------------------------------------------------------------
    def shown(self, path: str | Path) -> str:
        """A path as logs and the report show it: relative to the output root (``OUTPUT_ROOT/...``)
        when it lies under it, so that a published report names no folder of the machine that
        built it; else only its last three parts (``shown_path``)."""
        return shown_path(path, self.root)


# ---- a run folder and a latent export, wherever they lie ---------------------------------------------


def run_best_checkpoint(run_dir: str | Path) -> Path:
    """The early-stopping best of a run folder, wherever it was copied."""
    return Path(run_dir) / "best.pt"


LAYOUT_EMBEDDING_SUFFIX = "_layout_emb.pt"  # the original pipeline's stage 6 names its latents so
LAYOUT_EMBEDDING_STD_SUFFIX = "_layout_emb_std.pt"


@dataclass(frozen=True)
class EmbeddingFiles:
    """An export of every layout's latent (``python -m imginav_core export-latents --out FOLDER``);
    book/using/phase1_3.md describes each file."""

    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def record(self) -> Path:
        return self.folder / "export.json"

    @property
    def manifest(self) -> Path:
        return self.folder / "layout_embeddings.csv"

    @property
    def stats(self) -> Path:
        return self.folder / "latent_stats.json"

    @property
    def lock(self) -> Path:
        """Held while a process exports into the folder."""
        return self.folder / ".export.lock"

    def mean(self, layout: str | Path) -> Path:
        """The posterior mean of the layout at ``layout``, a path relative to the manifest's folder:
        the same path below the export's folder, its suffix replaced."""
        return self.folder / (str(Path(layout).with_suffix("")) + LAYOUT_EMBEDDING_SUFFIX)

    def std(self, layout: str | Path) -> Path:
        return self.folder / (str(Path(layout).with_suffix("")) + LAYOUT_EMBEDDING_STD_SUFFIX)

    # What only an export writes, so that a restarted one may remove the temporaries a kill left.
    OWN_FILES = r".+_layout_emb(_std)?\.pt|export\.json|layout_embeddings\.csv|latent_stats\.json"


def relative_path(path: str | Path, folder: str | Path) -> str:
    """``path`` as a file in ``folder`` names it: relative to ``folder``, with forward slashes, so
    that the folder and what it names read wherever they are copied together."""
    return Path(os.path.relpath(path, folder)).as_posix()


def shown_path(path: str | Path, root: str | Path | None = None) -> str:
    """``OUTPUT_ROOT/rest`` for a path under ``root``; else its last three parts,
    ``.../grandparent/parent/name`` (a relative path as given)."""
    path = Path(path)
    if root is not None:
        try:
            return str(Path("OUTPUT_ROOT") / path.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    if not path.is_absolute():
        return str(path)
    return str(Path("...", *path.parts[-3:]))
