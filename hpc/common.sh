# Shared body of the Phase 1.2 LSF jobs; sourced by hpc/phase1_2_array.sh, papermill_V1.sh,
# papermill_V2.sh, diffusion_probe.sh, analysis.sh and bench.sh after their #BSUB directives. Runs unchanged outside LSF
# (bash hpc/papermill_V2.sh). The IMGINAV_* variables it reads are listed, with the notebook
# parameter and config key each one sets, by `python -m imginav_core parameters` (and the README).
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

if [[ -n "${IMGINAV_CONDA_ENV-imginav}" ]] && command -v conda >/dev/null 2>&1; then
  # shellcheck disable=SC1091
  source "$(conda info --base)/etc/profile.d/conda.sh"
  conda activate "${IMGINAV_CONDA_ENV-imginav}"
else
  echo "note: no conda environment activated; using $(command -v python)"
fi

element=""  # LSF sets LSB_JOBINDEX to an array element's index, and to 0 for any other job
if [[ "${LSB_JOBINDEX:-0}" != 0 ]]; then element="[$LSB_JOBINDEX]"; fi
echo "job ${LSB_JOBID:-local}$element ${LSB_JOBNAME:-} on $(hostname) at $(date -Is); repository $IMGINAV_ROOT"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

# papermill writes the executed notebook as it goes: run it under a temporary name and rename it
# only when it succeeded, so a failed or killed job never replaces a good executed notebook.
execute_notebook() {  # execute_notebook INPUT OUTPUT [papermill -p arguments...]
  local input=$1 output=$2
  shift 2
  mkdir -p "$(dirname "$output")"
  local partial="${output%.ipynb}.partial.ipynb"
  # papermill logs the cells' output on stderr: keep it in the job's main log (.out) with the rest.
  if papermill "$input" "$partial" --log-output --request-save-on-cell-execute "$@" 2>&1; then
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
