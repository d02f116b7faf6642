"""The interpolation explorers' widgets, as a reader meets them; test_report.py drives the static
one in a browser. Also the analysis's progress display, measured on the same study."""

import contextlib
import copy
import dataclasses
import io
import re

import ipywidgets as w
import numpy as np
import pytest
import torch
from helpers import PHASE, V1_NAME, V2_NAME

from imginav_core.data.manifest import LayoutRecord
from imginav_core.outputs import Outputs
from imginav_core.study.analysis.plots import layout_name, pair_title, short_id
from imginav_core.study.analysis.study import AnalysisSettings, measure_model, run_study, work_chunks
from imginav_core.study.analysis.widgets import (
    COLUMNS,
    VISIBLE_RING,
    display_px,
    edge_ring,
    frames_explorer,
    live_explorer,
    pair_numbers,
    ring_caption,
    scale_note,
    scale_shortfalls,
    start_index,
)
from imginav_core.study.runs import load_runs
from imginav_core.training.checkpoints import load_checkpoint

SETTINGS = AnalysisSettings(max_images=24, device="cpu", pairs_per_kind=2, steps=5, neighbour_pool=20)


@pytest.fixture(scope="module")
def runs(tiny_runs):
    found, _ = load_runs(Outputs(tiny_runs, PHASE), [V1_NAME, V2_NAME])
    return {"V1": [found[0]], "V2": [found[1]]}


@pytest.fixture(scope="module")
def measured(runs, tiny_runs):
    """The study, and what it printed while measuring (as a batch job's log would hold it)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        study = run_study(runs, tiny_runs, SETTINGS, log=lambda _: None)
    return study, printed.getvalue()


@pytest.fixture(scope="module")
def study(measured):
    return measured[0]


def _find(widget, kind):
    found = [widget] if isinstance(widget, kind) else []
    for child in getattr(widget, "children", ()):
        found += _find(child, kind)
    return found


def _one(widget, kind):
    (found,) = _find(widget, kind)
    return found


def _study_numbers(study, label):
    """Each arm's mean purity and path-length ratio of a pair, as the study wrote them."""
    return [
        f"{p[key]:.3f}"
        for arm in ("V1", "V2")
        for p in study.shown(arm).metrics["interpolation"]["pairs"]
        if p["pair"] == label
        for key in ("mean_purity", "path_length_ratio")
    ]


def _sizes(images):
    return {(image.layout.width, image.layout.height) for image in images}


def test_the_static_explorer_links_one_slider_to_every_arms_frames(study):
    explorer = frames_explorer(study)
    chooser, alpha = _one(explorer, w.Dropdown), _one(explorer, w.SelectionSlider)
    pairs = next(s for s in _find(explorer, w.Stack) if "imginav-pairs" in s._dom_classes)
    assert any("pixelated" in h.value for h in _find(explorer, w.HTML))  # sharp layouts in JupyterLab too
    assert [value for _, value in chooser.options] == [p.label for p in study.pairs]  # the study's own labels
    assert chooser.layout.width == "auto"  # long pair labels fit
    assert list(alpha.options) == [f"{a:.2f}" for a in study.alphas]
    frame_stacks = [s for s in _find(pairs, w.Stack) if s is not pairs]
    assert len(frame_stacks) == 2 * len(study.pairs)  # V1 and V2 for every pair
    assert all(len(s.children) == len(study.alphas) for s in frame_stacks)
    for view, pair in zip(pairs.children, study.pairs):  # each pair's view carries its own numbers
        table = _find(view, w.HTML)[-1].value
        assert all(number in table for number in _study_numbers(study, pair.label))


