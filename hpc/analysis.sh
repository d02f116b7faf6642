#!/usr/bin/env bash
# Phase 1.2 analysis (every planned run measured on the held-out test split, the decision) and the
# Jupyter Book report.
# Submitted by hpc/launch_phase1_2.sh to start when V1 and V2 have ended; or: bsub < hpc/analysis.sh
# It first checks that every planned run finished and was probed: a failed job stops it at once, named.
# Memory (python -m imginav_core bench --memory at 512 x 512, on a CPU): largest process 1.06 GB
# resident (the notebook's kernel: every measure works on 2 layouts at a time, so it does not grow
# with max_images); the book's build comes after it. Per slot: 4 x 2 GB = 8 GB reserved, -M 4GB
# (over 1.5 x that peak, with room for the build).
# -N: a mail when it ends, done or failed (to you, or to IMGINAV_MAIL through the launcher): the
# study is over.
#BSUB -J phase1_2_analysis
#BSUB -q gpuv100
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 4
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=2GB]"
#BSUB -M 4GB
#BSUB -W 01:00
#BSUB -N
#BSUB -o hpc/logs/phase1_2_analysis.%J.out
#BSUB -e hpc/logs/phase1_2_analysis.%J.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
python -m imginav_core job analysis
