"""The interpolation explorers' widgets; test_report.py drives the static one in a browser."""

import ipywidgets as w
import pytest
from helpers import PHASE, V1_NAME, V2_NAME

from imginav_core.analysis.runs import load_runs
from imginav_core.analysis.study import AnalysisSettings, run_study
from imginav_core.analysis.widgets import frames_explorer, live_explorer, pair_numbers
from imginav_core.outputs import Outputs


@pytest.fixture(scope="module")
def study(tiny_runs):
    runs, _ = load_runs(Outputs(tiny_runs, PHASE), [V1_NAME, V2_NAME])
    settings = AnalysisSettings(max_images=24, device="cpu", pairs_per_kind=2, steps=5, neighbour_pool=20)
    return run_study({"V1": [runs[0]], "V2": [runs[1]]}, tiny_runs, settings, log=lambda _: None)


def _find(widget, kind):
    found = [widget] if isinstance(widget, kind) else []
    for child in getattr(widget, "children", ()):
        found += _find(child, kind)
    return found


def _study_numbers(study, label):
    """Each arm's (mean purity, worst purity, confidence, length ratio) of a pair, as the study wrote them."""
    return [
        f"{p['mean_purity']:.3f}"
        for arm in ("V1", "V2")
        for p in study.shown(arm).metrics["interpolation"]["pairs"]
        if p["pair"] == label
    ]


def test_the_static_explorer_links_one_slider_to_every_arms_frames(study):
    explorer = frames_explorer(study)
    style, chooser, alpha, pairs = explorer.children
    assert "pixelated" in style.value  # sharp layouts in JupyterLab too, not only in the book
    assert list(chooser.options) == [p.label for p in study.pairs] and len(pairs.children) == len(study.pairs)
    assert chooser.layout.width == "auto"  # long pair labels fit
    assert list(alpha.options) == [f"{a:.2f}" for a in study.alphas]
    frame_stacks = [s for s in _find(pairs, w.Stack) if s is not pairs]
    assert len(frame_stacks) == 2 * len(study.pairs)  # V1 and V2 for every pair
    assert all(len(s.children) == len(study.alphas) for s in frame_stacks)
    for view, pair in zip(pairs.children, study.pairs):  # each pair's view carries its own numbers
        table = _find(view, w.HTML)[-1].value
        assert all(number in table for number in _study_numbers(study, pair.label))


def test_the_live_explorer_shows_the_study_numbers_of_the_pair_on_screen(study):
    assert len(study.pairs) >= 2
    explorer = live_explorer(study, device="cpu")
    _, chooser, alpha, row, numbers = explorer.children
    images = _find(row, w.Image)
    assert len(images) == 4  # A, B, V1 decoded, V2 decoded
    first, second = (p.label for p in study.pairs[:2])
    assert numbers.value == pair_numbers(study, first)
    ends_first = [image.value for image in images[:2]]
    chooser.value = second
    assert numbers.value == pair_numbers(study, second) != pair_numbers(study, first)
    assert [image.value for image in _find(row, w.Image)[:2]] != ends_first
    chooser.value = first  # back to a pair viewed before: its numbers again, not the last pair's
    assert numbers.value == pair_numbers(study, first)
    assert all(number in numbers.value for number in _study_numbers(study, first))


def test_the_live_explorer_decodes_the_chosen_alpha(study):
    explorer = live_explorer(study, device="cpu")
    _, chooser, alpha, row, _ = explorer.children
    decoded = _find(row, w.Image)[2:]
    before = [image.value for image in decoded]
    alpha.value = 1.0
    assert all(a != b for a, b in zip(before, [image.value for image in decoded]))
    alpha.value = 0.5
    assert [image.value for image in decoded] == before  # the same alpha decodes the same frame
