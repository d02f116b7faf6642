"""The latent interpolation explorers.

``frames_explorer`` shows precomputed frames: a pair chooser and an alpha slider are linked to
``Stack`` widgets on the browser side (``jslink``), so it works in Jupyter and equally in the
published HTML report, where no kernel runs. ``live_explorer`` decodes any alpha on the fly with
the models and needs a running kernel (interactive Jupyter). Both show, for the pair on screen,
the study's own numbers of that pair (the same path, the same frames the decision used), so the
two can never disagree.
"""

from __future__ import annotations

import ipywidgets as w
import numpy as np
import torch

from ..images import png_bytes, to_uint8
from ..training.checkpoints import load_model
from .measures import lerp
from .study import ARMS, ModelResult, Study

DISPLAY_PX = 224
# Enlarged small layouts keep hard class edges instead of a browser blur. The book's stylesheet
# says the same; this travels with the widget, so JupyterLab shows layouts pixel-sharp too.
PIXELATED = "<style>.imginav-frame, .imginav-frame img { image-rendering: pixelated; }</style>"


def _image(array: np.ndarray) -> w.Image:
    return w.Image(
        value=png_bytes(array), format="png", width=DISPLAY_PX, height=DISPLAY_PX, layout=w.Layout(object_fit="contain")
    ).add_class("imginav-frame")


def _chooser(study: Study) -> w.Dropdown:
    # width "auto": a <select> as wide as its longest pair label, so none is cut
    return w.Dropdown(
        options=[p.label for p in study.pairs],
        index=0,
        description="pair",
        style={"description_width": "initial"},
        layout=w.Layout(width="auto", min_width="480px"),
    )


def pair_numbers(study: Study, label: str) -> str:
    """The study's numbers of one pair for each arm's shown run (its first seed), as HTML."""
    rows = []
    for arm in ARMS:
        result: ModelResult = study.shown(arm)
        pair = next(p for p in result.metrics["interpolation"]["pairs"] if p["pair"] == label)
        realism = f"{pair['mean_realism']:.2f}" if "mean_realism" in pair else "—"
        rows.append(
            f"<tr><td>{arm} seed {result.seed}</td><td>{pair['validity']:.3f}</td>"
            f"<td>{pair['gradualness']:.3f}</td><td>{pair['mean_purity']:.3f}</td>"
            f"<td>{pair['min_purity']:.3f}</td><td>{pair['mean_confidence']:.3f}</td>"
            f"<td>{realism}</td><td>{pair['path_length_ratio']:.3f}</td></tr>"
        )
    head = (
        "<tr><th>arm</th><th>path validity (relative purity x gradualness)</th><th>gradualness</th>"
        "<th>path purity (mean)</th><th>path purity (worst frame)</th>"
        "<th>seg. confidence</th><th>frames that look real (scorer)</th>"
        "<th>path-length ratio (description)</th></tr>"
    )
    return f"<table class='imginav-pair-numbers'>{head}{''.join(rows)}</table>"


def _ends(study: Study, label: str) -> list[w.VBox]:
    ends = study.pair_inputs[label]
    return [
        w.VBox([w.HTML("<b>A</b> (alpha 0)"), _image(ends[0])]),
        w.VBox([w.HTML("<b>B</b> (alpha 1)"), _image(ends[1])]),
    ]


def frames_explorer(study: Study) -> w.VBox:
    """Pick a pair, slide alpha: each arm's decoded frame side by side, from precomputed frames."""
    labels = [p.label for p in study.pairs]
    alpha = w.SelectionSlider(
        options=[f"{a:.2f}" for a in study.alphas],
        value=f"{study.alphas[0]:.2f}",
        description="alpha",
        continuous_update=True,
        layout=w.Layout(width="480px"),
    )
    chooser = _chooser(study)
    views = []
    for label in labels:
        columns = _ends(study, label)
        for arm in ARMS:
            result = study.shown(arm)
            stack = w.Stack([_image(frame) for frame in result.frames[label]], selected_index=0).add_class(
                f"imginav-stack-{arm}"
            )
            w.jslink((alpha, "index"), (stack, "selected_index"))
            columns.append(w.VBox([w.HTML(f"<b>{arm}</b> seed {result.seed} decoded"), stack]))
        views.append(w.VBox([w.HBox(columns), w.HTML(pair_numbers(study, label))]))
    pairs = w.Stack(views, selected_index=0)
    w.jslink((chooser, "index"), (pairs, "selected_index"))
    return w.VBox([w.HTML(PIXELATED), chooser, alpha, pairs]).add_class("imginav-explorer")


def live_explorer(study: Study, device: str = "cpu") -> w.VBox:
    """Decode any alpha on demand (needs a kernel): choose a pair, drag alpha. The frames come from
    each arm's shown run; the numbers are the study's for the pair on screen."""
    models = {arm: load_model(study.shown(arm).checkpoint, device)[1] for arm in ARMS}
    labels = [p.label for p in study.pairs]
    chooser = _chooser(study)
    alpha = w.FloatSlider(
        value=0.5,
        min=0.0,
        max=1.0,
        step=0.01,
        description="alpha",
        continuous_update=False,
        layout=w.Layout(width="480px"),
    )
    images = {arm: _image(np.zeros((8, 8, 3), np.uint8)) for arm in ARMS}
    ends = w.HBox()
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
        ends.children = _ends(study, chooser.value)
        numbers.value = pair_numbers(study, chooser.value)
        redraw()

    def redraw(_change=None) -> None:
        z = pair_latents(chooser.value)
        a = torch.tensor([alpha.value])
        for arm, model in models.items():
            with torch.no_grad():
                frame = model.decode(lerp(z[arm][0], z[arm][1], a))["rgb"]
            images[arm].value = png_bytes(to_uint8(frame)[0])

    chooser.observe(show_pair, "value")
    alpha.observe(redraw, "value")
    show_pair()
    decoded = [w.VBox([w.HTML(f"<b>{arm}</b> seed {study.shown(arm).seed}"), image]) for arm, image in images.items()]
    return w.VBox([w.HTML(PIXELATED), chooser, alpha, w.HBox([ends, *decoded]), numbers]).add_class("imginav-explorer")
