"""The latent interpolation explorer.

``frames_explorer`` shows precomputed frames: a pair chooser and an alpha slider are linked to
``Stack`` widgets on the browser side (``jslink``), so it works in Jupyter and equally in the
published HTML report, where no kernel runs. ``live_explorer`` decodes on the fly with the
models and needs a running kernel (interactive Jupyter).
"""

from __future__ import annotations

import ipywidgets as w
import numpy as np
import torch

from ..images import png_bytes, to_uint8
from ..training.checkpoints import load_model
from .measures import lerp, path_smoothness
from .runs import RunSummary
from .study import Study

DISPLAY_PX = 224


def _image(array: np.ndarray) -> w.Image:
    # pixelated: enlarged small layouts keep hard class edges instead of a browser blur
    return w.Image(value=png_bytes(array), format="png", width=DISPLAY_PX, height=DISPLAY_PX,
                   layout=w.Layout(object_fit="contain")).add_class("imginav-frame")


def _pair_numbers(study: Study, label: str) -> str:
    rows = []
    for result in study.models:
        for path_name, info in result.metrics["interpolation"].items():
            pair = next(p for p in info["pairs"] if p["pair"] == label)
            rows.append(
                f"<tr><td>{result.label} {path_name}</td><td>{pair['path_length_ratio']:.3f}</td>"
                f"<td>{pair['max_step_share']:.3f}</td><td>{pair['midpoint_palette_purity']:.3f}</td>"
                f"<td>{pair['midpoint_segmentation_confidence']:.3f}</td></tr>"
            )
    head = ("<tr><th>model, path</th><th>path-length ratio (1 = straight)</th><th>largest step share</th>"
            "<th>midpoint palette purity</th><th>midpoint seg. confidence</th></tr>")
    return f"<table class='imginav-pair-numbers'>{head}{''.join(rows)}</table>"


def frames_explorer(study: Study, path: str = "linear") -> w.VBox:
    """Pick a pair, slide alpha: every model's decoded frame side by side, from precomputed frames."""
    labels = [p.label for p in study.pairs]
    alpha = w.SelectionSlider(options=[f"{a:.2f}" for a in study.alphas], value=f"{study.alphas[0]:.2f}",
                              description="alpha", continuous_update=True, layout=w.Layout(width="480px"))
    chooser = w.Dropdown(options=labels, index=0, description="pair", layout=w.Layout(width="480px"))
    views = []
    for label in labels:
        ends = study.pair_inputs[label]
        columns = [w.VBox([w.HTML("<b>A</b> (alpha 0)"), _image(ends[0])]),
                   w.VBox([w.HTML("<b>B</b> (alpha 1)"), _image(ends[1])])]
        for result in study.models:
            frames = result.frames[path][label]
            stack = w.Stack([_image(frame) for frame in frames], selected_index=0).add_class(
                f"imginav-stack-{result.label}")
            w.jslink((alpha, "index"), (stack, "selected_index"))
            columns.append(w.VBox([w.HTML(f"<b>{result.label}</b> decoded"), stack]))
        views.append(w.VBox([w.HBox(columns), w.HTML(_pair_numbers(study, label))]))
    pairs = w.Stack(views, selected_index=0)
    w.jslink((chooser, "index"), (pairs, "selected_index"))
    return w.VBox([chooser, alpha, pairs]).add_class("imginav-explorer")


def live_explorer(runs: list[RunSummary], study: Study, device: str = "cpu", steps: int = 21) -> w.VBox:
    """Decode any alpha on demand (needs a kernel): choose a pair, drag alpha."""
    models = [(run.label, load_model(run.best_checkpoint, device)[1]) for run in runs]
    labels = [p.label for p in study.pairs]
    chooser = w.Dropdown(options=labels, description="pair", layout=w.Layout(width="480px"))
    alpha = w.FloatSlider(value=0.5, min=0.0, max=1.0, step=1.0 / (steps - 1), description="alpha",
                          continuous_update=False, layout=w.Layout(width="480px"))
    images = {label: _image(np.zeros((8, 8, 3), np.uint8)) for label, _ in models}
    numbers = w.HTML()
    latents: dict[str, dict[str, torch.Tensor]] = {}

    def pair_latents(label: str) -> dict[str, torch.Tensor]:
        if label not in latents:
            x = study.pair_images(study.pairs[labels.index(label)], torch.device(device))
            with torch.no_grad():
                latents[label] = {name: model.encode(x) for name, model in models}
            rows = []
            for name, model in models:
                z = latents[label][name]
                with torch.no_grad():
                    frames = model.decode(lerp(z[0], z[1], torch.linspace(0, 1, steps)))["rgb"]
                smooth = path_smoothness(frames)
                rows.append(f"{name}: path-length ratio {smooth['path_length_ratio']:.3f}, "
                            f"largest step {smooth['max_step_share']:.3f}")
            numbers.value = "<br>".join(rows)
        return latents[label]

    def redraw(_change=None) -> None:
        z = pair_latents(chooser.value)
        a = torch.tensor([alpha.value])
        for name, model in models:
            with torch.no_grad():
                frame = model.decode(lerp(z[name][0], z[name][1], a))["rgb"]
            images[name].value = png_bytes(to_uint8(frame)[0])

    chooser.observe(redraw, "value")
    alpha.observe(redraw, "value")
    redraw()
    row = w.HBox([w.VBox([w.HTML(f"<b>{name}</b>"), image]) for name, image in images.items()])
    return w.VBox([chooser, alpha, row, numbers])
