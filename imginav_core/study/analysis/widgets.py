"""The latent interpolation explorers.

``frames_explorer`` shows precomputed frames: a pair chooser and an alpha slider are linked to
``Stack`` widgets on the browser side (``jslink``), so it works in Jupyter and equally in the
published HTML report, where no kernel runs. ``live_explorer`` decodes any alpha on the fly with
the models and needs a running kernel (interactive Jupyter). Both show, for the pair on screen,
the study's own numbers of that pair (the same path, the same frames the decision used), so the
two can never disagree; both start at the same alpha and show the decoded frames at the size of
the two layouts they lie between, enlarged by a whole factor so that every pixel stays square.

What a reader needs beside the frames comes with them: a note when the models are too small for
their frames to mean much (below the decision's own data limits), each measure's meaning (the
column names' tooltips and a caption), why the scorer's column reads 0 when it does, and, when
the decoded frames carry a ring along their edge, where it comes from: the network, whose
decoder pads its convolutions with zeros and whose transposed convolutions get half their inputs
at the border, not this display (``edge_ring`` measures it).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as w
import numpy as np
import torch

from ...images import png_bytes
from ...training.checkpoints import load_checkpoint, load_model
from .criteria import Rule
from .measures import lerp
from .plots import pair_title
from .study import ModelResult, Study, _frames_uint8

# The frames are enlarged to about this many pixels, by a whole factor (64 -> 256, 128 -> 256).
TARGET_PX = 256
START_ALPHA = 0.5  # both explorers open on the midpoint: what lies between the two layouts
# The edge error above the error just inside it (``edge_ring``, mean |decoded - input| in [0, 1]
# intensity) from which a ring along a decoded frame's edge is visible on screen. Found on constructed
# frames (64 x 64 layouts: background 240 grey, walls, furniture; the outermost pixels darker by d
# levels of 255, nothing else changed, so the measure is d / 255) shown as the explorer shows them
# (256 x 256 px, pixelated, on the report's white page, in Chromium at 1280 x 900), judged by eye in
# shuffled order without knowing d: d = 0 to 5 (0 to 0.020) were judged no better than chance (a ring
# "seen" at d = 0 twice, missed at 5), d = 6 to 8 (0.024 to 0.031) seen as a faint ring every time,
# d = 10 and more (0.039) plainly. 6 / 255 is also about where the colour difference reaches
# a just-noticeable difference (CIE76 delta E 2.1 between 240 and 234 grey).
VISIBLE_RING = 6 / 255
RULE = Rule()  # the decision's rule, whose data limits say when models are demo-sized
# Travels with the widget, so JupyterLab shows it as the book does: enlarged small layouts keep hard
# class edges instead of a browser blur; the numbers table stays a table (the book's stylesheet lets
# wide output tables scroll and their words break anywhere), aligned and readable.
STYLE = """<style>
.imginav-frame, .imginav-frame img { image-rendering: pixelated; }
.imginav-explorer table.imginav-pair-numbers { display: table; border-collapse: collapse; font-size: 14px;
  margin: 8px 0 4px 0; }
.imginav-explorer table.imginav-pair-numbers th, .imginav-explorer table.imginav-pair-numbers td {
  white-space: nowrap; overflow-wrap: normal; padding: 3px 10px; text-align: right;
  font-variant-numeric: tabular-nums; }
