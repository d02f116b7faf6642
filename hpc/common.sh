# shellcheck shell=bash
# Shared body of the Phase 1.2 LSF jobs; sourced by hpc/phase1_2_array.sh, papermill_V1.sh,
# papermill_V2.sh, diffusion_probe.sh, analysis.sh and bench.sh after their #BSUB directives. Runs unchanged outside LSF
# (bash hpc/papermill_V2.sh). The IMGINAV_* variables it reads are listed, with the notebook
# parameter and config key each one sets, by `python -m imginav_core parameters` (and the README).
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

# papermill writes the executed notebook as it goes: run it under a temporary name and rename it
# only when it succeeded, so a failed or killed job never replaces a good executed notebook.
execute_notebook() {  # execute_notebook INPUT OUTPUT [papermill -p arguments...]
  local input=$1 output=$2
  shift 2
  mkdir -p "$(dirname "$output")"
  local partial="${output%.ipynb}.partial.ipynb"
  # papermill logs the cells' output on stderr: keep it in the job's main log (.out) with the rest;
  # without the progress bar, whose redrawn line fills a log file with carriage returns. The kernel
  # gets 300 s to start instead of papermill's 60: on a compute node the first start imports
  # Python, torch and the kernel from a shared file system with a cold cache, which can take longer.
  if papermill "$input" "$partial" --log-output --no-progress-bar --start-timeout 300 \
    --request-save-on-cell-execute "$@" 2>&1; then
    mv -f "$partial" "$output"
    echo "executed notebook: $output"
  else
    local status=$?
    mv -f "$partial" "${output%.ipynb}.failed.ipynb" 2>/dev/null || true
    echo "error: $input failed (exit $status); its partial output is ${output%.ipynb}.failed.ipynb" >&2
    return "$status"
  fi
}

run_training() {  # run_training CONFIG: train one experiment through notebooks/train.ipynb
  # The parameters come from the IMGINAV_* variables; checked before anything is written, so a
  # bad one (or a missing widget script for the report) stops the job here, not hours later.
  local settings
  settings=$(python -m imginav_core check train --from-env -p config "$1")
  train_checked "$settings"
}

run_planned() {  # run_planned INDEX: train run INDEX of the study plan (`python -m imginav_core plan`)
  if [[ -z "${1:-}" || "$1" == 0 ]]; then  # LSF sets LSB_JOBINDEX=0 for a job that is not an array element
    echo "error: no array index: submit the job array (bash hpc/launch_phase1_2.sh, or" \
         "bsub -J \"phase1_2[1-N]\" < hpc/phase1_2_array.sh), or run one index: LSB_JOBINDEX=I bash hpc/phase1_2_array.sh" >&2
    exit 2
  fi
  local settings
  settings=$(python -m imginav_core check run --from-env --index "$1")  # its config, seed, name, KL weight
  train_checked "$settings"
}

train_checked() {  # train_checked SETTINGS: the output of `check train` or `check run`
  eval "$1"  # NAME, RUN_DIR, NOTEBOOK, WIDGET_SCRIPT, PARAMS (papermill's -p arguments)
  echo "experiment $NAME -> $RUN_DIR"
  if [[ "${IMGINAV_GPUS:-1}" -gt 1 ]]; then
    torchrun --standalone --nproc_per_node="$IMGINAV_GPUS" -m imginav_core train "${PARAMS[@]}"
  fi
  # Resubmitting a killed job lands here again: train() resumes from RUN_DIR/last.pt.
  execute_notebook notebooks/train.ipynb "$NOTEBOOK" "${PARAMS[@]}"
}

run_probe() {  # the diffusion probe notebook
  local settings
  settings=$(python -m imginav_core check probe --from-env)
  eval "$settings"  # OUTPUT_ROOT, PROBE_DIR, NOTEBOOK, WIDGET_SCRIPT, PARAMS
  execute_notebook notebooks/diffusion_probe.ipynb "$NOTEBOOK" "${PARAMS[@]}"
  echo "probe metrics: $PROBE_DIR/probe_metrics.json"
}

run_analysis() {  # the analysis notebook, then the report
  local settings
  settings=$(python -m imginav_core check analysis --from-env)
  eval "$settings"  # OUTPUT_ROOT, NOTEBOOK, WIDGET_SCRIPT, PARAMS
  execute_notebook notebooks/analysis.ipynb "$NOTEBOOK" "${PARAMS[@]}"
  python -m imginav_core stage "${PARAMS[@]}"
  jupyter-book build book
  echo "report: $IMGINAV_ROOT/book/_build/html/index.html"
}
