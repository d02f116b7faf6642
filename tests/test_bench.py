"""The benchmark, the memory benchmark and the phase timing run end to end on the CPU and report
every figure. Speed and size are never asserted here: the figures are measurements, not pass/fail
criteria (the meter itself is checked on allocations of a known size)."""

import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from helpers import ROOT

from imginav_core.study.perf.memory import REST, PhaseMeter, Workload
from imginav_core.study.perf.phase_timing import EPOCHS, REAL_IMAGES, estimate
from imginav_core.study.perf.profile import group_of


def _bench(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "imginav_core", "bench", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_bench_job_reports_every_figure_of_the_benchmark_and_the_phase_timing(tmp_path):
    """hpc/bench.sh as the GPU job runs it, small and on the CPU: the quick benchmark with a
    variant and a profile, then the phase timing."""
    env = {
        **os.environ,
        "IMGINAV_BENCH_CPU": "1",
        "IMGINAV_CONDA_ENV": "",
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
    }
    done = subprocess.run(["bash", "hpc/bench.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bench.json",
        "bench.log",
        "environment.txt",
        "phase_timing.json",
        "phase_timing.log",
    ]
    timing = json.loads((tmp_path / "phase_timing.json").read_text())
    assert timing["epochs"] == 2 and timing["resolution"] == 64 and len(timing["measured"]["epoch_wall_seconds"]) == 2
    assert timing["estimate"]["phase_minutes"] > 0
    out = tmp_path / "bench.json"
    done.stdout = (tmp_path / "bench.log").read_text()
    report = json.loads(out.read_text())
    assert report["speedup"] > 0
    assert report["device"] == "cpu" and report["device_name"] and report["torch"]
    assert report["settings"]["resolution"] == 64 and report["settings"]["batch_size"] == 16
    for model in ("V1", "V2"):
        figures = report["models"][model]
        assert figures["speedup"] > 0 and figures["gflop_per_image"] > 0
        for path in ("fast", "straightforward"):
            for key in ("train_images_per_s", "tflops", "peak_memory_bytes", "data_images_per_s", "model_images_per_s"):
                assert figures[path][key] > 0, (model, path, key)
    assert figures["straightforward"]["settings"] == "fp32, contiguous, eager"
    assert "speedup, fast / straightforward" in done.stdout  # the table
    # the variant: timed like the others, in the memory format it asked for
    variant = figures["variants"]["training.channels_last=on"]
    assert "channels_last" in variant["settings"]
    assert variant["train_images_per_s"] > 0 and variant["speedup"] > 0
    assert "training.channels_last=on" in done.stdout
    # the profile: every path's step broken down, the convolutions among what takes time
    for path in (figures["fast"], figures["straightforward"], variant):
        profile = path["profile"]
        assert profile["busy_ms_per_step"] > 0
        assert profile["groups"]["convolutions"]["share"] > 0
        assert any("convolution" in k["name"] for k in profile["top"])
        # every convolution of the model, forward and backward, named as a layer
        layers = [c["layer"] for c in profile["convolution_layers"]]
        assert all(re.fullmatch(r"(transposed )?conv \d+->\d+ \dx\d at \d+x\d+( backward)?", c) for c in layers), layers
        r = report["settings"]["resolution"]  # the first and last convolutions at full size
        bottom = r // 16  # the decoder's first up-convolution
        assert {
            f"conv 3->32 3x3 at {r}x{r}",
            f"conv 3->32 3x3 at {r}x{r} backward",
            f"transposed conv 256->128 4x4 at {bottom}x{bottom}",
            f"conv 16->10 3x3 at {r}x{r} backward",
        } <= set(layers), layers
    assert "by group:" in done.stdout and "convolution layers" in done.stdout


@pytest.mark.parametrize("variant", ["training.channels_lst=off", "training.batch_size=32"])
def test_a_variant_it_cannot_time_is_named_before_anything_runs(tmp_path, variant):
    """A misspelt key, or one that would change the work itself (so images/s would compare
    different things), stops the benchmark at once with the key named."""
    done = _bench(
        "--quick", "--set", "training.device=cpu", "--variant", variant, "--json", str(tmp_path / "b.json"), timeout=120
    )
    assert done.returncode == 2
    assert variant.split("=")[0] in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize(
    "name,group",
    [
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x64x64", "convolutions"),
        ("void cutlass__5x_cudnn::Kernel<cutlass_tensorop_bf16_s16816dgrad_optimized_bf16>", "convolutions"),
        ("aten::convolution_backward", "convolutions"),
        ("void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16>", "memory layout conversions"),
        ("triton_red_fused_convolution_backward_native_group_norm_silu_3", "fused by torch.compile"),
        ("## Call CompiledFxGraph fx67mp7x6huhtgoclx4gqkcicbtf6vsacevqmoetflu3egg6ajo5 ##", "fused by torch.compile"),
        ("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>", "optimizer"),
        ("aten::native_group_norm_backward", "normalisation and element-wise"),
        ("Memcpy HtoD (Pinned -> Device)", "copies and fills"),
        ("autograd::engine::evaluate_function: ConvolutionBackward0", "autograd bookkeeping"),
    ],
)
def test_kernels_are_grouped_by_what_they_do(name, group):
    assert group_of(name) == group


def test_phase_estimate_scales_steady_epochs_to_the_real_set():
    # 100 train images/s in steady epochs of 12 s wall: 10 s training, 1.5 s validating 50 images,
    # 0.5 s for samples and checkpoints, which does not grow with the data; the first epoch is 30 s
    # longer (compile).
    measured = {
        "epoch_wall_seconds": [42.0, 12.0, 12.0],
        "epoch_train_seconds": [40.0, 10.0, 10.0],
        "epoch_val_seconds": [3.0, 1.5, 1.5],
        "train_images_per_s": [25.0, 100.0, 100.0],
        "val_images": 50,
    }
    got = estimate(measured, val_fraction=0.1, test_fraction=0.2, runs=10)
    # the test split is not trained on: 70 % of the images train, 10 % validate
    epoch = 0.7 * REAL_IMAGES / 100.0 + 1.5 * 0.1 * REAL_IMAGES / 50 + 0.5
    assert abs(got["real_epoch_seconds"] - epoch) < 1e-6
    assert abs(got["phase_seconds"] - 10 * (30.0 + EPOCHS * epoch)) < 1e-6


# The phases the memory benchmark must name, by process: what the study's jobs spend memory on.
MEMORY_PHASES = {
    "cache": ["cache build"],
    "training V1": ["training steps", "validation"],
    "training V2": ["training steps", "validation"],
    "probe": ["scorer fit", "copy index", "encoding", "denoiser training", "sampling", "decoding", "scoring"],
    "analysis": ["reconstruction pass", "latent noise", "nearest-neighbour midpoints", "interpolation", "examples"],
}


def test_the_memory_benchmark_names_every_phase_of_every_process_with_its_peak(tmp_path):
    out = tmp_path / "memory.json"
    done = _bench(
        "--memory", "--quick", "--layouts", "80", "--set", "training.device=cpu", "--json", str(out), timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["resolution"] == 64 and list(report["processes"]) == list(MEMORY_PHASES)
    for process, phases in MEMORY_PHASES.items():
        figures = report["processes"][process]
        assert figures["peak_bytes"] > 0 and figures["device"] == "cpu"
        for phase in phases:
            assert figures["phases"][phase]["entered"] >= 1 and figures["phases"][phase]["peak_bytes"] > 0, phase
            # the table: the process, the phase, its peak in GB
            assert re.search(rf"^{re.escape(process)} +{re.escape(phase)} +\d+\.\d\d ", done.stdout, re.M), phase
        assert re.search(rf"^{re.escape(process)} += the process +\d+\.\d\d$", done.stdout, re.M), process
    assert "batch 16" in done.stdout  # the training batch, beside its phase
    # the cache: synthetic layouts are palette-pure, so their class maps alone (and the meta data)
    cache = report["processes"]["cache"]["details"]
    assert 64 * 64 * 1000 <= cache["cache_bytes_per_1000"] <= 1.1 * 64 * 64 * 1000
    assert "cache on disk" in done.stdout and "per training layout" in done.stdout
    # V2's latents are 4 x 4 x 16 floats, mean and standard deviation
    assert report["processes"]["probe"]["details"]["latent_bytes_per_training_layout"] == 2 * 4 * 4 * 16 * 4


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-memory reset")
def test_the_meter_gives_each_phase_the_peak_of_its_own_time():
    """A phase that allocates 200 MB for a moment, called from one that allocates nothing, and a
    generator that does the same at each step: each gets its own peak, the caller none of it."""
    size = 200_000_000

    def big():
        return float(np.ones(size // 8).sum())  # written, so resident; freed on return

    def steps():
        for _ in range(2):
            yield float(np.ones(size // 8).sum())

    work = types.ModuleType("work")
    work.big, work.steps = big, steps
    work.outer = lambda: [work.big(), *work.steps()]
    meter = PhaseMeter()
    for name in ("big", "steps", "outer"):
        meter.wrap(work, name, name)
    work.outer()
    phases = meter.finish()
    assert phases["big"].entered == 1 and phases["steps"].entered == 3  # two items, then its end
    assert phases["big"].rise_bytes > 0.9 * size and phases["steps"].rise_bytes > 0.9 * size
    assert phases["outer"].rise_bytes < 0.25 * size and phases[REST].rise_bytes < 0.25 * size
    with pytest.raises(RuntimeError, match="work.gone"):
        meter.wrap(work, "gone", "a phase whose function was renamed")


def test_a_second_memory_benchmark_in_the_same_folder_builds_and_trains_again(tmp_path):
    """A cache, finished runs or a fitted scorer left by an earlier benchmark would be read, not
    built, and their phases not measured: only the synthetic set is kept."""
    work = Workload(work_dir=str(tmp_path), resolution=64, layouts=80, steps=1)
    root = tmp_path / "study"
    for folder in ("synthetic/n80_r64_s0", "cache/scorer", "phase1_2_vae_test/runs/a"):
        (root / folder).mkdir(parents=True)
    (root / "synthetic/n80_r64_s0/layouts.csv").write_text("kept\n")
    (root / "stray.txt").write_text("")
    assert work.config("V1").output_root == str(root)
    work.start_afresh()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "synthetic",
        "synthetic/n80_r64_s0",
        "synthetic/n80_r64_s0/layouts.csv",
    ]