.imginav-explorer table.imginav-pair-numbers .run { text-align: left; }
.imginav-explorer table.imginav-pair-numbers thead th { border-bottom: 1px solid #999; }
.imginav-explorer table.imginav-pair-numbers th[title] { text-decoration: underline dotted; cursor: help; }
.imginav-explorer .imginav-caption { font-size: 13px; line-height: 1.45; max-width: 680px; }
.imginav-explorer .imginav-note { font-size: 14px; line-height: 1.45; max-width: 680px; padding: 6px 10px;
  border-left: 4px solid #e6a700; background: #fff8e1; }
</style>"""

# The columns of a pair's numbers: (key in the study's pair record, short name, meaning).
COLUMNS = (
    (
        "validity",
        "validity",
        "path validity = relative purity x gradualness: 1 when the in-between frames are as clean as the "
        "two ends and the change from A to B is spread evenly",
    ),
    (
        "gradualness",
        "gradual",
        "gradualness: the change from A to B over (steps x the largest single step); 1 = spread evenly, "
        "1/steps = one jump",
    ),
    ("mean_purity", "purity", "palette purity of the inner frames, mean: the share of pixels near a palette colour"),
    ("min_purity", "worst", "palette purity of the worst inner frame"),
    ("mean_confidence", "seg. conf.", "the segmentation head's mean top probability on the inner frames"),
    (
        "mean_realism",
        "real",
        "the share of inner frames the layout scorer takes for real layouts: inside a real layout's "
        "neighbourhood (its k-NN ball) in the scorer's feature space",
    ),
    (
        "path_length_ratio",
        "length",
        "path-length ratio: how far the frames travel over the distance between the ends; a description, "
        "not a quality (a cross-fade scores 1)",
    ),
)


def display_px(frame_px: int) -> int:
    """The size frames of ``frame_px`` pixels are shown at: a whole multiple, about ``TARGET_PX``."""
    return frame_px * max(1, TARGET_PX // frame_px)


def start_index(alphas: list[float]) -> int:
    """The alpha both explorers open on: the one nearest ``START_ALPHA``."""
    return int(np.argmin([abs(a - START_ALPHA) for a in alphas]))


def _image(array: np.ndarray, px: int) -> w.Image:
    return w.Image(
        value=png_bytes(array), format="png", width=px, height=px, layout=w.Layout(width=f"{px}px", height=f"{px}px")
    ).add_class("imginav-frame")


def _framed(title: str, content: w.Widget, px: int) -> w.VBox:
    """A frame with its title above it, never squeezed narrower than the frame (a narrow page
    wraps the row instead)."""
    return w.VBox([w.HTML(title), content], layout=w.Layout(width=f"{px + 8}px", flex="0 0 auto", margin="0 4px 4px 0"))


def _group(frames: list[w.Widget]) -> w.HBox:
    """Frames that stay side by side (the two ends; the arms' decoded frames)."""
    return w.HBox(frames, layout=w.Layout(flex_flow="row nowrap", flex="0 0 auto"))


def _row(ends: w.Widget, decoded: w.Widget) -> w.HBox:
    """The ends, then the decoded frames beside them where the page is wide enough, else below them:
    a narrow page moves the decoded frames together, never one arm's under the other's."""
    return w.HBox([ends, decoded], layout=w.Layout(flex_flow="row wrap"))


def _chooser(study: Study) -> w.Dropdown:
    # Shown: the pair's number and its layouts as a reader names them; the value: the study's label.
    # Width "auto": a <select> as wide as its longest label, so none is cut.
    return w.Dropdown(
        options=[(pair_title(study, i), p.label) for i, p in enumerate(study.pairs)],
        index=0,
        description="pair",
        style={"description_width": "initial"},
        layout=w.Layout(width="auto", min_width="480px"),
    )


# ---- the notes beside the frames ---------------------------------------------------------------


def scale_shortfalls(resolution: int, train_layouts: int, epochs: int, rule: Rule = RULE) -> list[str]:
    """What falls short of the decision's data limits (``Rule.min_resolution``, ``min_train_images``,
    ``min_epochs``), as words; empty for models of a real study's size."""
    short = []
    if resolution < rule.min_resolution:
        short.append(f"{resolution} x {resolution} pixels (at least {rule.min_resolution})")
    if train_layouts < rule.min_train_images:
        short.append(f"{train_layouts:,} training layouts (at least {rule.min_train_images:,})")
    if epochs < rule.min_epochs:
        short.append(f"{epochs} epochs of training (at least {rule.min_epochs})")
    return short


@dataclass
class ShownWeights:
    run: str  # "V1 seed 42"
    epoch: int  # the epoch whose weights the explorer shows (the run's best)


def shown_weights(study: Study) -> list[ShownWeights]:
    """Each arm's shown run and the epoch of its weights (from its checkpoint)."""
    shown = []
    for arm in study.labels:
        result = study.shown(arm)
        epoch = int(load_checkpoint(result.checkpoint)["epoch"]) if result.checkpoint else 0
        shown.append(ShownWeights(f"{arm} seed {result.seed}", epoch))
    return shown


def scale_note(study: Study, rule: Rule = RULE) -> str:
    """HTML: a warning that the models shown are demo-sized, or "" when they are not."""
    resolution, train_layouts = study.data.cache.resolution, len(study.data.train)
    weights = shown_weights(study)
    short = scale_shortfalls(resolution, train_layouts, min(s.epoch for s in weights), rule)
    if not short:
        return ""
    epochs = ", ".join(f"epoch {s.epoch} ({s.run})" for s in weights)
    return (
        "<div class='imginav-note'><b>Demo-sized models.</b> Trained at "
        f"{resolution} x {resolution} pixels on {train_layouts:,} training layouts; the weights shown are "
        f"from {epochs}. Below the decision's data limits: {'; '.join(short)}. Frames from models this small "
        "show that the pipeline runs, not what the study's networks decode: blurred, off-colour layouts "
        "are what such models make, whatever their latent space.</div>"
    )


@dataclass
class EdgeRing:
    run: str  # "V1 seed 42"
    edge: float  # mean |decoded - input| on the outermost pixel ring, in [0, 1] intensity
    inside: float  # the same on the two rings just inside it


def edge_ring(study: Study) -> list[EdgeRing]:
    """How far each arm's decoded ends (alpha 0 and 1: the reconstructions of A and B) differ from
    the layouts themselves on the outermost pixels and just inside them, over every pair: a ring
    that is the decoder's shows as an edge error well above the inside's."""
    found = []
    for arm in study.labels:
        result = study.shown(arm)
        edge, inside = [], []
        for pair in study.pairs:
            decoded = result.frames[pair.label][[0, -1]].astype(np.float64) / 255
            error = np.abs(decoded - study.pair_inputs[pair.label].astype(np.float64) / 255).mean(-1)
            ring = _ring_distance(error.shape[-1])
            edge.append(error[:, ring == 0].mean())
            inside.append(error[:, (ring >= 1) & (ring <= 2)].mean())
        found.append(EdgeRing(f"{arm} seed {result.seed}", float(np.mean(edge)), float(np.mean(inside))))
    return found


def _ring_distance(size: int) -> np.ndarray:
    """(size, size): each pixel's distance in pixels to the nearest edge of the frame."""
    index = np.arange(size)
    to_edge = np.minimum(index, size - 1 - index)
    return np.minimum(to_edge[:, None], to_edge[None, :])


def ring_visible(ring: EdgeRing) -> bool:
    """Whether a run's ring would be seen: its edge error exceeds the error just inside it by at
    least ``VISIBLE_RING`` (what stands out on screen is the edge against its neighbours, so a frame
    blurred everywhere alike has no ring however large its error)."""
    return ring.edge - ring.inside >= VISIBLE_RING


def ring_caption(study: Study) -> str:
    """HTML: where the ring along the decoded frames' edge comes from, whenever one is visible
    (``ring_visible``); "" otherwise."""
    rings = edge_ring(study)
    if not any(ring_visible(r) for r in rings):
        return ""
    figures = "; ".join(f"{r.run} {r.edge:.3f} on the outermost pixels, {r.inside:.3f} just inside" for r in rings)
    return (
        "<p class='imginav-caption'><b>The thin ring along the decoded frames' edge</b> comes from the network, "
        "not from this display: the layouts are plain background there, but the decoder pads its convolutions "
        "with zeros and its transposed convolutions get half their inputs at the border, so its outermost "
        f"pixels decode off-colour (mean error of the reconstructed ends: {figures}). The frames are shown "
        "pixel for pixel as decoded.</p>"
    )


# ---- one pair's numbers ------------------------------------------------------------------------


def _pair_record(result: ModelResult, label: str) -> dict:
    return next(p for p in result.metrics["interpolation"]["pairs"] if p["pair"] == label)


def _cell(record: dict, key: str) -> str:
    if key not in record:
        return "—"
    return f"{record[key]:.2f}" if key == "mean_realism" else f"{record[key]:.3f}"


def _realism_words(records: list[dict]) -> str:
    if not all("mean_realism" in r for r in records):
        return " <i>real</i>: — where the layout scorer did not run."
    if all(r["mean_realism"] == 0 for r in records):
        return (
            " <i>real</i> is 0.00 for both models: none of their in-between frames falls inside a real "
            "layout's neighbourhood (the k-NN ball around each real layout in the scorer's feature space), "
            "so to the scorer none of them looks like a real layout."
        )
    return ""


def pair_numbers(study: Study, label: str) -> str:
    """The study's numbers of one pair for each arm's shown run (its first seed), as HTML: a table
    whose column names carry their meaning as a tooltip, and a caption."""
    results = [study.shown(arm) for arm in study.labels]
    records = [_pair_record(r, label) for r in results]
    head = "".join(f"<th title='{html.escape(meaning, quote=True)}'>{name}</th>" for _, name, meaning in COLUMNS)
    rows = "".join(
        f"<tr><th class='run'>{r.label} seed {r.seed}</th>"
        + "".join(f"<td>{_cell(record, key)}</td>" for key, _, _ in COLUMNS)
        + "</tr>"
        for r, record in zip(results, records)
    )
    caption = (
        "<p class='imginav-caption'>The study's numbers of this pair (inner frames: alpha strictly between 0 "
        "and 1). Point at a column's name for its meaning. Higher is better for <i>validity</i>, <i>gradual</i>, "
        "<i>purity</i>, <i>worst</i>, <i>seg. conf.</i> and <i>real</i>; <i>length</i> only describes the path."
        f"{_realism_words(records)}</p>"
    )
    return (
        f"<table class='imginav-pair-numbers'><thead><tr><th class='run'>run</th>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table>{caption}"
    )


# ---- the explorers -----------------------------------------------------------------------------


def _ends(study: Study, label: str, px: int) -> list[w.VBox]:
    ends = study.pair_inputs[label]
    return [
        _framed("<b>A</b> (alpha 0)", _image(ends[0], px), px),
        _framed("<b>B</b> (alpha 1)", _image(ends[1], px), px),
    ]


def _frame_px(study: Study) -> int:
    return int(next(iter(study.pair_inputs.values())).shape[1])


def _notes(study: Study) -> list[w.HTML]:
    return [w.HTML(STYLE), w.HTML(scale_note(study)).add_class("imginav-scale-note")]


def _ring(study: Study) -> list[w.HTML]:
    caption = ring_caption(study)
    return [w.HTML(caption)] if caption else []


def frames_explorer(study: Study) -> w.VBox:
    """Pick a pair, slide alpha: each arm's decoded frame beside the pair's two layouts, from
    precomputed frames."""
    labels = [p.label for p in study.pairs]
    px = display_px(_frame_px(study))
    first = start_index(study.alphas)
    alpha = w.SelectionSlider(
        options=[f"{a:.2f}" for a in study.alphas],
        value=f"{study.alphas[first]:.2f}",
        description="alpha",
        continuous_update=True,
        layout=w.Layout(width="480px"),
    )
    chooser = _chooser(study)
    views = []
    for label in labels:
        decoded = []
        for arm in study.labels:
            result = study.shown(arm)
            stack = w.Stack([_image(frame, px) for frame in result.frames[label]], selected_index=first)
            stack.add_class(f"imginav-stack-{arm}")
            w.jslink((alpha, "index"), (stack, "selected_index"))
            decoded.append(_framed(f"<b>{arm}</b> seed {result.seed} decoded", stack, px))
        row = _row(_group(_ends(study, label, px)), _group(decoded))
        views.append(w.VBox([row, w.HTML(pair_numbers(study, label))]))
    pairs = w.Stack(views, selected_index=0).add_class("imginav-pairs")
    w.jslink((chooser, "index"), (pairs, "selected_index"))
    return w.VBox([*_notes(study), chooser, alpha, pairs, *_ring(study)]).add_class("imginav-explorer")


def live_explorer(study: Study, device: str = "cpu", notes: bool = True) -> w.VBox:
    """Decode any alpha on demand (needs a kernel): choose a pair, drag alpha. The frames come from
    each arm's shown run, at the size of the precomputed ones; the numbers are the study's for
    the pair on screen. ``notes`` False: without the demo-size note and the ring's caption, for a
    page that shows them already (the analysis notebook, right under the static explorer's)."""
    models = {arm: load_model(study.shown(arm).checkpoint, device)[1] for arm in study.labels}
    labels = [p.label for p in study.pairs]
    frame_px = _frame_px(study)
    px = display_px(frame_px)
    chooser = _chooser(study)
    alpha = w.FloatSlider(
        value=study.alphas[start_index(study.alphas)],
        min=0.0,
        max=1.0,
        step=0.01,
        description="alpha",
        continuous_update=False,
        layout=w.Layout(width="480px"),
    )
    images = {arm: _image(np.zeros((frame_px, frame_px, 3), np.uint8), px) for arm in study.labels}
    ends = _group([])
    numbers = w.HTML()
    latents: dict[str, dict[str, torch.Tensor]] = {}

    def pair_latents(label: str) -> dict[str, torch.Tensor]:
        if label not in latents:
            x = study.pair_images(study.pairs[labels.index(label)], torch.device(device))
            with torch.no_grad():
                latents[label] = {arm: model.encode(x) for arm, model in models.items()}
        return latents[label]

    def show_pair(_change=None) -> None:
        # every pair change, first view or not, replaces the ends and the numbers
        ends.children = _ends(study, chooser.value, px)
        numbers.value = pair_numbers(study, chooser.value)
        redraw()

    def redraw(_change=None) -> None:
        z = pair_latents(chooser.value)
        a = torch.tensor([alpha.value])
        for arm, model in models.items():
            with torch.no_grad():
                frame = model.decode(lerp(z[arm][0], z[arm][1], a))["rgb"]
            images[arm].value = png_bytes(_frames_uint8(frame, frame_px)[0])

    chooser.observe(show_pair, "value")
    alpha.observe(redraw, "value")
    show_pair()
    decoded = [_framed(f"<b>{arm}</b> seed {study.shown(arm).seed} decoded", images[arm], px) for arm in study.labels]
    shown = [*_notes(study)] if notes else [w.HTML(STYLE)]
    shown += [chooser, alpha, _row(ends, _group(decoded)), numbers] + (_ring(study) if notes else [])
    return w.VBox(shown).add_class("imginav-explorer")
