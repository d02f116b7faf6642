"""The benchmark and the memory benchmark run end to end on the CPU and report every figure. Speed
and size are never asserted here: the figures are measurements, not pass/fail criteria (the meter
itself is checked on an allocation of a known size)."""

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import ROOT

from imginav_core.runtime import StageMeter
from imginav_core.study.budget import REAL_LAYOUTS, REAL_TRAIN_SHARE
from imginav_core.study.perf.memory import estimate, peak_phase, plan_study
from imginav_core.study.perf.profile import group_of
from imginav_core.study.results import LatentMetrics


def _bench(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "imginav_core", "bench", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_bench_job_reports_every_figure_of_the_benchmark_and_the_memory_benchmark(tmp_path):
    """hpc/bench.sh as the GPU job runs it, small and on the CPU: the quick benchmark with a
    variant and a profile, then the study's jobs run small, each process's figures as its stage
    recorded them."""
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
        "memory.json",
        "memory.log",
    ]
    _check_memory_report(json.loads((tmp_path / "memory.json").read_text()), (tmp_path / "memory.log").read_text())
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


# The phases each process records, in the order it runs them: what the study's jobs spend time and memory on.
PROBE_RUN_PHASES = ["encoding", "denoiser_training_2", "denoiser_training_4", "sampling", "heldout_loss", "decoding"]
PROCESS_PHASES = {
    "training V1": ["data", "training", "validation"],
    "training V2": ["data", "training", "validation"],
    "probe": ["scorers", "copy_index", "layouts", *(f"{arm} {p}" for arm in ("V1", "V2") for p in PROBE_RUN_PHASES)],
    "analysis": ["data", "scorer", "measuring"],
}


def _check_memory_report(report: dict, printed: str) -> None:
    """bench --memory --quick: every process of the study with its phases' seconds and peaks, as
    read from the files the stages wrote, and the real set's estimates."""
    assert report["resolution"] == 64 and list(report["processes"]) == list(PROCESS_PHASES)
    assert report["settings"]["training.epochs"] == 1 and report["settings"]["probe.device"] == "cpu"
    for process, phases in PROCESS_PHASES.items():
        figures = report["processes"][process]
        assert [p for p in figures["phases"] if p in phases] == phases, (process, list(figures["phases"]))
        peak = figures["peak_memory"]["resident_bytes"]
        assert figures["seconds"] > 0 and peak > 0 and figures["peak_memory"]["cuda_bytes"] is None
        for phase in phases:
            # the table: the process, the phase, its seconds and the peak at its end in GB
            assert re.search(rf"^{re.escape(process)} +{re.escape(phase)} +\d+\.\d +\d+\.\d\d", printed, re.M), phase
            assert 0 < figures["peak_memory_after"][phase]["resident_bytes"] <= peak
        assert re.search(rf"^{re.escape(process)} += the process .* reached in: \S", printed, re.M), process
    # V1's run was trained first: it drew the synthetic layouts and built the cache
    assert sum(report["processes"]["training V1"]["layouts"].values()) > 100
    real = report["real_set"]
    assert real["layouts"] == REAL_LAYOUTS and real["training_minutes"] > 0 and real["cache_build_minutes"] > 0
    # V2's latents at 64 x 64: 4 x 4 x 16 floats, mean and standard deviation, per training layout
    assert real["probe_latent_bytes"] == pytest.approx(2 * 4 * 4 * 16 * 4 * REAL_LAYOUTS * REAL_TRAIN_SHARE)
    assert "the real set (27,897 layouts" in printed and "latents kept at the real size" in printed