def test_pairs_are_named_as_a_reader_names_layouts(study):
    explorer = frames_explorer(study)
    shown = [title for title, _ in _one(explorer, w.Dropdown).options]
    assert shown == [pair_title(study, i) for i in range(len(study.pairs))]
    for number, (title, pair) in enumerate(zip(shown, study.pairs), 1):
        assert title.startswith(f"{number}. ") and " → " in title
        assert "_" not in title and ".png" not in title  # no file names
        records = study.layouts.cache.records
        a, b = (records[study.layouts.indices[p]] for p in (pair.a, pair.b))
        assert title == f"{number}. {layout_name(a)} → {layout_name(b)}"
        for record in (a, b):
            assert f"scene {short_id(record.scene_id)}" in title
            assert (f"room {record.room_id} of scene" in title) == (record.type == "room")


def test_layout_names_are_short_and_tell_rooms_from_scenes(tmp_path):
    uuid = "0003d406-5f27-4bbf-94cd-1cff7c310f1e"
    room = LayoutRecord(2, uuid, "room", "MasterBedroom-2679", tmp_path / "a.png", False)
    scene = LayoutRecord(3, uuid, "scene", "scene", tmp_path / "b.png", False)
    unnamed = LayoutRecord(4, "", "room", "1", tmp_path / "kitchen_7.png", False)
    assert layout_name(room) == "room MasterBedroom-2679 of scene 0003d406"
    assert layout_name(scene) == "scene 0003d406"
    assert layout_name(unnamed) == "room kitchen_7"


def test_both_explorers_open_on_the_same_alpha_and_show_frames_at_the_size_of_A_and_B(study):
    static, live = frames_explorer(study), live_explorer(study, device="cpu")
    first = start_index(study.alphas)
    assert study.alphas[first] == 0.5
    assert _one(static, w.SelectionSlider).index == first
    assert _one(live, w.FloatSlider).value == study.alphas[first]
    frame_px = study.pair_inputs[study.pairs[0].label].shape[1]
    px = display_px(frame_px)
    assert px % frame_px == 0 and px >= 256  # enlarged by a whole factor: every pixel a square
    for explorer in (static, live):
        images = _find(explorer, w.Image)
        assert _sizes(images) == {(f"{px}px", f"{px}px")}  # ends and decoded frames alike
    stacks = [s for s in _find(static, w.Stack) if "imginav-stack-V1" in s._dom_classes]
    assert all(s.selected_index == first for s in stacks)


def test_the_decoded_frames_are_shown_pixel_for_pixel(study):
    """The explorer shows the study's frames as decoded: no resampling or border of its own."""
    explorer = frames_explorer(study)
    label = study.pairs[0].label
    stack = next(s for s in _find(explorer, w.Stack) if "imginav-stack-V2" in s._dom_classes)
    from PIL import Image

    shown = [np.asarray(Image.open(io.BytesIO(image.value)).convert("RGB")) for image in stack.children]
    assert all(np.array_equal(a, b) for a, b in zip(shown, study.shown("V2").frames[label]))


def test_the_numbers_table_is_aligned_and_says_what_each_column_means(study):
    table = pair_numbers(study, study.pairs[0].label)
    headers = re.findall(r"<th title='([^']+)'>([^<]+)</th>", table)
    assert [name for _, name in headers] == [name for _, name, _ in COLUMNS]
    assert all(len(meaning) > 20 for meaning, _ in headers)  # a tooltip on every measure
    assert "<th class='run'>V1 seed" in table and "<th class='run'>V2 seed" in table
    style = next(h.value for h in _find(frames_explorer(study), w.HTML) if "<style>" in h.value)
    assert "white-space: nowrap" in style and "text-align: right" in style  # no "V1 seed 42" over two lines
    assert "display: table" in style  # not the book's scrolling block for wide tables
    assert re.search(r"font-size: 1[3-9]px", style)  # readable at report size


def _with_realism(study, values):
    """A copy of the study whose shown runs' first pair has these scorer shares."""
    changed = copy.copy(study)
    changed.models = []
    label = study.pairs[0].label
    for result, value in zip((study.shown("V1"), study.shown("V2")), values):
        metrics = copy.deepcopy(result.metrics)
        for pair in metrics["interpolation"]["pairs"]:
            if pair["pair"] == label:
                pair["mean_realism"] = value
        changed.models.append(dataclasses.replace(result, metrics=metrics))
    return changed, label


