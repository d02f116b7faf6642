#!/usr/bin/env bash
# The main job (`make demo`): the whole Phase 1.2 study on the embedded synthetic layouts, on the
# CPU, through exactly the job scripts the cluster runs — V1 and V2 trained by papermill, the
# analysis notebook, the Jupyter Book report. Small by default; every size can be overridden.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export IMGINAV_OUTPUTS=${IMGINAV_OUTPUTS:-outputs/demo}
export IMGINAV_DEVICE=${IMGINAV_DEVICE:-cpu}
export IMGINAV_RESOLUTION=${IMGINAV_RESOLUTION:-64}
export IMGINAV_SYNTHETIC_SAMPLES=${IMGINAV_SYNTHETIC_SAMPLES:-2400}
export IMGINAV_EPOCHS=${IMGINAV_EPOCHS:-10}
export IMGINAV_NUM_WORKERS=${IMGINAV_NUM_WORKERS:-0}
export IMGINAV_CONDA_ENV=${IMGINAV_CONDA_ENV-}   # the project's .venv, not conda

start=$SECONDS
bash hpc/papermill_V1.sh
bash hpc/papermill_V2.sh
bash hpc/analysis.sh
echo
echo "Phase 1.2 demo finished in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
echo "metrics:   $IMGINAV_OUTPUTS/phase1_2_vae_test/"
echo "decision:  $IMGINAV_OUTPUTS/phase1_2_vae_test/decision.json"
echo "report:    $(pwd)/book/_build/html/index.html"
