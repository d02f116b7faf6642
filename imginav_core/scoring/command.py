"""``python -m imginav_core score-layouts``: read, split, fit, score, print, write the JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..files import write_text_atomic
from .inputs import read_generated, reference_from_manifest, split_by_scene


def score_layouts(
    reference: str | Path,
    generated: str | Path,
    json_path: str | Path | None = None,
    resolution: int | None = None,
    seed: int = 0,
    bootstrap: int = 200,
    cache_dir: str | Path | None = None,
) -> dict:
    """Score the layouts at ``generated`` (PNG folder or layouts.csv) against the manifest
    ``reference``; print the table, write everything to ``json_path`` (whole or not at all)."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ConfigError(f"--bootstrap {bootstrap!r}: expected a number of resamples >= 0 (0: no intervals)")
    if json_path is not None and Path(json_path).is_dir():
        raise ConfigError(f"--json {json_path}: a folder; expected the path of the JSON file to write")
    # The inputs first, before torch is imported, so that their errors come in a second; the
    # generated set first of all: it sets the resolution.
    images = read_generated(generated, resolution)
    resolution = images.shape[1]
    print(f"{len(images)} generated layouts at {resolution} x {resolution} from {generated}")
    fit, held = split_by_scene(reference_from_manifest(reference, resolution), seed=seed)
    from .scores import LayoutScorer, format_scores

    scorer = LayoutScorer.fit(fit, held, cache_dir=cache_dir, seed=seed)
    result = scorer.score(images, bootstrap=bootstrap, seed=seed)
    result["generated"] = str(generated)
    result["reference_manifest"] = str(reference)
    print(format_scores(result))
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(result, indent=2, allow_nan=False) + "\n")
        print(f"wrote {json_path}")
    return result
