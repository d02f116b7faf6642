#!/usr/bin/env bash
# Submit the whole of Phase 1.2: the study plan's training runs as a job array (one array per arm,
# on the arm's queue), the diffusion probe once every run has ended, then the analysis once the
# probe has ended. Run from the repository root, on a login node:
#
#   bash hpc/launch_phase1_2.sh            # the whole study
#   bash hpc/launch_phase1_2.sh --resume   # after a failure: only the runs that have not finished
#                                          # (then the probe and the analysis again)
#
# The runs: `python -m imginav_core plan` (V1 and V2 x the seeds of configs/phase1_2/study.yaml;
# IMGINAV_SEEDS=42,43 other seeds; IMGINAV_KLD_SWEEP=1 adds the KL-weight sweep, 20 runs more); the IMGINAV_*
# variables the jobs read: `python -m imginav_core parameters`. The launcher itself also reads
# IMGINAV_STUDY, the study's tag in the job names (default: the output root's folder name), so that
# `bjobs -J "TAG.*"` shows one study's jobs; and IMGINAV_MAIL, an address for LSF's mails (bsub -u;
# default: yours on the cluster): one for each run that fails (-Ne), one when the analysis ends (-N).
#
# Before submitting anything it checks every parameter of every planned run, puts the report's
# widget script into book/ (npm pack, here on the login node, so no compute job needs a network),
# and records the plan in OUTPUT_ROOT/phase1_2_vae_test/study_plan.json, which the probe's and the
# analysis's run lists default to. A problem stops it there with exit status 2, nothing submitted.
#
# --resume submits the plan's runs whose run folder does not say they finished (`python -m
# imginav_core plan --from-env --pending`: no metrics CSV ending in completed or early_stopped, or
# no best.pt); each resumes from its last.pt. Use it once the study's earlier jobs have all ended
# (bjobs shows none of them): a run still training refuses a second copy of itself. With every run
# finished it submits the probe and the analysis only.
#
# Why one array per arm: a queue is per submission, and V1 runs on gpuv100, V2 on gpul40s (the
# queues of hpc/papermill_V1.sh and _V2.sh). Each element reads its row of the plan from
# $LSB_JOBINDEX: the arrays are -J "TAG.phase1_2[1-5]" and -J "TAG.phase1_2[6-10]".
#
# Why every dependency names job ids, not names: a name stands for all your jobs of that name, but
# for arrays the bsub -w reference adds that without JOB_DEP_LAST_SUB in lsb.params "the job is
# rejected if one of your previous arrays has the same name but a different index", and with it
# "the test is done on the job submitted most recently" only (Platform LSF Command Reference 7, and
# Reference 6.2, bsub -w). Two arrays with indices 1-5 and 6-10 are exactly that, and so is an
# earlier study's array, or an earlier probe, still in LSF's memory. A condition on an array's job
# id covers the whole array ("Whole array dependency": bsub -w "done(123)", Administering Platform
# LSF, Job Arrays). ended() rather than done(): it holds once every element has ended, done or
# failed, so nothing waits forever; the probe and the analysis each first check that what they
# need finished and, if not, stop at once naming it (then: --resume).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage="usage: bash hpc/launch_phase1_2.sh [--resume]   (from the repository root; see the comments at its top)"
resume=0
case "$*" in
  "") ;;
  --resume) resume=1 ;;
  -h | --help) echo "$usage"; exit 0 ;;
  *) echo "error: unknown arguments '$*'; $usage" >&2; exit 2 ;;
esac
mkdir -p hpc/logs  # LSF does not create the log folder; without it the job's output is lost

# Every parameter of every planned run checked now, before anything waits in a queue (python from
# the current environment); also the plan's variables, and that none sets one run's name or seed for all.
checked=$(python -m imginav_core check run --from-env)  # (eval "$(...)" would not stop on a failure)
eval "$checked"  # RUNS, WIDGET_SCRIPT
python -m imginav_core check probe --from-env --parameters-only > /dev/null
checked=$(python -m imginav_core check analysis --from-env --parameters-only)
eval "$checked"  # OUTPUT_ROOT, PHASE_DIR, ...

