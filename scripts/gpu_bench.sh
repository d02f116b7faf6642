#!/usr/bin/env bash
# One prepared run on a GPU machine (no network, the package not installed): the training
# benchmark at 512 x 512, batch 16 (V1 and V2, fast vs straightforward, plus the fast path
# without channels_last, and a profile of each path's step: which kernels take the time), then
# a short real train() on synthetic 512 x 512 layouts, whose epoch times give the estimate for
# the whole Phase 1.2. Results go to $OUT (at most 6 files); scratch data to a temporary folder,
# removed at the end. The step limits add up to 9 minutes; expect 6 to 7, mostly torch.compile
# warm-up.
#
#   OUT=/path/to/results bash scripts/gpu_bench.sh                     # on the GPU, about 5 minutes
#   IMGINAV_BENCH_CPU=1 OUT=/tmp/results bash scripts/gpu_bench.sh     # the same steps, small, on a CPU
#
# Each step has its own time limit, so one that hangs or fails still leaves the others' results;
# the script exits with 1 if any step failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${OUT:?set OUT to the folder the results should go to}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

if [[ "${IMGINAV_BENCH_CPU:-0}" == 1 ]]; then
  BENCH=(--device cpu --quick --variant training.channels_last=on --profile 1)
  TIMING=(--device cpu --resolution 64 --samples 200 --epochs 2)
else
  BENCH=(--device cuda --resolution 512 --batch-size 16 --steps 30 --windows 4 --warmup 5
         --variant training.channels_last=off --profile 5)
  TIMING=(--device cuda --resolution 512 --samples 2400 --epochs 3)
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
step bench 340 "$PYTHON" -m imginav_core.bench "${BENCH[@]}" --work-dir "$SCRATCH/bench" --json "$OUT/bench.json"
step phase_timing 190 "$PYTHON" -m imginav_core.phase_timing "${TIMING[@]}" --work-dir "$SCRATCH/phase" \
  --json "$OUT/phase_timing.json"
cp "$SCRATCH"/phase/phase1_2_vae_test/*_metrics.csv "$OUT/" 2>/dev/null || true
echo "== done in $((SECONDS - start)) s; results in $OUT:"
ls -l "$OUT"
exit "$failed"
