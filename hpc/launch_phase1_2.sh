#!/usr/bin/env bash
# Submit the whole of Phase 1.2: the study plan's training runs as a job array (one array per arm,
# on the arm's queue), the diffusion probe once every run has ended, then the analysis once the
# probe has ended. Run from the repository root, on a login node:
#
#   bash hpc/launch_phase1_2.sh [PLAN OPTIONS]   # plan the study (python -m imginav_core plan), submit it
#   bash hpc/launch_phase1_2.sh --resume         # after a failure: only the runs that have not finished
#                                                # (then the probe and the analysis again)
#
# The study lives under $IMGINAV_OUTPUTS (else outputs/). Its plan is written first, before anything
# is submitted, by `python -m imginav_core plan PLAN OPTIONS` (e.g. --seeds 42,43, --sweep, --set
# training.epochs=20, --set data.manifest=/path/layouts.csv): each run's config and the protocol. Every
# setting is given there, once; the jobs read it. A plan already written is kept when the options
# ask for the same, and refused when they ask for another (plan into another output root).
# The launcher itself also reads IMGINAV_STUDY, the study's tag in the job names (default: the output
# root's folder name), so that `bjobs -J "TAG.*"` shows one study's jobs; and IMGINAV_MAIL, an address
# for LSF's mails (bsub -u; default: yours on the cluster): one for each run that fails (-Ne), one when
# the analysis ends (-N).
#
# Before submitting anything it puts the report's widget script into book/ (npm pack, here on the login
# node, so no compute job needs a network). A problem stops it there with exit status 2, nothing submitted.
#
# --resume submits the plan's runs whose run folder does not say they finished (`python -m imginav_core
# plan --arrays --pending`: no metrics CSV ending in completed or early_stopped, or no best.pt); each
# resumes from its last.pt. Use it once the study's earlier jobs have all ended (bjobs shows none of
# them): a run still training refuses a second copy of itself. With every run finished it submits the
# probe and the analysis only.
#
# Why one array per arm: a queue is per submission, and each arm has its own (configs/phase1_2/study.yaml:
# V1 on gpuv100, V2 on gpul40s). Each element reads its row of the plan from $LSB_JOBINDEX: the arrays are
# -J "TAG.phase1_2[1-5]" and -J "TAG.phase1_2[6-10]".
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

usage="usage: bash hpc/launch_phase1_2.sh [--resume | PLAN OPTIONS]   (from the repository root; see its top)"
resume=0
case "${1:-}" in
  --resume) resume=1; shift ;;
  -h | --help) echo "$usage"; exit 0 ;;
esac
if ((resume)) && (($# > 0)); then
  echo "error: --resume submits the written plan again: give no plan options with it; $usage" >&2
  exit 2
fi
for option in "$@"; do
  if [[ "$option" == --out || "$option" == --out=* ]]; then
    echo "error: the jobs find the study under \$IMGINAV_OUTPUTS: set it (export IMGINAV_OUTPUTS=...), not --out" >&2
    exit 2
  fi
done
mkdir -p hpc/logs  # LSF does not create the log folder; without it the job's output is lost

# The plan, written now (or found as asked), before anything waits in a queue: every run's config
# and the protocol. A bad setting stops here, nothing submitted.
if ((resume)); then
  python -m imginav_core plan --show > /dev/null  # a resumed study has its plan
else
  python -m imginav_core plan "$@"
fi
python -m imginav_core job check  # what the jobs will find: the plan, and no setting variable in the environment
OUTPUT_ROOT=${IMGINAV_OUTPUTS:-outputs}
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
  by_arm=$(python -m imginav_core plan --arrays --pending)  # the unfinished runs' indices
else
  by_arm=$(python -m imginav_core plan --arrays)  # "V1 1-5 gpuv100": each arm's indices and queue
fi
RUNS=$(python -m imginav_core plan --show | grep -c '^| [0-9]')  # the plan's rows
arrays=()
ids=()
trained=""
while read -r arm indices queue; do
  [[ -n "$arm" ]] || continue  # --resume with every run finished: no line
  id=$(submit hpc/phase1_2_array.sh -J "$study.phase1_2[$indices]" -q "$queue")
  arrays+=("$arm: job $id, runs $indices on $queue")
  ids+=("$id")
  trained+="${trained:+ && }ended($id)"
done <<< "$by_arm"

if [[ -n "$trained" ]]; then
  probe=$(submit hpc/diffusion_probe.sh -J "$study.phase1_2_probe" -w "$trained")
else
  probe=$(submit hpc/diffusion_probe.sh -J "$study.phase1_2_probe")
fi
probed="ended($probe)"
analysis=$(submit hpc/analysis.sh -J "$study.phase1_2_analysis" -w "$probed")
ids+=("$probe" "$analysis")

if ((${#arrays[@]} == 0)); then
  echo "every one of the $RUNS runs has finished (python -m imginav_core plan --arrays --pending lists none):" \
       "no training submitted"
else
  submitted="$(IFS=';'; echo "${arrays[*]}")"
  what="$RUNS runs"
  if ((resume)); then what="the unfinished runs of $RUNS (python -m imginav_core plan --arrays --pending)"; fi
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