study=${IMGINAV_STUDY:-$(basename "$OUTPUT_ROOT")}
if [[ -n "${IMGINAV_STUDY:-}" && ! "$study" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
  echo "error: IMGINAV_STUDY = '$study': expected letters, digits, '.', '_' or '-' (it goes into the job names)" >&2
  exit 2
fi
study=${study//[^A-Za-z0-9._-]/_}
mail=()
if [[ -n "${IMGINAV_MAIL:-}" ]]; then
  if [[ ! "$IMGINAV_MAIL" =~ ^[^[:space:]]+$ ]]; then
    echo "error: IMGINAV_MAIL = '$IMGINAV_MAIL': expected one mail address (bsub -u)" >&2
    exit 2
  fi
  mail=(-u "$IMGINAV_MAIL")
fi

# The report's widget script, now: the analysis job builds the report from book/ and needs no network then.
if ! python -m imginav_core fetch-widgets; then
  echo "error: the report's widget script could not be had (above); nothing was submitted" >&2
  exit 2
fi
# The plan these jobs run (its runs, seeds, whether the sweep is on, the study file), recorded in the
# output root: the probe, the analysis and the notebooks run later by hand take their runs from it.
python -m imginav_core plan --from-env --record

directive() {  # directive FLAG SCRIPT: the value of a #BSUB line, one spelling, in the script itself
  sed -n "s/^#BSUB $1 \"\{0,1\}\([^ \"]*\).*/\1/p" "$2"
}

submit() {  # submit SCRIPT [bsub options...] -> prints the job id, or stops the launcher
  local script=$1 reply id
  shift
  reply=$(bsub ${mail[@]+"${mail[@]}"} "$@" < "$script") || true
  echo "$reply" >&2
  id=$(sed -n 's/^Job <\([0-9][0-9]*\)> is submitted.*/\1/p' <<< "$reply")
  if [[ -z "$id" ]]; then
    echo "error: bsub did not submit $script (its reply is above); nothing after it was submitted" >&2
    return 1
  fi
  echo "$id"
}

if ((resume)); then
  by_arm=$(python -m imginav_core plan --from-env --arrays --pending)  # the unfinished runs' indices
else
  by_arm=$(python -m imginav_core plan --from-env --arrays)  # "V1 1-5", "V2 6-10": each arm's indices
fi
array=$(directive -J hpc/phase1_2_array.sh)
array=${array%%\[*}  # phase1_2[1-10] -> phase1_2
arrays=()
ids=()
trained=""
while read -r arm indices; do
  [[ -n "$arm" ]] || continue  # --resume with every run finished: no line
  single=hpc/papermill_$arm.sh
  if [[ ! -f "$single" ]]; then
    echo "error: no $single to take arm $arm's queue from (configs/phase1_2/study.yaml names the arms)" >&2
    exit 2
  fi
  queue=$(directive -q "$single")
  id=$(submit hpc/phase1_2_array.sh -J "$study.${array}[$indices]" -q "$queue")
  arrays+=("$arm: job $id, runs $indices on $queue")
  ids+=("$id")
  trained+="${trained:+ && }ended($id)"
done <<< "$by_arm"

if [[ -n "$trained" ]]; then
  probe=$(submit hpc/diffusion_probe.sh -J "$study.$(directive -J hpc/diffusion_probe.sh)" -w "$trained")
else
  probe=$(submit hpc/diffusion_probe.sh -J "$study.$(directive -J hpc/diffusion_probe.sh)")
fi
probed="ended($probe)"
analysis=$(submit hpc/analysis.sh -J "$study.$(directive -J hpc/analysis.sh)" -w "$probed")
ids+=("$probe" "$analysis")

if ((${#arrays[@]} == 0)); then
  echo "every one of the $RUNS runs has finished (python -m imginav_core plan --from-env --pending lists none):" \
       "no training submitted"
else
  submitted="$(IFS=';'; echo "${arrays[*]}")"
  what="$RUNS runs"
  if ((resume)); then what="the unfinished runs of $RUNS (python -m imginav_core plan --from-env --pending)"; fi
  echo "$what: ${submitted//;/; }"
fi
starts="at once"
if [[ -n "$trained" ]]; then starts="when every run has ended: $trained"; fi
echo "probe job $probe (starts $starts); analysis job $analysis (starts when the probe has ended: $probed)"
echo "study $study (job names $study.*); logs: hpc/logs/ (phase1_2.JOB.INDEX.out for a run, phase1_2_probe.JOB.out," \
     "phase1_2_analysis.JOB.out)"
follow() { printf '  %-30s # %s\n' "$1" "$2"; }  # follow COMMAND WHAT-IT-SHOWS
echo "follow them:"
follow "bjobs -w ${ids[*]}" "this study's jobs (or by name: bjobs -w -J \"$study.*\")"
if ((${#arrays[@]} > 0)); then
  index=$(head -n 1 <<< "$by_arm" | cut -d ' ' -f 2)
  follow "bpeek -f \"${ids[0]}[${index%%[-,]*}]\"" "a run's output as it is written (the probe's: bpeek -f $probe)"
else
  follow "bpeek -f $probe" "the probe's output as it is written"
fi
follow "bjdepinfo -r 2 -l $analysis" "what the analysis still waits for"
