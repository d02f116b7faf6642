#!/usr/bin/env bash
# Phase 1.2 analysis (both runs' checkpoints on the validation set) and the Jupyter Book report.
# Submitted by hpc/launch_phase1_2.sh to start when V1 and V2 have ended; or: bsub < hpc/analysis.sh
# It first checks that both runs finished: a failed training job stops it at once, named.
# Memory: rusage[mem] and -M are per slot (core): 4 x 4 GB = 16 GB reserved, -M 6GB per slot.
# -N: a mail when it ends, done or failed (to you, or to IMGINAV_MAIL through the launcher): the
# study is over.
#BSUB -J phase1_2_analysis
#BSUB -q gpuv100
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 4
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=4GB]"
#BSUB -M 6GB
#BSUB -W 01:00
#BSUB -N
#BSUB -o hpc/logs/phase1_2_analysis.%J.out
#BSUB -e hpc/logs/phase1_2_analysis.%J.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
run_analysis
