#!/usr/bin/env bash
# Submit the whole of Phase 1.2: V1 and V2, the diffusion probe once both have ended, then the
# analysis once the probe has ended.
# Run from the repository root: bash hpc/launch_phase1_2.sh  (the IMGINAV_* variables it passes on:
# `python -m imginav_core parameters`).
#
# The probe waits on the training jobs, and the analysis on the probe, by *name* with ended(): a
# job that fails, or is killed and resubmitted under a new id (`bsub < hpc/papermill_V1.sh` keeps
# the name), still ends, so nothing waits forever. Each then checks that what it needs finished
# and, if not, stops at once naming it: resubmit that job (it resumes), then the ones after it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p hpc/logs  # LSF does not create the log folder; without it the job's output is lost

if [[ -n "${IMGINAV_NAME:-}" ]]; then
  echo "error: IMGINAV_NAME names one experiment, and this submits two; submit one job with it instead:" \
       "IMGINAV_NAME=$IMGINAV_NAME bsub < hpc/papermill_V2.sh" >&2
  exit 2
fi
# Every parameter checked now, before anything waits in a queue (python from the current environment).
for config in configs/phase1_2/V1_deterministic.yaml configs/phase1_2/V2_vae_light.yaml; do
  python -m imginav_core check train --from-env -p config "$config" > /dev/null
done
python -m imginav_core check probe --from-env --parameters-only > /dev/null

job_name() {  # the -J of a job script: one spelling, in the script itself
  sed -n 's/^#BSUB -J \([^ ]*\).*/\1/p' "$1"
}

submit() {  # submit SCRIPT [bsub options...] -> prints the job id
  local script=$1 reply
  shift
  reply=$(bsub "$@" < "$script")
  echo "$reply" >&2
  sed -n 's/^Job <\([0-9][0-9]*\)> is submitted.*/\1/p' <<< "$reply"
}

v1=$(submit hpc/papermill_V1.sh)
v2=$(submit hpc/papermill_V2.sh)
if [[ -z "$v1" || -z "$v2" ]]; then
  echo "error: could not read the job ids from bsub's reply" >&2
  exit 1
fi
trained="ended(\"$(job_name hpc/papermill_V1.sh)\") && ended(\"$(job_name hpc/papermill_V2.sh)\")"
probe=$(submit hpc/diffusion_probe.sh -w "$trained")
probed="ended(\"$(job_name hpc/diffusion_probe.sh)\")"
analysis=$(submit hpc/analysis.sh -w "$probed")
echo "V1 job $v1, V2 job $v2; probe job $probe (starts when both have ended: $trained);" \
     "analysis job $analysis (starts when the probe has ended: $probed)"
echo "logs: hpc/logs/; follow with: bjobs $v1 $v2 $probe $analysis"
