"""The job scripts that depend on the arms, written from the study file (``python -m imginav_core
job-scripts``): each arm's single-run script ``hpc/papermill_ARM.sh`` (its job name, queue and logs)
and the job array ``hpc/phase1_2_array.sh`` (its default size: the default plan's runs). LSF reads
``#BSUB`` lines before a script runs, so they cannot be computed when it runs; instead they are
generated, and ``job-scripts --check`` (run by a test) fails when they differ from the study file.
A new arm in the study file gets its script by running the command once.

Their resources are those of a training job: the memory benchmark's figure at 512 x 512 cited
beside ``-M`` (``bench --memory``, a test holds ``-M`` at 1.5 x it).
"""

from __future__ import annotations

from pathlib import Path

from ..config import REPO_ROOT, load_config
from .arms import StudyFile, read_study_file

HPC = REPO_ROOT / "hpc"
PREFIX = "phase1_2"  # the study's job names: phase1_2_V1, phase1_2[1-10]
TRAINING_PEAK_GB = 8.67  # bench --memory at 512 x 512: a training process's largest resident memory

RESOURCES = f"""\
# Memory (python -m imginav_core bench --memory at 512 x 512, batch 16, measured on a CPU in float32,
# where the activations are resident; a GPU job holds them on the GPU and its CUDA libraries, 1-2 GB,
# on the host instead): largest process {TRAINING_PEAK_GB} GB resident.
# rusage[mem] and -M are per slot (core): 8 x 2 GB = 16 GB reserved; -M 14GB = 1.5 x that peak,
# rounded up, so it holds where LSF enforces -M per process.
"""
DIRECTIVES = """\
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 8
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=2GB]"
#BSUB -M 14GB
#BSUB -W 04:00
#BSUB -Ne
"""
SOURCE = 'source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"\n'


def _header(study: StudyFile) -> str:
    shown = study.path.relative_to(REPO_ROOT) if study.path.is_relative_to(REPO_ROOT) else study.path
    return (
        "#!/usr/bin/env bash\n"
        f"# Written by `python -m imginav_core job-scripts` from {shown}: change the study file and run it\n"
        "# again, not this script (a test fails when the two differ).\n"
    )


def arm_script(study: StudyFile, label: str) -> str:
    arm = study.arms[label]
    cfg = load_config(arm.config)
    encoder = f"VAE, KL weight {cfg.loss.kld:g}" if cfg.model.variational else "deterministic encoder"
    return (
        _header(study)
        + f"# Phase 1.2, {label} ({encoder}; {arm.config.name}) on {arm.queue}: one run. From the repository root:\n"
        f"#   bsub < hpc/papermill_{label}.sh        (or without LSF: bash hpc/papermill_{label}.sh)\n"
        f"# It trains the first {label} run of the study planned under $IMGINAV_OUTPUTS (else outputs/); with no\n"
        "# plan there it first plans one run per arm (the study file's first seed) and says so.\n"
        + RESOURCES
        + "# -Ne: a mail (to you, or to bsub -u ADDRESS) only if the run fails.\n"
        + f"#BSUB -J {PREFIX}_{label}\n#BSUB -q {arm.queue}\n"
        + DIRECTIVES
        + f"#BSUB -o hpc/logs/{PREFIX}_{label}.%J.out\n#BSUB -e hpc/logs/{PREFIX}_{label}.%J.err\n"
        + SOURCE
        + f"python -m imginav_core job train --arm {label}\n"
    )


def array_script(study: StudyFile) -> str:
    runs = len(study.arms) * len(study.seeds)
    first = next(iter(study.arms.values()))
    return (
        _header(study)
        + "# Phase 1.2's training runs as one LSF job array: element I trains row I of the study planned under\n"
        "# $IMGINAV_OUTPUTS (`python -m imginav_core plan --show`: its config, seed and KL weight, into its own run\n"
        "# folder), through notebooks/train.ipynb. hpc/launch_phase1_2.sh submits it once per arm, on the arm's\n"
        "# queue, with the plan's indices. Submitted by hand it runs the default plan's indices on the queue below:\n"
        "#   bsub < hpc/phase1_2_array.sh                      (the default plan, once planned)\n"
        f'#   bsub -J "{PREFIX}[5]" -q {first.queue} < hpc/phase1_2_array.sh    (one run again: it resumes)\n'
        "#   LSB_JOBINDEX=5 bash hpc/phase1_2_array.sh         (one index, outside LSF)\n"
        "# LSF sets $LSB_JOBINDEX to the element's index and replaces %I in the log names by it.\n"
        + RESOURCES
        + "# -Ne: a mail (to you, or to IMGINAV_MAIL through the launcher) for each element that fails.\n"
        + f'#BSUB -J "{PREFIX}[1-{runs}]"\n#BSUB -q {first.queue}\n'
        + DIRECTIVES
        + f"#BSUB -o hpc/logs/{PREFIX}.%J.%I.out\n#BSUB -e hpc/logs/{PREFIX}.%J.%I.err\n"
        + SOURCE
        + 'python -m imginav_core job train --index "${LSB_JOBINDEX:-0}"\n'
    )


def job_scripts(study: StudyFile | None = None) -> dict[Path, str]:
    """Each generated script's path and text."""
    study = study or read_study_file()
    scripts = {HPC / f"papermill_{label}.sh": arm_script(study, label) for label in study.arms}
    scripts[HPC / f"{PREFIX}_array.sh"] = array_script(study)
    return scripts


def write_job_scripts(study: StudyFile | None = None, *, check: bool = False) -> list[Path]:
    """Write the scripts (executable); with ``check``, write nothing and return those that differ."""
    drift = []
    for path, text in job_scripts(study).items():
        if path.is_file() and path.read_text() == text:
            continue
        drift.append(path)
        if not check:
            path.write_text(text)
            path.chmod(0o755)
    return drift
