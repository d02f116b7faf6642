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

from ..power import ASSUMED_ARM_SCORER_SPREAD, primary_design


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
    # A relative margin is assessed only where the deterministic arm's value is at least this
    # (``Rule.small_class_iou_min``): a ratio to a value near zero is any size.
    assessable_from: float | None = None


Criterion = tuple[Measure, tuple[str, str | None], float | None]  # measure, (numerator, denominator) keys, margin


PRIMARY = Measure(
    "generation_fld",
    "primary",
    "FLD of the layouts a latent diffusion model generates in the space (the diffusion probe), against "
    "held-out test layouts. Estimand: V2 / V1 of the geometric-mean FLD over training seeds and scorer "
    "networks (the layout scorer's feature networks taken as a sample of such networks: the interval "
    "adds the arm-by-scorer variance, so that it holds beyond the networks used); reported as V2 / V1 - 1",
    "lower",
    relative=True,
)


@dataclass(frozen=True)
class Rule:
    """Every threshold and choice of the decision, recorded whole in the protocol before the data
    (``protocol.protocol``): a number that decides anything is a field here, with why."""

    # ---- the primary endpoint (the probe's FLD) ----
    # Its interval's level, and its scale: the ratio of geometric means, on the log scale (the only
    # one: feature networks of different seeds measure FLD on scales that differ several-fold, so
    # only ratios within a network compare, and a ratio's sampling distribution is skewed).
    primary_level: float = 0.95
    primary_scale: str = "log"
    # The estimand is over scorer networks, not the K used: their arm-by-scorer variance is added
    # to the interval (tau^2 / K). False: the ratio under these networks alone.
    primary_scorer_variance: bool = True
    # The power at which every interval states the effect it would see (both ways), at the
    # observed variances, integrated over their estimates (``power.interval_power``).
    power: float = 0.8
    # The level of the other criteria's intervals (non-inferiority and descriptive).
    level: float = 0.95

    # ---- the guard: generations that cannot inform the primary endpoint (probe ``guard``) ----
    # (a) Collapsed or fooled: the generations' FLD below this share of the same run's test
    # reconstructions' (at equal numbers of layouts; geometric mean over the scorer seeds). The
    # generations are the run's decoder's renderings of latents the denoiser drew, the
    # reconstructions the same decoder's renderings of real test layouts' latents: a denoiser that
    # learned the latent distribution generates what the reconstructions are, as a distribution,
    # the same FLD up to sampling error (a few per cent at 1,000 layouts) and the decoder's gap
    # between training and test layouts. Scoring better than that by a factor of 2 is not a
    # better distribution but a region the feature network rewards: the decoding of V1 seed 42's
    # mean latent, repeated 128 times, scored 215 against its reconstructions' 546 (0.39); one real
    # layout repeated scored 67.6.
    guard_fld_ratio: float = 0.5
    # (b) Too far from real to inform: the generations' coverage (Naeem et al. 2020, k = 5: the
    # share of real test layouts whose k-NN ball holds a generated layout) below this share of the
    # coverage of as many real training layouts (the scorer's floor, about 1 - (M / (M + N))^k:
    # 0.67 for 1,000 against 4,000), mean over the scorer seeds. Below a quarter of it three in four
    # of the real neighbourhoods that a real sample reaches hold no generated layout: the sets barely
    # overlap, and a Fréchet distance between them measures how the feature network extrapolates to
    # layouts unlike any it was trained on (which differs from network to network: the demo's FLD
    # varied 2.7-3.1 x across scorer seeds, its precision and recall were 0) rather than which
    # generator is closer to real. A generator that drops half the real modes still informs.
    guard_coverage_share: float = 0.25

    # ---- non-inferiority of the reconstructions (both relative, on the log ratio) ----
    # The VAE's test-split MSE at most this much higher (upper CI bound of VAE / V1 - 1).
    mse_margin: float = 0.25
    # Its IoU of the small classes at most this much lower, relative to V1's (lower CI bound of
    # VAE / V1 - 1 at least -0.10) ...
    small_class_iou_margin: float = 0.10
    # ... assessed only where V1's small-class IoU (its mean over its runs) is at least this: below
    # it the decoders barely segment the small classes (the demo's: 0 and 8e-5), a ratio to such a
    # value is any size, and non-inferiority is "not assessable" (never shown: V2 cannot be chosen).
    small_class_iou_min: float = 0.05

    # ---- the VAE's posterior ----
    # The noise level of the reported latent-noise criterion (in each channel's own std).
    noise_sigma: float = 0.5
    # The specification's band for the weighted KL: at a fixed weight a KL below it means the
    # posterior is near the prior (towards collapse), above it barely regularised.
    kld_low: float = 1e-4
    kld_high: float = 1e-3
    # Burda et al. (2016): a latent unit is active when its posterior mean varies across layouts,
    # Var_x(E[z_u | x]) above this ...
    active_unit_variance: float = 0.01
    # ... and the posterior has collapsed (the VAE is worse) when fewer than this share of its units
    # are active: a VAE normally leaves some inactive, so only almost none active is collapse.
    collapse_active_share: float = 0.05

    # ---- the intervals' bootstrap over scenes and images ----
    resamples: int = 2000
    seed: int = 0
    # Below these the data cannot settle the question (e.g. the small synthetic default).
    min_train_images: int = 5000
    min_resolution: int = 256
    min_epochs: int = 5

    def __post_init__(self) -> None:
        if self.primary_scale != "log":
            raise ValueError(
                f"Rule.primary_scale = {self.primary_scale!r}: expected 'log' (FLDs of different feature networks "
                "differ several-fold in scale; only their ratios compare)"
            )
        for name in ("primary_level", "level", "power", "guard_fld_ratio", "guard_coverage_share"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"Rule.{name} = {getattr(self, name)!r}: expected a number between 0 and 1")


