"""The KL sweep's rate-distortion figure: each weight's mean over seeds, the seeds' spread as error bars."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
from helpers import V2

from imginav_core import load_config
from imginav_core.analysis.plots import rate_distortion
from imginav_core.analysis.runs import RunSummary, finished_sweep_runs
from imginav_core.outputs import Outputs

matplotlib.use("Agg")


def _run(kl, mse, seed):
    cfg = load_config(V2, {"training.seed": seed})
    metrics = pd.DataFrame(
        {"epoch": [1, 2], "is_best": [0, 1], "status": ["completed"] * 2, "val_kld": [9.0, kl], "val_mse": [1.0, mse]}
    )
    return RunSummary(f"sweep_{kl}_{seed}", cfg.outputs, cfg, metrics, "completed", "")


def test_each_weight_is_one_point_at_its_seeds_mean_with_their_spread():
    points = {1e-4: [_run(2.0, 0.010, 1), _run(4.0, 0.014, 2)], 1e-3: [_run(0.5, 0.030, 1)]}
    fig = rate_distortion(points)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(bars) == 2
    centres = sorted((float(b.lines[0].get_xdata()[0]), float(b.lines[0].get_ydata()[0])) for b in bars)
    assert centres == [pytest.approx((0.5, 0.030)), pytest.approx((3.0, 0.012))]
    # the two-seed point's vertical bar spans the seeds' standard deviation around the mean
    two = next(b for b in bars if float(b.lines[0].get_xdata()[0]) == pytest.approx(3.0))
    segments = [seg for collection in two.lines[2] for seg in collection.get_segments()]
    vertical = next(seg for seg in segments if seg[0][0] == seg[1][0])
    assert sorted([vertical[0][1], vertical[1][1]]) == pytest.approx(
        [0.012 - np.std([0.010, 0.014], ddof=1), 0.012 + np.std([0.010, 0.014], ddof=1)]
    )


def test_runs_never_trained_are_left_out(tmp_path):
    assert finished_sweep_runs(Outputs(tmp_path, "phase"), {0.0: ["not_trained_seed42"]}) == {}
