# Shared body of the Phase 1.2 LSF jobs; sourced by hpc/papermill_V1.sh, papermill_V2.sh and
# analysis.sh after their #BSUB directives. Runs unchanged outside LSF (bash hpc/papermill_V2.sh).
#
# Environment (all optional):
#   IMGINAV_DATA         layouts.csv of the real data (default: the embedded synthetic layouts)
#   IMGINAV_OUTPUTS      output root (default: outputs/ in the repository)
#   IMGINAV_CONDA_ENV    conda environment to activate (default: imginav; "" = use the current python)
#   IMGINAV_EPOCHS, IMGINAV_BATCH_SIZE, IMGINAV_RESOLUTION, IMGINAV_SYNTHETIC_SAMPLES,
#   IMGINAV_NUM_WORKERS, IMGINAV_SEED, IMGINAV_DEVICE   override the experiment config
#   IMGINAV_GPUS         >1: train data-parallel with torchrun on that many GPUs first
#   IMGINAV_MAX_IMAGES   validation layouts the analysis measures (default 512)
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

OUTPUT_ROOT=${IMGINAV_OUTPUTS:-outputs}
echo "job ${LSB_JOBID:-local} on $(hostname) at $(date -Is); repository $IMGINAV_ROOT; outputs $OUTPUT_ROOT"
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
  local params=(-p config "$1" -p output_root "$OUTPUT_ROOT" -p manifest "${IMGINAV_DATA:-}"
                -p device "${IMGINAV_DEVICE:-auto}")
  local var name
  for name in epochs batch_size resolution synthetic_samples num_workers seed; do
    var="IMGINAV_${name^^}"
    if [[ -n "${!var:-}" ]]; then params+=(-p "$name" "${!var}"); fi
  done
  # Checked before anything is written: a bad parameter stops here, not halfway through a run.
  local settings
  settings=$(python -m imginav_core.workflow check-train "${params[@]}")
  eval "$settings"  # NAME, RUN_DIR, PHASE_DIR
  echo "experiment $NAME -> $RUN_DIR"
  if [[ "${IMGINAV_GPUS:-1}" -gt 1 ]]; then
    torchrun --standalone --nproc_per_node="$IMGINAV_GPUS" -m imginav_core.workflow train "${params[@]}"
  fi
  # Resubmitting a killed job lands here again: train() resumes from RUN_DIR/last.pt.
  execute_notebook notebooks/train.ipynb "$PHASE_DIR/runs/$NAME.ipynb" "${params[@]}"
}

run_analysis() {  # the analysis notebook, then the report
  local params=(-p output_root "$OUTPUT_ROOT" -p max_images "${IMGINAV_MAX_IMAGES:-512}"
                -p device "${IMGINAV_DEVICE:-auto}")
  local settings
  settings=$(python -m imginav_core.workflow check-analysis "${params[@]}")
  eval "$settings"  # PHASE_DIR
  execute_notebook notebooks/analysis.ipynb "$PHASE_DIR/runs/analysis.ipynb" "${params[@]}"
  python -m imginav_core.report stage --output-root "$OUTPUT_ROOT"
  jupyter-book build book
  echo "report: $IMGINAV_ROOT/book/_build/html/index.html"
}