def rule_criteria(rule: Rule, with_realism: bool) -> list[Criterion]:
    """The per-image and per-pair criteria under ``rule``'s margins (the probe's FLD aside, the
    primary endpoint), in the order the report lists them; ``with_realism``: the layout scorer
    judged the in-between layouts too. Each criterion's arm value per seed is ``sum(numerator) /
    sum(denominator)`` over the items, or the mean of the numerator when there is no denominator.
    Both non-inferiority margins are relative (VAE / deterministic - 1, on the log ratio): an
    absolute margin on the small-class IoU was passed by two decoders that segment no small class
    at all (IoU 0 and 8e-5 against a margin of 0.05)."""
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
            rule.mse_margin,
        ),
        (
            Measure(
                "small_class_iou",
                "non-inferiority",
                "IoU of the segmentation of the small classes (chair, lighting, pier / stool) (relative "
                "difference, VAE / deterministic - 1; assessed only where the deterministic encoder's own is "
                "clear of zero)",
                "higher",
                relative=True,
                assessable_from=rule.small_class_iou_min,
            ),
            ("small_inter", "small_union"),
            rule.small_class_iou_margin,
        ),
    ]
    descriptive = [
        (
            Measure(
                "nearest_neighbour_validity",
                "secondary",
                "palette purity of the midpoint between a test latent and its nearest training latent, "
                "over the palette purity of the layout's reconstruction (ratio of sums: 1 = the midpoints as "
                "clean as the reconstructions; a uniformly blurrier decoder is not charged twice)",
                "higher",
            ),
            ("nn_midpoint_purity", "purity"),
        ),
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
                f"decoded change under latent noise of {rule.noise_sigma:g} x each channel's std, "
                "c = MSE(D(z + n), D(z)), "
                "against the decoded distance to another layout d = MSE(D(z), D(z')): c / (c + d) "
                "(0 = unmoved, 0.5 = moved as far as another layout; a decoder ignoring its latent scores 1)",
                "lower",
            ),
            (f"noise_relative_sigma{rule.noise_sigma:g}", None),
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


# ---- the design's power, before the data ------------------------------------------------------------


def planned_primary_effect(seeds: int, *, scorer_seeds: int | None = None, rule: Rule = Rule()) -> dict:
    """``power.primary_design`` under ``rule``'s level, power and estimand, at the assumed spreads
    (``power``, with their source), with the probe's default number of scorer networks where
    ``scorer_seeds`` is None: the design's detectable ratio on the primary endpoint, both ways, as
    plain data for the plan's protocol."""
    from ..probe.settings import DEFAULTS

    return primary_design(
        seeds,
        scorer_seeds=DEFAULTS.scorer_seeds if scorer_seeds is None else scorer_seeds,
        scorer_spread=ASSUMED_ARM_SCORER_SPREAD if rule.primary_scorer_variance else 0.0,
        power=rule.power,
        level=rule.primary_level,
    )
