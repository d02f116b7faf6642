"""The interpolation explorer's widgets; test_report.py drives the static one in a browser."""

import ipywidgets as w
import pytest

from imginav_core.analysis.study import AnalysisSettings, run_study
from imginav_core.analysis.runs import load_runs
from imginav_core.outputs import Outputs
from imginav_core.analysis.widgets import frames_explorer, live_explorer

from helpers import PHASE, V1_NAME, V2_NAME


@pytest.fixture(scope="module")
def study_and_runs(tiny_runs):
    runs, _ = load_runs(Outputs(tiny_runs, PHASE), [V1_NAME, V2_NAME])
    settings = AnalysisSettings(max_images=12, device="cpu", pairs_per_kind=1, steps=5)
    return run_study(runs, tiny_runs, settings, log=lambda _: None), runs


def _find(widget, kind):
    found = [widget] if isinstance(widget, kind) else []
    for child in getattr(widget, "children", ()):
        found += _find(child, kind)
    return found


def test_the_static_explorer_links_one_slider_to_every_models_frames(study_and_runs):
    study, _ = study_and_runs
    explorer = frames_explorer(study)
    chooser, alpha, pairs = explorer.children
    assert list(chooser.options) == [p.label for p in study.pairs] and len(pairs.children) == len(study.pairs)
    assert list(alpha.options) == [f"{a:.2f}" for a in study.alphas]
    frame_stacks = [s for s in _find(pairs, w.Stack) if s is not pairs]
    assert len(frame_stacks) == 2 * len(study.pairs)  # V1 and V2 for every pair
    assert all(len(s.children) == len(study.alphas) for s in frame_stacks)
    # the browser-side links (slider -> frames, chooser -> pair) are driven in test_report.py


def test_the_live_explorer_decodes_the_chosen_alpha(study_and_runs):
    study, runs = study_and_runs
    explorer = live_explorer(runs, study, device="cpu", steps=5)
    chooser, alpha, row, numbers = explorer.children
    images = _find(row, w.Image)
    assert len(images) == 2 and "path-length ratio" in numbers.value
    before = [image.value for image in images]
    alpha.value = 1.0
    after = [image.value for image in images]
    assert all(a != b for a, b in zip(before, after))
    alpha.value = 0.5
    assert [image.value for image in images] == before  # the same alpha decodes the same frame