def test_the_training_estimate_scales_steady_epochs_to_the_real_set():
    """100 training images/s in the steady epochs, validation 0.03 s a layout, 1 s a session beside
    the phases (the model, samples, checkpoints: counted per epoch), the first epoch 30 s longer
    (torch.compile: once per run)."""
    epochs = [{"epoch_seconds": 40.0, "val_seconds": 3.0, "train_images_per_s": 25.0}]
    epochs += [{"epoch_seconds": 10.0, "val_seconds": 1.5, "train_images_per_s": 100.0}] * 2
    run = {
        "seconds": 72.0,
        "phases": {"data": 5.0, "training": 60.0, "validation": 6.0},
        "epochs": epochs,
        "layouts": {"train": 700, "val": 50, "test": 250},
    }
    config = SimpleNamespace(data=SimpleNamespace(val_fraction=0.1), training=SimpleNamespace(epochs=10))
    got = estimate({"training V1": run, "training V2": run}, {"V1": config, "V2": config}, runs_per_arm=5)
    epoch = REAL_TRAIN_SHARE * REAL_LAYOUTS / 100.0 + 0.1 * REAL_LAYOUTS * 1.5 / 50 + 1.0 / 3
    assert got["training_minutes"] == pytest.approx(2 * 5 * (30.0 + 10 * epoch) / 60)
    assert got["cache_build_minutes"] == pytest.approx(5.0 / 1000 * REAL_LAYOUTS / 60)
    one = estimate({"training V1": run | {"epochs": epochs[1:2]}}, {"V1": config}, runs_per_arm=1)
    assert one["training_minutes"] == pytest.approx((10 * (epoch - 1.0 / 3 + 1.0)) / 60)  # no one-off to tell apart


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_a_stage_records_each_phase_s_seconds_and_the_peak_it_reached_by_its_end():
    """A phase that holds 200 MB for a moment: the peak at its end is that much above the one before
    it, and stays there (the peak never falls); the stage's peak is reached in it."""
    size = 200_000_000
    meter = StageMeter()
    with meter("small"):
        float(np.ones(1000).sum())
    with meter("big"):
        float(np.ones(size // 8).sum())  # written, so resident; freed on leaving
    meter.add("after", 0.5)
    meter.add("after", 0.25)
    resources = json.loads(json.dumps(meter.resources()))  # what a stage writes
    after = {phase: m["resident_bytes"] for phase, m in resources["peak_memory_after"].items()}
    assert list(resources["phases"]) == ["small", "big", "after"] and resources["phases"]["after"] == 0.75
    assert after["big"] - after["small"] > 0.9 * size and after["after"] == after["big"]
    assert resources["peak_memory"]["resident_bytes"] == after["big"] and resources["peak_memory"]["cuda_bytes"] is None
    assert resources["seconds"] >= sum(resources["phases"].values()) - 0.75
    assert peak_phase(resources) == "big"


def test_an_analysis_file_from_before_the_resources_were_recorded_still_reads(tmp_path):
    content = {field: {} for field in ("settings", "split", "arms", "models")}
    content |= {"evaluation_split": "test", "evaluation_images": 2, "evaluation_scenes": 1, "evaluation_groups": 1}
    path = tmp_path / "latent_metrics.json"
    path.write_text(json.dumps(content | {"pairs": [], "alphas": []}))
    assert LatentMetrics.read(path).resources == {}


def test_a_second_memory_benchmark_in_the_same_folder_plans_builds_and_trains_again(tmp_path):
    """A plan, a cache, finished runs or a fitted scorer left by an earlier benchmark would be read,
    not made again, and their figures not recorded: only the synthetic set is kept."""
    root = tmp_path / "study"
    for folder in ("synthetic/n80_r64_s0", "cache/scorer", "phase1_2_vae_test/experiments/a"):
        (root / folder).mkdir(parents=True)
    (root / "synthetic/n80_r64_s0/layouts.csv").write_text("kept\n")
    (root / "stray.txt").write_text("")
    plan = plan_study(root, {"data.resolution": 64, "training.epochs": 1})
    assert [r.arm for r in plan.runs] == ["V1", "V2"] and plan.configs[plan.runs[0].name].data.resolution == 64
    assert (root / "synthetic/n80_r64_s0/layouts.csv").read_text() == "kept\n"
    assert not any((root / name).exists() for name in ("cache", "stray.txt", "phase1_2_vae_test/experiments/a"))
    # the same folder again: planned afresh, not refused as another plan
    assert plan_study(root, {"data.resolution": 32}).configs[plan.runs[0].name].data.resolution == 32


def test_memory_options_of_the_throughput_benchmark_are_refused_naming_the_settings(tmp_path):
    done = _bench("--memory", "--steps", "3", "--json", str(tmp_path / "m.json"), timeout=120)
    assert done.returncode == 2 and "--set training.epochs=N" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m.json").exists()
