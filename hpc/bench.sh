#!/usr/bin/env bash
# The GPU benchmark as a job: the training benchmark at 512 x 512, batch 16 (V1 and V2, fast vs
# straightforward, plus the fast path without channels_last, and a profile of each path's step:
# which kernels take the time), then the study's jobs run small at 512 x 512 (bench --memory:
# training V1 and V2 for 3 epochs on 2,400 synthetic layouts, the probe, the analysis), each
# process's peak host and GPU memory and seconds as the stages recorded them (the figures the job
# scripts' -M lines cite) and, from the training's steady epochs, the time for the whole Phase
# 1.2's training (imginav_core/study/perf/README.md). Results go to $OUT (default
# OUTPUT_ROOT/perf); scratch data to a temporary folder, removed at the end. The step limits add
# up to 21 minutes; expect 10 to 15, mostly torch.compile warm-up and the probe. Memory: its
# largest process is the memory benchmark's training (bench --memory at 512 x 512 on a CPU: largest
# process 8.67 GB resident); 8 x 2 GB reserved, -M 14GB per slot (1.5 x that, rounded up).
#
#   bsub < hpc/bench.sh                                              # on the cluster
#   IMGINAV_CONDA_ENV= OUT=results bash hpc/bench.sh                 # a GPU machine without conda
#   IMGINAV_BENCH_CPU=1 IMGINAV_CONDA_ENV= OUT=cpu-results bash hpc/bench.sh   # the same steps, small, on a CPU
#
# Each step has its own time limit, so one that hangs or fails still leaves the others' results;
# the script exits with 1 if any step failed. The package need not be installed: it runs from
# the repository root.
#BSUB -J phase1_2_bench
#BSUB -q gpul40s
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 8
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=2GB]"
#BSUB -M 14GB
#BSUB -W 00:40
#BSUB -o hpc/logs/phase1_2_bench.%J.out
#BSUB -e hpc/logs/phase1_2_bench.%J.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
OUT=${OUT:-${IMGINAV_OUTPUTS:-outputs}/perf}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

if [[ "${IMGINAV_BENCH_CPU:-0}" == 1 ]]; then
  BENCH=(--set training.device=cpu --set data.resolution=64 --quick --variant training.channels_last=on --profile 1)
  MEMORY=(--set training.device=cpu --quick)  # 64 x 64: the steps only, in minutes
else
  BENCH=(--set training.device=cuda --set data.resolution=512 --set training.batch_size=16 --steps 30
         --windows 4 --warmup 5 --variant training.channels_last=off --profile 5)
  # the usual split and enough layouts for steady epochs and every capped chunk: a GPU has the time
  MEMORY=(--set training.device=cuda --set data.synthetic_samples=2400 --set data.test_fraction=0.2
          --set training.epochs=3)
fi

failed=0
step() {  # step NAME LIMIT_SECONDS COMMAND...: run, log to $OUT/NAME.log, carry on if it fails
  local name=$1 limit=$2 rc=0
  shift 2
  echo "== $name ($(date +%T), limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || rc=$?
  echo "== $name finished with exit status $rc ($(date +%T))"
  if ((rc != 0)); then failed=1; fi
}

{
  date
  if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "nvidia-smi: not available"; fi
  "$PYTHON" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  nproc
} > "$OUT/environment.txt" 2>&1

start=$SECONDS
step bench 340 "$PYTHON" -m imginav_core bench "${BENCH[@]}" --work-dir "$SCRATCH/bench" --json "$OUT/bench.json"
step memory 900 "$PYTHON" -m imginav_core bench --memory "${MEMORY[@]}" --work-dir "$SCRATCH/memory" \
  --json "$OUT/memory.json"
echo "== done in $((SECONDS - start)) s; results in $OUT:"
ls -l "$OUT"
exit "$failed"