def test_a_scorer_column_of_zeros_is_explained_and_only_then(study):
    zeros, label = _with_realism(study, [0.0, 0.0])
    assert "none of their in-between frames falls inside a real layout's neighbourhood" in pair_numbers(zeros, label)
    some, label = _with_realism(study, [0.0, 0.25])  # one model's frames pass: no blanket explanation
    text = pair_numbers(some, label)
    assert "none of their in-between frames" not in text and "<td>0.25</td>" in text


def test_the_numbers_follow_the_chosen_pair_in_the_live_explorer(study):
    assert len(study.pairs) >= 2
    explorer = live_explorer(study, device="cpu")
    chooser = _one(explorer, w.Dropdown)
    numbers = next(h for h in _find(explorer, w.HTML) if h.value.startswith("<table class='imginav-pair-numbers'"))
    first, second = (p.label for p in study.pairs[:2])
    ends = lambda: [image.value for image in _find(explorer, w.Image)[:2]]  # noqa: E731
    assert numbers.value == pair_numbers(study, first)
    ends_first = ends()
    chooser.value = second
    assert numbers.value == pair_numbers(study, second) != pair_numbers(study, first)
    assert ends() != ends_first
    chooser.value = first  # back to a pair viewed before: its numbers again, not the last pair's
    assert numbers.value == pair_numbers(study, first)
    assert all(number in numbers.value for number in _study_numbers(study, first))


def test_the_live_explorer_decodes_the_chosen_alpha_at_the_precomputed_frames_size(study):
    explorer = live_explorer(study, device="cpu")
    alpha = _one(explorer, w.FloatSlider)
    decoded = _find(explorer, w.Image)[2:]
    before = [image.value for image in decoded]
    alpha.value = 1.0
    assert all(a != b for a, b in zip(before, [image.value for image in decoded]))
    alpha.value = 0.5
    assert [image.value for image in decoded] == before  # the same alpha decodes the same frame
    from PIL import Image

    frame = np.asarray(Image.open(io.BytesIO(decoded[0].value)))
    assert frame.shape[:2] == study.shown("V1").frames[study.pairs[0].label].shape[1:3]


# ---- the notes beside the explorers ---------------------------------------------------------


def test_a_demo_sized_study_says_so_beside_both_explorers(study):
    note = scale_note(study)
    resolution = study.data.cache.resolution
    assert "Demo-sized models" in note
    assert f"{resolution} x {resolution} pixels" in note and f"{len(study.data.train)} training layouts" in note
    for arm in ("V1", "V2"):  # the epoch of the weights shown
        shown = study.shown(arm)
        assert f"epoch {load_checkpoint(shown.checkpoint)['epoch']} ({arm} seed {shown.seed})" in note
    for explorer in (frames_explorer(study), live_explorer(study, device="cpu")):
        assert any(h.value == note for h in _find(explorer, w.HTML))
    # under the static explorer (the analysis notebook) the live one leaves the notes to it: one banner
    quiet = live_explorer(study, device="cpu", notes=False)
    assert not any("Demo-sized" in h.value for h in _find(quiet, w.HTML))


def test_the_size_limits_are_the_decisions_own():
    assert scale_shortfalls(512, 19_000, 10) == []
    assert scale_shortfalls(256, 5_000, 5) == []  # at the limits: enough
    short = scale_shortfalls(64, 236, 20)
    assert len(short) == 2 and "64 x 64 pixels (at least 256)" in short[0] and "236 training layouts" in short[1]
    assert scale_shortfalls(512, 19_000, 4) == ["4 epochs of training (at least 5)"]


def _with_frames(study, make):
    """A copy of the study whose shown runs' frames are ``make(frames, inputs)`` per pair."""
    changed = copy.copy(study)
    changed.models = [
        dataclasses.replace(
            r,
            frames={
                p.label: make(r.frames[p.label].copy(), study.pair_inputs[p.label].astype(np.int16))
                for p in study.pairs
            },
        )
        for r in (study.shown("V1"), study.shown("V2"))
    ]
    return changed


