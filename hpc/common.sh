# shellcheck shell=bash
# Shared start of the Phase 1.2 LSF jobs; sourced by each script in hpc/ after its #BSUB directives,
# which then runs `python -m imginav_core job ...`: the job's work, in Python, on the study planned
# under $IMGINAV_OUTPUTS (a job takes no setting from its environment: `python -m imginav_core
# settings` lists what it may take). Runs unchanged outside LSF (bash hpc/papermill_V2.sh).
# The conda environment (IMGINAV_CONDA_ENV, default imginav; empty: the python on the PATH) is
# activated from the conda installation at IMGINAV_CONDA_BASE, else that of $CONDA_EXE (set by
# `conda init` shells, and passed on by bsub), else that of the `conda` on the PATH. If none is
# found or the activation fails, the job stops at once with exit status 2, before anything runs.
set -euo pipefail

# Under LSF the job script is a spooled copy, so its own path says nothing: LSF starts the job in
# the submission folder (LS_SUBCWD), which must be the repository root. Outside LSF: this file's folder.
if [[ -n "${LS_SUBCWD:-}" ]]; then
  IMGINAV_ROOT=$LS_SUBCWD
else
  IMGINAV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fi
if [[ ! -f "$IMGINAV_ROOT/hpc/common.sh" ]]; then
  echo "error: $IMGINAV_ROOT is not the ImgiNav repository; submit the job from the repository root (bsub < hpc/...)" >&2
  exit 2
fi
cd "$IMGINAV_ROOT"
export PYTHONUNBUFFERED=1

conda_error() {  # conda_error ENV WHY: stop the job, before anything ran, saying how to fix it
  echo "error: the job runs in the conda environment '$1' (IMGINAV_CONDA_ENV), but $2." >&2
  echo "  Fix: create it once on a login node (conda env create -f environment.yml); point IMGINAV_CONDA_BASE at" \
       "the conda installation (the folder holding etc/profile.d/conda.sh, e.g. \$HOME/miniconda3); or set" \
       "IMGINAV_CONDA_ENV= to run with the python on the PATH ($(command -v python || echo none))." >&2
  exit 2
}

activate_conda() {  # activate_conda ENV, or stop the job (exit 2)
  local env=$1 base="" from=""
  if [[ -n "${IMGINAV_CONDA_BASE:-}" ]]; then
    base=$IMGINAV_CONDA_BASE from="IMGINAV_CONDA_BASE"
  elif [[ -n "${CONDA_EXE:-}" ]]; then  # BASE/bin/conda or BASE/condabin/conda
    base=$(dirname "$(dirname "$CONDA_EXE")") from="CONDA_EXE=$CONDA_EXE"
  elif command -v conda >/dev/null 2>&1; then
    from=$(command -v conda)
    base=$(conda info --base 2>/dev/null) || conda_error "$env" "'$from info --base' failed"
  else
    conda_error "$env" "conda cannot be found: no conda on the PATH, no \$CONDA_EXE, no IMGINAV_CONDA_BASE"
  fi
  if [[ ! -f "$base/etc/profile.d/conda.sh" ]]; then
    conda_error "$env" "$base (from $from) is not a conda installation: it has no etc/profile.d/conda.sh"
  fi
  # conda's activation scripts (and the environment's own activate.d scripts) read variables that
  # may be unset; under set -u they would stop the job halfway through activating.
  set +u
  # shellcheck source=/dev/null
  if ! source "$base/etc/profile.d/conda.sh" || ! conda activate "$env"; then
    set -u
    conda_error "$env" "'conda activate $env' failed (its message is above; conda env list shows the environments of $base)"
  fi
  set -u
  echo "conda environment $env activated from $base (python: $(command -v python))"
}

if [[ -n "${IMGINAV_CONDA_ENV-imginav}" ]]; then
  activate_conda "${IMGINAV_CONDA_ENV-imginav}"
else
  echo "note: no conda environment activated (IMGINAV_CONDA_ENV is empty); using $(command -v python)"
fi

element=""  # LSF sets LSB_JOBINDEX to an array element's index, and to 0 for any other job
if [[ "${LSB_JOBINDEX:-0}" != 0 ]]; then element="[$LSB_JOBINDEX]"; fi
echo "job ${LSB_JOBID:-local}$element ${LSB_JOBNAME:-} on $(hostname) at $(date -Is); repository $IMGINAV_ROOT"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
