"""A layout-quality scorer: how close generated layout images are to real ones.

    from imginav_core.scoring import (LayoutScorer, format_scores, read_generated,
                                      reference_from_manifest, split_by_scene)
    reference = reference_from_manifest("layouts.csv", resolution=64)
    fit, held = split_by_scene(reference, seed=0)
    scorer = LayoutScorer.fit(fit, held, cache_dir="scorer_cache")
    result = scorer.score(read_generated("generated/", 64))
    print(format_scores(result))

Inputs in inputs.py, features from a small network trained on ``fit`` in features.py, pixel
statistics in pixels.py; the scores and their floors are described in scores.py. Names are
imported on first use, so that reading (and refusing) the input does not wait for torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "ReferenceSet": "inputs",
    "RGBView": "inputs",
    "generated_files": "inputs",
    "read_generated": "inputs",
    "reference_from_manifest": "inputs",
    "split_by_scene": "inputs",
    "LayoutFeatureNet": "features",
    "NUM_FEATURES": "features",
    "palette_encoding": "features",
    "pixel_statistics": "pixels",
    "speckle_max_pixels": "pixels",
    "SCORE_KEYS": "scores",
    "LayoutScorer": "scores",
    "format_scores": "scores",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
