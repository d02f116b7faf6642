#!/usr/bin/env bash
# Phase 1.2's training runs as one LSF job array: element I trains row I of the study plan
# (`python -m imginav_core plan`: its experiment config, training seed and KL weight, into its own
# run folder), through notebooks/train.ipynb like hpc/papermill_V1.sh does for one run.
# hpc/launch_phase1_2.sh submits it once per arm, each on that arm's queue (the queue of
# hpc/papermill_V1.sh or _V2.sh), with the plan's indices: -J "phase1_2[1-5]" -q gpuv100,
# -J "phase1_2[6-10]" -q gpul40s. Submitted by hand it runs every index on the queue below:
#   bsub < hpc/phase1_2_array.sh                      (the default plan: V1 and V2 x 5 seeds)
#   bsub -J "phase1_2[5]" -q gpul40s < hpc/phase1_2_array.sh    (one run again: it resumes)
#   LSB_JOBINDEX=5 bash hpc/phase1_2_array.sh         (one index, outside LSF)
# LSF sets $LSB_JOBINDEX to the element's index and replaces %I in the log names by it (IBM LSF
# 10.1, bsub -o: "%I is replaced by the index of the job in the array"). The array's size must
# match the plan: with IMGINAV_SEEDS or IMGINAV_KLD_SWEEP=1 it has other runs (the launcher
# computes the indices). Memory as the single-run jobs (bench --memory at 512 x 512: largest
# process 5.02 GB resident): 8 x 2 GB reserved, -M 8GB per slot, 1.5 x that peak.
# -Ne: a mail (to you, or to IMGINAV_MAIL through the launcher) for each element that fails.
#BSUB -J "phase1_2[1-10]"
#BSUB -q gpul40s
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 8
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=2GB]"
#BSUB -M 8GB
#BSUB -W 04:00
#BSUB -Ne
#BSUB -o hpc/logs/phase1_2.%J.%I.out
#BSUB -e hpc/logs/phase1_2.%J.%I.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
run_planned "${LSB_JOBINDEX:-}"
