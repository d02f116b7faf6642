#!/usr/bin/env bash
# Written by `python -m imginav_core job-scripts` from configs/phase1_2/study.yaml: change the study file and run it
# again, not this script (a test fails when the two differ).
# Phase 1.2, V2 (VAE, KL weight 0.0001; V2_vae_light.yaml) on gpul40s: one run. From the repository root:
#   bsub < hpc/papermill_V2.sh        (or without LSF: bash hpc/papermill_V2.sh)
# It trains the first V2 run of the study planned under $IMGINAV_OUTPUTS (else outputs/); with no
# plan there it first plans one run per arm (the study file's first seed) and says so.
# Memory (python -m imginav_core bench --memory at 512 x 512, batch 16, measured on a CPU in float32,
# where the activations are resident; a GPU job holds them on the GPU and its CUDA libraries, 1-2 GB,
# on the host instead): largest process 8.67 GB resident.
# rusage[mem] and -M are per slot (core): 8 x 2 GB = 16 GB reserved; -M 14GB = 1.5 x that peak,
# rounded up, so it holds where LSF enforces -M per process.
# -Ne: a mail (to you, or to bsub -u ADDRESS) only if the run fails.
#BSUB -J phase1_2_V2
#BSUB -q gpul40s
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 8
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=2GB]"
#BSUB -M 14GB
#BSUB -W 04:00
#BSUB -Ne
#BSUB -o hpc/logs/phase1_2_V2.%J.out
#BSUB -e hpc/logs/phase1_2_V2.%J.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
python -m imginav_core job train --arm V2
