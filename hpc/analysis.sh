#!/usr/bin/env bash
# Phase 1.2 analysis (both runs' checkpoints on the validation set) and the Jupyter Book report.
# Submitted by hpc/launch_phase1_2.sh after V1 and V2 finish; or: bsub < hpc/analysis.sh
#BSUB -J phase1_2_analysis
#BSUB -q gpuv100
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 4
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=8GB]"
#BSUB -W 01:00
#BSUB -o hpc/logs/phase1_2_analysis.%J.out
#BSUB -e hpc/logs/phase1_2_analysis.%J.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
run_analysis
