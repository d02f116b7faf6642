#!/usr/bin/env bash
# Phase 1.3's data: every layout's latent under the run the Phase 1.2 decision chose, on the layouts
# it trained on (python -m imginav_core export-latents --study; book/using/phase1_3.md), into
# OUTPUT_ROOT/<phase>/layout_embeddings/: <layout>_layout_emb.pt per layout (a VAE: _layout_emb_std.pt
# too), layout_embeddings.csv and latent_stats.json. It reads OUTPUT_ROOT/<phase>/decision.json, so
# it runs after the analysis:
#
#   bsub -w 'done(phase1_2_analysis)' < hpc/export_latents.sh    # queued behind the analysis job
#   bsub < hpc/export_latents.sh                                 # once the analysis has run
#   IMGINAV_CONDA_ENV= bash hpc/export_latents.sh                # outside LSF, with the python on the PATH
#
# IMGINAV_OUTPUTS: the study's output root (default outputs); the device: a GPU when the job has one.
# Resubmitting a killed export continues it: the layouts written whole are kept, the rest encoded.
# Memory (export-latents at 512 x 512, batch 16, on a CPU, 300 synthetic layouts, 4 decoding threads;
# the peak resident size /usr/bin/time -v reports): largest process 1.64 GB, the encoder's batch
# activations included, which a GPU job holds on the GPU; it does not grow with the layouts (the
# statistics are streamed). Per slot: 4 x 2 GB = 8 GB reserved, -M 3GB (over 1.5 x that peak).
# Time: on a GPU, decoding the PNGs (4 threads) and writing the files dominate; an hour is ample for
# the full set (50,015 layouts).
#BSUB -J phase1_2_export
#BSUB -q gpuv100
#BSUB -gpu "num=1:mode=exclusive_process"
#BSUB -n 4
#BSUB -R "span[hosts=1]"
#BSUB -R "rusage[mem=2GB]"
#BSUB -M 3GB
#BSUB -W 01:00
#BSUB -o hpc/logs/phase1_2_export.%J.out
#BSUB -e hpc/logs/phase1_2_export.%J.err
source "${LS_SUBCWD:-$(dirname "${BASH_SOURCE[0]}")/..}/hpc/common.sh"
python -m imginav_core export-latents --study "${IMGINAV_OUTPUTS:-outputs}"
