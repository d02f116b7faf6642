#!/usr/bin/env bash
# Phase 1.2 diffusion probe: the same small latent diffusion model trained on each run's latents,
# its generated layouts scored (notebooks/diffusion_probe.ipynb). Submitted by
# hpc/launch_phase1_2.sh to start when V1 and V2 have ended; or: bsub < hpc/diffusion_probe.sh
# It first checks that every planned run finished. Resubmitting a killed probe resumes it: each denoiser
# from its last checkpoint, finished ones are not redone.
# On an L40s for bf16, the recipe every latent space gets. Memory (python -m imginav_core bench
# --memory at 512 x 512, on a CPU, where the denoiser's batch-64 activations, 5.1 GB, are resident;
# a GPU job holds them on the GPU): largest process 7.82 GB resident, and the real set's training
# latents add 2.6 GB. Per slot: 4 x 3 GB = 12 GB reserved, -M 12GB (1.5 x that peak, rounded up).
#BSUB -J phase1_2_probe
#BSUB -q gpul40s
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 4
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=3GB]"
#BSUB -M 12GB
#BSUB -W 02:00
#BSUB -o hpc/logs/phase1_2_probe.%J.out
#BSUB -e hpc/logs/phase1_2_probe.%J.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
python -m imginav_core job probe
