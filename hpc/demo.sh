#!/usr/bin/env bash
# The main job (`make demo`): the whole Phase 1.2 study on the embedded synthetic layouts, on the
# CPU, through exactly the job scripts the cluster runs — V1 and V2 trained by papermill, the
# analysis notebook, the Jupyter Book report — run here one after the other instead of by bsub.
# Small by default; every IMGINAV_* variable (`python -m imginav_core parameters`) overrides.
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
eval "$(python -m imginav_core check analysis --from-env)"  # PHASE_DIR, DECISION, ...
echo "metrics:   $PHASE_DIR/"
echo "decision:  $DECISION"
echo "report:    $(pwd)/book/_build/html/index.html"
