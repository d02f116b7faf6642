"""Where a training step's time goes: ``torch.profiler`` over a few steps, summarised by kernel.

On a GPU the figures are the device time of each kernel (cuDNN convolutions, Triton kernels that
torch.compile generated, the fused AdamW, copies); on a CPU the self time of each PyTorch operator.
The kernels are also put into a few broad groups by name, so that one table says whether the
convolutions, the normalisation and element-wise work, or something else holds the step back.
The grouping is by name patterns, a reading aid: the per-kernel list is the measurement. The
convolutions are also listed by layer shape (channels, kernel, stride, resolution; forward and
backward apart), from the shapes PyTorch records for each ``aten::convolution`` call, which
compiled graphs make too: which layers of the model cost the most.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from ...runtime import synchronize

# First match wins. torch.compile's kernels come first: on a GPU Triton kernels, which inductor
# names after the aten ops they fuse ("convolution_backward" for a bias gradient that is really a
# reduction); on a CPU the compiled graph's own C++ time, reported under its call.
GROUPS = [
    ("fused by torch.compile", r"^triton_|CompiledFxGraph"),
    # On a CPU, the autograd engine's own time per node (named after the node, e.g. ConvolutionBackward0).
    ("autograd bookkeeping", r"^autograd::"),
    ("memory layout conversions", r"nchwToNhwc|nhwcToNchw|transpose|permute|contiguous"),
    ("convolutions", r"conv|xmma|cudnn|implicit_gemm|fprop|dgrad|wgrad|cutlass|splitKreduce|winograd|mkldnn"),
    ("optimizer", r"adam|multi_tensor|foreach"),
    (
        "normalisation and element-wise",
        r"norm|silu|tanh|sigmoid|elementwise|reduce|softmax|nll|mse|moments|mul|add|sub|div|exp|pow|sum|mean",
    ),
    ("copies and fills", r"copy|memcpy|memset|fill|cat|zero|empty"),
]


def group_of(name: str) -> str:
    for group, pattern in GROUPS:
        if re.search(pattern, name, re.IGNORECASE):
            return group
    return "other"


def _timed_events(prof: profile, device: torch.device) -> list[tuple[str, float]]:
    """(name, microseconds) of every event that counts: kernels on a GPU (the GPU-side ranges of
    ``record_function`` left out, as they span kernels already counted), operators' self time on
    a CPU."""
    if device.type == "cuda":
        return [
            (e.name, e.self_device_time_total)
            for e in prof.events()
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
        ]
    return [(e.name, e.self_cpu_time_total) for e in prof.events() if e.device_type == DeviceType.CPU]


def conv_layer(event) -> str | None:
    """``aten::convolution`` (forward) or ``aten::convolution_backward`` as a layer named by its
    channels, kernel and input resolution, e.g. "conv 16->16 3x3 at 512x512 backward"; ``None``
    for any other event."""
    if event.name == "aten::convolution":
        shapes, transposed_at, direction = event.input_shapes[:2], 6, ""
    elif event.name == "aten::convolution_backward":  # (grad_output, input, weight, ...)
        shapes, transposed_at, direction = event.input_shapes[1:3], 7, " backward"
    else:
        return None
    try:
        (_, c_in, height, width), (w0, w1, kh, kw) = shapes
        transposed = bool(event.concrete_inputs[transposed_at]) if event.concrete_inputs else False
    except (ValueError, TypeError, IndexError):  # shapes not recorded: no layer to name
        return None
    c_out = w1 if transposed else w0  # a transposed convolution's weight is (in, out, kh, kw)
    kind = "transposed conv" if transposed else "conv"
    return f"{kind} {c_in}->{c_out} {kh}x{kw} at {height}x{width}{direction}"


def _conv_layers(prof: profile, device: torch.device) -> dict[str, float]:
    """Microseconds per convolution layer, the kernels its call launched included."""
    layers: dict[str, float] = defaultdict(float)
    for event in prof.events():
        layer = conv_layer(event)
        if layer is not None:
            layers[layer] += event.device_time_total if device.type == "cuda" else event.cpu_time_total
    return layers


def profile_steps(action: Callable[[], Any], steps: int, device: torch.device, top: int = 15) -> dict[str, Any]:
    """Run ``action`` ``steps`` times under the profiler; per step: the busy time, the ``top``
    kernels or operators, the groups (``GROUPS``) and every convolution layer, each with its share
    of the busy time."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            action()
        synchronize(device)
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for name, micros in _timed_events(prof, device):
        totals[name] += micros
        calls[name] += 1
    busy = sum(totals.values())
    if busy <= 0:
        raise RuntimeError(f"the profiler recorded no {'kernel' if device.type == 'cuda' else 'operator'} time")
    groups: dict[str, float] = defaultdict(float)
    for name, micros in totals.items():
        groups[group_of(name)] += micros
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    layers = sorted(_conv_layers(prof, device).items(), key=lambda item: -item[1])
    return {
        "what": "GPU kernel time" if device.type == "cuda" else "operator self time on the CPU",
        "steps": steps,
        "busy_ms_per_step": busy / steps / 1e3,
        "distinct": len(totals),
        "top": [
            {
                "name": name,
                "ms_per_step": micros / steps / 1e3,
                "calls_per_step": calls[name] / steps,
                "share": micros / busy,
                "group": group_of(name),
            }
            for name, micros in ranked[:top]
        ],
        "groups": {
            group: {"ms_per_step": micros / steps / 1e3, "share": micros / busy}
            for group, micros in sorted(groups.items(), key=lambda item: -item[1])
        },
        "convolution_layers": [
            {"layer": layer, "ms_per_step": micros / steps / 1e3, "share": micros / busy} for layer, micros in layers
        ],  # all of them (two per layer); the table shows the top
    }


def profile_table(label: str, summary: dict[str, Any], step_ms: float | None = None) -> str:
    """The summary as text; with ``step_ms`` (the step's wall time) also how busy the device was."""
    busy = summary["busy_ms_per_step"]
    head = f"{label}: {summary['what']}, {busy:.2f} ms per step"
    if step_ms:
        head += f" against {step_ms:.2f} ms of wall time per step ({busy / step_ms:.0%} busy)"
    lines = [head + f", {summary['distinct']} distinct kernels/operators", "  by group:"]
    lines += [f"    {g['share']:6.1%} {g['ms_per_step']:9.2f} ms  {name}" for name, g in summary["groups"].items()]
    lines.append(f"  top {len(summary['top'])}:")
    for k in summary["top"]:
        name = k["name"] if len(k["name"]) <= 110 else k["name"][:107] + "..."
        lines.append(f"    {k['share']:6.1%} {k['ms_per_step']:9.3f} ms  x{k['calls_per_step']:<4g} {name}")
    layers = summary["convolution_layers"][: len(summary["top"])]
    if layers:
        lines.append(f"  top {len(layers)} convolution layers (the kernels each call launched):")
        lines += [f"    {c['share']:6.1%} {c['ms_per_step']:9.3f} ms  {c['layer']}" for c in layers]
    return "\n".join(lines)
