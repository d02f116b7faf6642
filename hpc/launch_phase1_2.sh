#!/usr/bin/env bash
# Submit the whole of Phase 1.2: the study plan's training runs as a job array (one array per arm,
# on the arm's queue), the diffusion probe once every run has ended, then the analysis once the
# probe has ended. The runs: `python -m imginav_core plan` (V1 and V2 x the seeds of
# configs/phase1_2/study.yaml; IMGINAV_SEEDS=42,43 other seeds; IMGINAV_KLD_SWEEP=1 adds the
# KL-weight sweep). Run from the repository root: bash hpc/launch_phase1_2.sh  (the IMGINAV_*
# variables it passes on: `python -m imginav_core parameters`).
#
# Why one array per arm: a queue is per submission, and V1 runs on gpuv100, V2 on gpul40s (the
# queues of hpc/papermill_V1.sh and _V2.sh). Both arrays have the name phase1_2, the indices of the
# plan: -J "phase1_2[1-5]" and -J "phase1_2[6-10]"; each element reads its row from $LSB_JOBINDEX.
#
# Why the probe waits on the arrays' job ids, not on ended("phase1_2"): a name stands for all
# your jobs of that name, but for arrays the bsub -w reference adds that without JOB_DEP_LAST_SUB
# in lsb.params "the job is rejected if one of your previous arrays has the same name but a
# different index", and with it "the test is done on the job submitted most recently" only
# (Platform LSF Command Reference 7, and Reference 6.2, bsub -w). Two arrays named phase1_2 with
# indices 1-5 and 6-10 are exactly that, and so is an earlier study's array still in LSF's memory.
# A condition on an array's job id covers the whole array ("Whole array dependency": bsub -w
# "done(123)", Administering Platform LSF, Job Arrays), and ended() holds once every element has
# ended, done or failed, so nothing waits forever. The analysis waits on the probe by name, as
# before: ended("phase1_2_probe"). Each then checks that what it needs finished and, if not, stops
# at once naming it: resubmit that run (it resumes), then the ones after it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p hpc/logs  # LSF does not create the log folder; without it the job's output is lost

# Every parameter of every planned run checked now, before anything waits in a queue (python from
# the current environment); also the plan's variables, and that none sets one run's name or seed for all.
checked=$(python -m imginav_core check run --from-env)  # (eval "$(...)" would not stop on a failure)
eval "$checked"  # RUNS, WIDGET_SCRIPT
python -m imginav_core check probe --from-env --parameters-only > /dev/null
python -m imginav_core check analysis --from-env --parameters-only > /dev/null

directive() {  # directive FLAG SCRIPT: the value of a #BSUB line, one spelling, in the script itself
  sed -n "s/^#BSUB $1 \"\{0,1\}\([^ \"]*\).*/\1/p" "$2"
}

submit() {  # submit SCRIPT [bsub options...] -> prints the job id, or stops the launcher
  local script=$1 reply id
  shift
  reply=$(bsub "$@" < "$script") || true
  echo "$reply" >&2
  id=$(sed -n 's/^Job <\([0-9][0-9]*\)> is submitted.*/\1/p' <<< "$reply")
  if [[ -z "$id" ]]; then
    echo "error: bsub did not submit $script (its reply is above); nothing after it was submitted" >&2
    return 1
  fi
  echo "$id"
}

by_arm=$(python -m imginav_core plan --from-env --arrays)  # "V1 1-5", "V2 6-10": each arm's indices
array=$(directive -J hpc/phase1_2_array.sh)
array=${array%%\[*}  # phase1_2[1-10] -> phase1_2
arrays=()
trained=""
while read -r arm indices; do
  single=hpc/papermill_$arm.sh
  if [[ ! -f "$single" ]]; then
    echo "error: no $single to take arm $arm's queue from (configs/phase1_2/study.yaml names the arms)" >&2
    exit 2
  fi
  queue=$(directive -q "$single")
  id=$(submit hpc/phase1_2_array.sh -J "$array[$indices]" -q "$queue")
  arrays+=("$arm: job $id, runs $indices on $queue")
  trained+="${trained:+ && }ended($id)"
done <<< "$by_arm"

probe=$(submit hpc/diffusion_probe.sh -w "$trained")
probed="ended(\"$(directive -J hpc/diffusion_probe.sh)\")"
analysis=$(submit hpc/analysis.sh -w "$probed")
echo "$RUNS runs (python -m imginav_core plan --from-env): $(IFS=';'; echo "${arrays[*]}" | sed 's/;/; /g')"
echo "probe job $probe (starts when every run has ended: $trained);" \
     "analysis job $analysis (starts when the probe has ended: $probed)"
echo "logs: hpc/logs/ (phase1_2.JOB.INDEX.out for a run); follow with: bjobs -A; bjobs $probe $analysis"
