#!/usr/bin/env bash
# Submit the whole of Phase 1.2: V1 and V2, then the analysis once both are done.
# Run from the repository root: bash hpc/launch_phase1_2.sh  (environment: see hpc/common.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p hpc/logs  # LSF does not create the log folder; without it the job's output is lost

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
analysis=$(submit hpc/analysis.sh -w "done($v1) && done($v2)")
echo "V1 job $v1, V2 job $v2, analysis job $analysis (starts when both are done)"
echo "logs: hpc/logs/; follow with: bjobs $v1 $v2 $analysis"
