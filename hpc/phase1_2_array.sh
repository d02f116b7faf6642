#!/usr/bin/env bash
# Written by `python -m imginav_core job-scripts` from configs/phase1_2/study.yaml: change the study file and run it
# again, not this script (a test fails when the two differ).
# Phase 1.2's training runs as one LSF job array: element I trains row I of the study planned under
# $IMGINAV_OUTPUTS (`python -m imginav_core plan --show`: its config, seed and KL weight, into its own run
# folder), through notebooks/train.ipynb. hpc/launch_phase1_2.sh submits it once per arm, on the arm's
# queue, with the plan's indices. Submitted by hand it runs the default plan's indices on the queue below:
#   bsub < hpc/phase1_2_array.sh                      (the default plan, once planned)
#   bsub -J "phase1_2[5]" -q gpuv100 < hpc/phase1_2_array.sh    (one run again: it resumes)
#   LSB_JOBINDEX=5 bash hpc/phase1_2_array.sh         (one index, outside LSF)
# LSF sets $LSB_JOBINDEX to the element's index and replaces %I in the log names by it.
# Memory (python -m imginav_core bench --memory at 512 x 512, batch 16, measured on a CPU in float32,
# where the activations are resident; a GPU job holds them on the GPU and its CUDA libraries, 1-2 GB,
# on the host instead): largest process 8.67 GB resident.
# rusage[mem] and -M are per slot (core): 8 x 2 GB = 16 GB reserved; -M 14GB = 1.5 x that peak,
# rounded up, so it holds where LSF enforces -M per process.
# -Ne: a mail (to you, or to IMGINAV_MAIL through the launcher) for each element that fails.
#BSUB -J "phase1_2[1-10]"
#BSUB -q gpuv100
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 8
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=2GB]"
#BSUB -M 14GB
#BSUB -W 04:00
#BSUB -Ne
#BSUB -o hpc/logs/phase1_2.%J.%I.out
#BSUB -e hpc/logs/phase1_2.%J.%I.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
python -m imginav_core job train --index "${LSB_JOBINDEX:-0}"
