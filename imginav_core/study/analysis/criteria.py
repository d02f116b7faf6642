"""The criteria measured on layouts (or interpolation pairs) that the decision compares between
the arms: what each means, which way is better, its role (primary, non-inferiority, secondary)
and the per-image values it is computed from (``ModelResult.per_image`` keys: a numerator and,
for a ratio of sums such as an IoU, a denominator). The decision (``decision.py``) computes the
intervals and verdicts; this file says what is compared. The secondary criteria are descriptive
(``Measure.descriptive``): reported with their intervals, they decide nothing.

Each criterion has a constructed case that would fool a naive version of it
(``tests/test_measures.py``): sharpness is two-sided (ringing is not sharper than the input),
latent noise is measured on the decoder's own scale (a decoder ignoring its latent is not
robust), path validity charges a hard switch (every frame clean, nothing in between), and the
nearest-neighbour midpoint's purity is taken relative to the reconstructions' (a blurrier
decoder is not charged twice for its blur).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Measure:
    name: str
    role: str  # primary | non-inferiority | secondary
    meaning: str
    better: str  # lower | higher
    relative: bool = False  # the difference as VAE / deterministic - 1
    per: str = "image"  # image: per-image values, resampled by scene; pair: per interpolation pair
    # Reported with its interval, decides nothing: a description of the two spaces (every
    # secondary criterion). The decision's verdicts rest on the primary and non-inferiority ones.
    descriptive: bool = False


Criterion = tuple[Measure, tuple[str, str | None], float | None]  # measure, (numerator, denominator) keys, margin


def image_criteria(
    mse_margin: float, small_class_iou_margin: float, noise_sigma: float, *, nn_primary: bool, with_realism: bool
) -> list[Criterion]:
    """The per-image and per-pair criteria, in the order the report lists them. ``nn_primary``:
    the nearest-neighbour midpoint is the primary endpoint (no probe); ``with_realism``: the
    layout scorer judged the in-between layouts too. Each criterion's arm value per seed is
    ``sum(numerator) / sum(denominator)`` over the items, or the mean of the numerator when there
    is no denominator."""
    measures: list[Criterion] = [
        (
            Measure(
                "reconstruction_mse",
                "non-inferiority",
                "MSE of the test layouts' reconstructions (relative difference, VAE / deterministic - 1)",
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
                "palette purity of the midpoint between a test latent and its nearest training latent, "
                "over the palette purity of the layout's reconstruction (ratio of sums: 1 = the midpoints as "
                "clean as the reconstructions; a uniformly blurrier decoder is not charged twice)",
                "higher",
                descriptive=not nn_primary,
            ),
            ("nn_midpoint_purity", "purity"),
            None,
        ),
    ]
    descriptive = [
        (Measure("reconstruction_ssim", "secondary", "SSIM of the reconstructions", "higher"), ("ssim", None)),
        (
            Measure(
                "sharpness",
                "secondary",
                "|log| of the ratio of gradient energy at the input's edges, reconstruction over input "
                "(0 = as sharp as the input; blur and ringing both score above 0)",
                "lower",
            ),
            ("sharpness_error", None),
        ),
        (
            Measure("palette_purity", "secondary", "share of reconstructed pixels of a palette colour", "higher"),
            ("purity", None),
        ),
        (
            Measure(
                "latent_noise",
                "secondary",
                f"decoded change under latent noise of {noise_sigma:g} x each channel's std, c = MSE(D(z + n), D(z)), "
                "against the decoded distance to another layout d = MSE(D(z), D(z')): c / (c + d) "
                "(0 = unmoved, 0.5 = moved as far as another layout; a decoder ignoring its latent scores 1)",
                "lower",
            ),
            (f"noise_relative_sigma{noise_sigma:g}", None),
        ),
        (
            Measure(
                "path_validity",
                "secondary",
                "interpolation paths (same pairs, straight paths): the inner frames' palette purity over the "
                "ends' x gradualness (1 = the change spread evenly over the steps); a hard switch between the "
                "two reconstructions scores 1 / (frames - 1), a ghosting cross-fade its muddy frames' purity",
                "higher",
                per="pair",
            ),
            ("validity", None),
        ),
    ]
    if with_realism:  # the layout scorer judged the in-between layouts too
        descriptive += [
            (
                Measure(
                    "nearest_neighbour_realism",
                    "secondary",
                    "share of nearest-neighbour midpoints the layout scorer places among real layouts",
                    "higher",
                ),
                ("nn_midpoint_realism", None),
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
            ),
        ]
    for measure, keys in descriptive:
        measures.append((replace(measure, descriptive=True), keys, None))
    return measures


PRIMARY = Measure(
    "generation_fld",
    "primary",
    "FLD of the layouts a latent diffusion model generates in the space (the diffusion probe), "
    "against held-out test layouts; each run's geometric mean over the scorer seeds, the difference "
    "as V2 / V1 - 1",
    "lower",
    relative=True,
)


@dataclass(frozen=True)
class Rule:
    # Non-inferiority: the VAE's test-split MSE at most this much higher (relative, upper CI bound).
    mse_margin: float = 0.25
    # ... and its IoU of the small classes at most this much lower (absolute, lower CI bound).
    small_class_iou_margin: float = 0.05
    # The noise level of the reported latent-noise criterion (in each channel's own std).
    noise_sigma: float = 0.5
    # The specification's band for the weighted KL: at a fixed weight a KL below it means the
    # posterior is near the prior (towards collapse), above it barely regularised.
    kld_low: float = 1e-4
    kld_high: float = 1e-3
    resamples: int = 2000
    seed: int = 0
    # Below these the data cannot settle the question (e.g. the small synthetic default).
    min_train_images: int = 5000
    min_resolution: int = 256
    min_epochs: int = 5


def rule_criteria(rule: Rule, with_realism: bool) -> list[Criterion]:
    """The per-image and per-pair criteria under ``rule``'s margins (the probe's FLD aside, the
    primary endpoint); ``with_realism``: the layout scorer judged the in-between layouts too."""
    return image_criteria(
        rule.mse_margin, rule.small_class_iou_margin, rule.noise_sigma, nn_primary=False, with_realism=with_realism
    )
