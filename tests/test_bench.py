"""The benchmark and the phase timing run end to end on the CPU and report every figure.
Speed is never asserted here: the figures are measurements, not pass/fail criteria."""
import json
import os
import subprocess
import sys

from imginav_core.phase_timing import EPOCHS, REAL_IMAGES, RUNS, estimate

from helpers import ROOT


def test_quick_benchmark_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "imginav_core.bench", "--quick", "--device", "cpu", "--json", str(out)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["speedup"] > 0
    assert report["device"] == "cpu" and report["device_name"] and report["torch"]
    assert report["settings"]["resolution"] == 128 and report["settings"]["batch_size"] == 16
    for model in ("V1", "V2"):
        figures = report["models"][model]
        assert figures["speedup"] > 0 and figures["gflop_per_image"] > 0
        for path in ("fast", "straightforward"):
            for key in ("train_images_per_s", "tflops", "peak_memory_bytes", "data_images_per_s", "model_images_per_s"):
                assert figures[path][key] > 0, (model, path, key)
    assert figures["straightforward"]["settings"] == "fp32, contiguous, eager"
    assert "speedup, fast / straightforward" in done.stdout  # the table


def test_phase_estimate_scales_steady_epochs_to_the_real_set():
    # 100 train images/s in steady epochs of 12 s wall, of which 10 s training: 2 s of validation
    # etc. for 50 validation images; the first epoch is 30 s longer (compile).
    measured = {"epoch_wall_seconds": [42.0, 12.0, 12.0], "epoch_train_seconds": [40.0, 10.0, 10.0],
                "train_images_per_s": [25.0, 100.0, 100.0], "val_images": 50}
    got = estimate(measured)
    epoch = 0.8 * REAL_IMAGES / 100.0 + 2.0 * 0.2 * REAL_IMAGES / 50
    assert abs(got["real_epoch_seconds"] - epoch) < 1e-6
    assert abs(got["phase_seconds"] - RUNS * (30.0 + EPOCHS * epoch)) < 1e-6


def test_gpu_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_bench.sh")]).returncode == 0
