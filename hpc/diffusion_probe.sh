#!/usr/bin/env bash
# Phase 1.2 diffusion probe: the same small latent diffusion model trained on each run's latents,
# its generated layouts scored (notebooks/diffusion_probe.ipynb). Submitted by
# hpc/launch_phase1_2.sh to start when V1 and V2 have ended; or: bsub < hpc/diffusion_probe.sh
# It first checks that both runs finished. Resubmitting a killed probe resumes it: each denoiser
# from its last checkpoint, finished ones are not redone.
# On an L40s for bf16, the recipe every latent space gets. Memory: 4 x 8 GB = 32 GB reserved
# (the scorer's reference class maps and the decoded samples at 512 x 512), -M 12GB per slot.
#BSUB -J phase1_2_probe
#BSUB -q gpul40s
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 4
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=8GB]"
#BSUB -M 12GB
#BSUB -W 02:00
#BSUB -o hpc/logs/phase1_2_probe.%J.out
#BSUB -e hpc/logs/phase1_2_probe.%J.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
run_probe
