#!/usr/bin/env bash
# The main job on the embedded default data: synthetic layouts at a small resolution, V1 and V2
# trained briefly on the CPU. Sizes come from the environment (defaults below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT=${IMGINAV_OUTPUTS:-outputs/demo}
EPOCHS=${IMGINAV_EPOCHS:-3}
RES=${IMGINAV_RESOLUTION:-64}
SAMPLES=${IMGINAV_SYNTHETIC_SAMPLES:-400}

for exp in V1_deterministic V2_vae_light; do
  python -m imginav_core train "configs/phase1_2/${exp}.yaml" \
    --set output_root="$OUT" --set training.epochs="$EPOCHS" --set data.resolution="$RES" \
    --set data.synthetic_samples="$SAMPLES" --set training.device=cpu
done
echo "metrics: $OUT/phase1_2_vae_test/*_metrics.csv"