def _ends_as(inputs, frames):
    frames[0], frames[-1] = inputs[0], inputs[1]
    return frames


def test_a_ring_along_the_decoded_edge_is_named_as_the_networks_and_nothing_else_is(study):
    def ringed(frames, inputs):
        frames = _ends_as(inputs, frames)
        frames[:, 0, :], frames[:, -1, :], frames[:, :, 0], frames[:, :, -1] = 90, 90, 90, 90
        return frames

    def blurred_everywhere(frames, inputs):  # as far off at the edge as inside: no ring
        return _ends_as(np.clip(inputs + 60, 0, 255).astype(np.uint8), frames)

    def exact(frames, inputs):
        return _ends_as(inputs.astype(np.uint8), frames)

    rings = edge_ring(_with_frames(study, ringed))
    assert all(r.edge > 0.2 and r.inside == 0 for r in rings)
    caption = ring_caption(_with_frames(study, ringed))
    assert "comes from the network" in caption and "zeros" in caption and "transposed convolutions" in caption
    assert ring_caption(_with_frames(study, blurred_everywhere)) == ""
    assert ring_caption(_with_frames(study, exact)) == ""


@pytest.mark.parametrize("levels,captioned", [(5, False), (6, True), (8, True)])
def test_a_ring_is_captioned_from_the_contrast_at_which_it_is_seen(study, levels, captioned):
    """A ring darker than the layout by 6 levels of 255 is seen on screen at the explorer's size
    (widgets.VISIBLE_RING says how that was found); 5 levels are not. On frames blurred everywhere
    (every pixel darker by 40 levels), a ring is judged against what lies just inside it."""

    def ringed(frames, inputs):
        ends = inputs - 40  # off everywhere alike ...
        for end in ends:  # ... and its outermost pixels darker still
            for edge in (end[0, :], end[-1, :], end[1:-1, 0], end[1:-1, -1]):
                edge -= levels
        return _ends_as(np.clip(ends, 0, 255).astype(np.uint8), frames)

    assert VISIBLE_RING == 6 / 255
    changed = _with_frames(study, ringed)
    assert all(r.edge - r.inside == pytest.approx(levels / 255, abs=0.004) for r in edge_ring(changed))
    assert (ring_caption(changed) != "") == captioned


# ---- the analysis's progress display --------------------------------------------------------


def test_measuring_a_run_moves_its_progress_bar_exactly_to_its_end(study, runs):
    moved = []
    measure_model(runs["V1"][0], "V1", study, torch.device("cpu"), moved.append)
    assert sum(moved) == work_chunks(study) and set(moved) == {1}


def test_in_a_batch_log_measuring_prints_a_few_lines_a_run_ending_at_its_total(measured):
    study, printed = measured
    total = work_chunks(study)
    for run in study.models:
        lines = [line for line in printed.splitlines() if line.startswith(f"measuring {run.name}:")]
        assert 1 <= len(lines) <= 5, lines  # compact: about four, never a redraw per chunk
        assert f"{total}/{total}" in lines[-1]
    assert "\r" not in printed


def test_the_reconstruction_figure_labels_each_row_by_the_type_of_the_test_layout_it_shows(study):
    """Each row of the reconstruction figure says whether its layout is a room or a scene: the type
    of that test layout (the examples come from the evaluation split, not validation)."""
    from imginav_core.study.analysis.plots import reconstructions

    fig = reconstructions(study)
    columns = fig.axes[0].get_gridspec().ncols
    shown = [ax.get_ylabel() for ax in fig.axes[::columns]]
    types = study.layouts.types[study.example_positions]
    assert shown == ["room" if t == 0 else "scene" for t in types]
    assert {"room", "scene"} <= set(shown)  # the figure shows both kinds (3 of each where there are)
    # the first column is those layouts themselves
    assert np.array_equal(fig.axes[0].images[0].get_array(), study.inputs[0])
