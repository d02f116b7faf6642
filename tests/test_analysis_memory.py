"""The analysis's memory is set by its chunk (``AnalysisSettings.batch_size`` and ``chunk_pixels``),
not by how many layouts, pairs or path frames it measures: at 512 x 512 a batch of 16 layouts
through SSIM alone once took 21 GB."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from helpers import PHASE, TINY_MODEL, V1, V1_NAME, V2, V2_NAME, small_config

from imginav_core import train
from imginav_core.outputs import Outputs
from imginav_core.study.analysis import study as study_module
from imginav_core.study.analysis.study import AnalysisSettings, run_study
from imginav_core.study.runs import load_runs

# Runs the analysis in a fresh process and prints how far its resident memory rose while it
# measured the runs: the peak (VmHWM, reset when measuring starts) over the resident size then.
# tracemalloc does not see torch's allocations; the kernel's counters do.
PEAK_SCRIPT = r"""
import json, sys
from imginav_core.study.runs import load_runs
from imginav_core.study.analysis.study import AnalysisSettings, run_study
from imginav_core.outputs import Outputs

root, phase, images, pairs, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
names = sys.argv[6:8]


def status(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key)) / 1024


start = []


def log(message):
    if message.startswith("measuring") and not start:
        start.append(status("VmRSS"))
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # VmHWM := VmRSS: the peak of what follows


runs, _ = load_runs(Outputs(root, phase), names)
settings = AnalysisSettings(max_images=images, pairs_per_kind=pairs, steps=steps, sigmas=(0.5,), neighbour_pool=8,
                            scorer=False, device="cpu")
run_study({"V1": [runs[0]], "V2": [runs[1]]}, root, settings, log=log)
print(json.dumps({"rise_mb": status("VmHWM") - start[0], "start_mb": start[0]}))
"""


@pytest.fixture(scope="module")
def runs_64px(tmp_path_factory):
    """A V1 and a V2 run of a small model at 64 x 64, half the layouts held out for validation."""
    root = tmp_path_factory.mktemp("memory")
    for config in (V1, V2):
        cfg = small_config(
            config,
            root,
            **TINY_MODEL,
            **{"data.resolution": 64, "data.synthetic_samples": 64, "data.val_fraction": 0.5},
        )
        train(cfg, log=lambda _: None)
    return root


def _memory_rise(root, images: int, pairs: int, steps: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(root), PHASE, str(images), str(pairs), str(steps), V1_NAME, V2_NAME],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-memory counters")
def test_twice_the_layouts_pairs_and_frames_do_not_take_twice_the_memory(runs_64px):
    runs, _ = load_runs(Outputs(runs_64px, PHASE), [V1_NAME])
    assert len(runs) == 1
    small = _memory_rise(runs_64px, images=8, pairs=1, steps=6)
    large = _memory_rise(runs_64px, images=16, pairs=2, steps=12)
    # Chunked, both measure the same chunks; a few MB of allocator slack either way. Before,
    # SSIM alone took ~20 MB per layout of a batch at 64 x 64 (1.3 GB at 512 x 512).
    assert large["rise_mb"] < 1.25 * small["rise_mb"] + 16, (small, large)


def test_no_model_call_or_image_measure_sees_more_than_one_chunk_and_chunks_change_no_result(tiny_runs, monkeypatch):
    """Whatever the number of layouts, pairs and frames, every encode, decode and SSIM call gets at
    most ``chunk`` images (here 2, from ``chunk_pixels``); and every measure but the noise draws
    (drawn chunk by chunk) comes out as when everything is measured in one chunk."""
    seen = []
    load_model = study_module.load_model

    def spying_load_model(*args, **kwargs):
        cfg, model, rest = load_model(*args, **kwargs)
        for name in ("posterior", "encode", "decode"):
            method = getattr(model, name)
            monkeypatch.setattr(
                model, name, lambda x, method=method, name=name: seen.append((name, len(x))) or method(x)
            )
        return cfg, model, rest

    ssim = study_module.m.ssim_per_image
    monkeypatch.setattr(study_module, "load_model", spying_load_model)
    monkeypatch.setattr(study_module.m, "ssim_per_image", lambda p, t: seen.append(("ssim", len(p))) or ssim(p, t))
    runs, _ = load_runs(Outputs(tiny_runs, PHASE), [V1_NAME, V2_NAME])
    arms = {"V1": [runs[0]], "V2": [runs[1]]}
    resolution = runs[0].config.data.resolution
    settings = AnalysisSettings(
        max_images=12, device="cpu", pairs_per_kind=2, steps=7, neighbour_pool=10, scorer=False, batch_size=64
    )
    chunked = run_study(arms, tiny_runs, replace(settings, chunk_pixels=2 * resolution**2 + 1), log=lambda _: None)
    assert chunked.chunk == 2
    assert {name for name, _ in seen} == {"posterior", "encode", "decode", "ssim"}
    assert max(size for _, size in seen) == 2, sorted(set(seen))
    monkeypatch.undo()
    whole = run_study(arms, tiny_runs, replace(settings, chunk_pixels=64 * resolution**2), log=lambda _: None)
    assert whole.chunk >= max(len(whole.positions), 7)  # one chunk: all layouts, all frames of a path
    for a, b in zip(chunked.models, whole.models):
        for key, values in b.per_image.items():
            if "sigma" not in key:
                assert np.allclose(a.per_image[key], values, rtol=1e-5, atol=1e-6), key
        for label, frames in b.frames.items():  # the explorer's frames: every pair's whole path
            assert len(frames) == 7 and np.abs(a.frames[label].astype(int) - frames).max() <= 1, label
        assert np.abs(a.examples["rgb"].astype(int) - b.examples["rgb"]).max() <= 1
        for pa, pb in zip(a.metrics["interpolation"]["pairs"], b.metrics["interpolation"]["pairs"]):
            for key in ("validity", "gradualness", "relative_purity", "mean_confidence", "path_length_ratio"):
                assert pa[key] == pytest.approx(pb[key], rel=1e-4, abs=1e-6), key
