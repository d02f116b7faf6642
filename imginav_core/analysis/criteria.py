"""The criteria measured on layouts (or interpolation pairs) that the decision compares between
the arms: what each means, which way is better, its role (primary, non-inferiority, secondary)
and the per-image values it is computed from (``ModelResult.per_image`` keys: a numerator and,
for a ratio of sums such as an IoU, a denominator). The decision (``decision.py``) computes the
intervals and verdicts; this file says what is compared.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    name: str
    role: str  # primary | non-inferiority | secondary
    meaning: str
    better: str  # lower | higher
    relative: bool = False  # the difference as VAE / deterministic - 1
    per: str = "image"  # image: per-image values, resampled by scene; pair: per interpolation pair


Criterion = tuple[Measure, tuple[str, str | None], float | None]  # measure, (numerator, denominator) keys, margin


def image_criteria(
    mse_margin: float, small_class_iou_margin: float, noise_sigma: float, *, nn_primary: bool, with_realism: bool
) -> list[Criterion]:
    """The per-image and per-pair criteria, in the order the report lists them. ``nn_primary``:
    the nearest-neighbour midpoint is the primary endpoint (no probe); ``with_realism``: the
    layout scorer judged the in-between layouts too."""
    sigma = f"change_sigma{noise_sigma:g}"
    measures: list[tuple[Measure, tuple[str, str | None], float | None]] = [
        (
            Measure(
                "reconstruction_mse",
                "non-inferiority",
                "validation MSE of the reconstructions (relative difference, VAE / deterministic - 1)",
                "lower",
                relative=True,
            ),
            ("mse", None),
            mse_margin,
        ),
        (
            Measure(
                "small_class_iou",
                "non-inferiority",
                "IoU of the segmentation of the small classes (chair, lighting, pier / stool)",
                "higher",
            ),
            ("small_inter", "small_union"),
            small_class_iou_margin,
        ),
        (
            Measure(
                "nearest_neighbour_validity",
                "primary" if nn_primary else "secondary",
                "palette purity of the midpoint between a validation latent and its nearest training latent",
                "higher",
            ),
            ("nn_midpoint_purity", None),
            None,
        ),
        (Measure("reconstruction_ssim", "secondary", "SSIM of the reconstructions", "higher"), ("ssim", None), None),
        (
            Measure(
                "sharpness",
                "secondary",
                "gradient energy at the input's edges, reconstruction over input (1 = as sharp)",
                "higher",
            ),
            ("sharp_out", "sharp_in"),
            None,
        ),
        (
            Measure("palette_purity", "secondary", "share of reconstructed pixels of a palette colour", "higher"),
            ("purity", None),
            None,
        ),
        (
            Measure(
                "latent_noise",
                "secondary",
                f"decoded change MSE(D(z + n), D(z)) under noise of {noise_sigma:g} "
                "x each channel's std (relative difference)",
                "lower",
                relative=True,
            ),
            (sigma, None),
            None,
        ),
        (
            Measure(
                "path_validity",
                "secondary",
                "mean palette purity of the inner frames of the interpolation paths (same pairs, straight paths)",
                "higher",
                per="pair",
            ),
            ("mean_purity", None),
            None,
        ),
    ]
    if with_realism:  # the layout scorer judged the in-between layouts too
        measures += [
            (
                Measure(
                    "nearest_neighbour_realism",
                    "secondary",
                    "share of nearest-neighbour midpoints the layout scorer places among real layouts",
                    "higher",
                ),
                ("nn_midpoint_realism", None),
                None,
            ),
            (
                Measure(
                    "path_realism",
                    "secondary",
                    "share of the interpolation paths' inner frames the layout scorer places among real layouts",
                    "higher",
                    per="pair",
                ),
                ("mean_realism", None),
                None,
            ),
        ]
    return measures
