"""What a study costs on the cluster, and how many seeds it needs: the GPU-hours of a plan's runs,
and the power of the decision's comparison at 2 to 8 seeds per arm (``plan --effect``).

The real data set's size is stated here, once: the benchmarks scale their measurements to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import load_config
from ..errors import ConfigError

if TYPE_CHECKING:
    from .plan import StudyFile, StudyPlan

# The real data set: 50,015 layouts, of which 22,118 are empty (walls and background only) and are
# not trained on, leaving 27,897; the split (70/10/20 by group) trains on about 70 % of them.
REAL_LAYOUTS = 27_897
REAL_TRAIN_SHARE = 0.7
# Training images per second at 512 x 512 measured on the cluster's V100 (V1's queue) and L40s
# (V2's) nodes: 10 epochs over the real set is 1.0-1.9 GPU-hours a run. The probe and the analysis
# come on top.
CLUSTER_IMAGES_PER_S = (40.0, 80.0)


def run_gpu_hours(epochs: int, layouts: int = REAL_LAYOUTS) -> tuple[float, float]:
    """(fewest, most) GPU-hours of one run of ``epochs`` epochs at the cluster's throughput."""
    slow, fast = CLUSTER_IMAGES_PER_S
    return epochs * layouts / fast / 3600, epochs * layouts / slow / 3600


def plan_gpu_hours(plan: StudyPlan, sweep: bool | None = None) -> tuple[float, float]:
    """(fewest, most) GPU-hours of the plan's runs (``sweep``: only those of the sweep, or not)."""
    runs = [run for run in plan.runs if sweep is None or run.sweep == sweep]
    hours = [run_gpu_hours(plan.configs[run.name].training.epochs) for run in runs]
    return sum(low for low, _ in hours), sum(high for _, high in hours)


def plan_cost_text(plan: StudyPlan) -> str:
    """What the plan's runs cost on the cluster, the comparison and the KL sweep apart."""

    def hours(sweep: bool | None) -> str:
        low, high = plan_gpu_hours(plan, sweep)
        return f"{low:.0f}-{high:.0f} GPU-hours"

    comparison = [run for run in plan.runs if not run.sweep]
    arms = ", ".join(f"{label} {len(plan.arm_runs(label))}" for label in plan.study.arms)
    lines = [f"The comparison: {len(comparison)} runs ({arms}), {hours(False)}."]
    swept = [run for run in plan.runs if run.sweep]
    if swept:
        weights = ", ".join(f"{k:g}" for k in sorted({run.kld for run in swept}))
        lines.append(
            f"The KL sweep: {len(swept)} runs more ({swept[0].arm} at KL weights {weights} x {len(plan.seeds)} "
            f"seed{'s' if len(plan.seeds) > 1 else ''}; "
            f"an arm's own weight is its comparison runs, not trained again), {hours(True)}; {len(plan.runs)} runs in "
            f"all, {hours(None)}."
        )
    epochs = sorted({cfg.training.epochs for cfg in plan.configs.values()})
    low, high = run_gpu_hours(epochs[0])
    lines.append(
        f"A run: {'/'.join(map(str, epochs))} epochs over the real set's {REAL_LAYOUTS:,} layouts at 512 x 512, at "
        f"{CLUSTER_IMAGES_PER_S[0]:.0f}-{CLUSTER_IMAGES_PER_S[1]:.0f} images/s (the cluster's V100 and L40s): "
        f"{low:.1f}-{high:.1f} GPU-hours; the probe and the analysis not included."
    )
    return "\n".join(lines) + "\n"


# ---- how many seeds: power and cost --------------------------------------------------------------


@dataclass(frozen=True)
class SeedOption:
    seeds: int  # per arm
    power: float  # chance that the decision's 95 % interval excludes zero for the effect
    detectable: float  # the effect found with the target power at this many seeds
    runs: int  # every arm
    gpu_hours: tuple[float, float]


def seed_plan(
    effect: float, spread: float, study: StudyFile, *, target: float = 0.8, seeds: range = range(2, 9)
) -> tuple[list[SeedOption], int | None, int]:
    """(one row per number of seeds per arm; the fewest seeds that reach ``target`` power, None
    beyond 100; the epochs a run trains, from the arms' configs). ``effect``: the true difference
    between the arms' means the study should detect; ``spread``: the standard deviation of a run's
    score between seeds within an arm (both in the score's units)."""
    from .power import planned_detectable_effect, power, seeds_needed

    if not effect or not spread > 0:
        raise ConfigError(
            f"effect {effect}, spread {spread}: expected a difference to detect (not 0) and the runs' "
            "standard deviation within an arm (> 0), in the same units"
        )
    epochs = max(load_config(arm.config).training.epochs for arm in study.arms.values())
    per_run = run_gpu_hours(epochs)
    needed = seeds_needed(effect, spread, target=target)
    counts = sorted(set(seeds) | ({needed} if needed else set()))
    arms = len(study.arms)
    return (
        [
            SeedOption(
                n,
                power(effect, spread, n),
                planned_detectable_effect(spread, n, target=target),
                arms * n,
                (arms * n * per_run[0], arms * n * per_run[1]),
            )
            for n in counts
        ],
        needed,
        epochs,
    )


def seed_plan_text(effect: float, spread: float, study: StudyFile, *, target: float = 0.8) -> str:
    """``seed_plan`` as the command line prints it: a Markdown table and the answer."""
    rows, needed, epochs = seed_plan(effect, spread, study, target=target)
    low, high = run_gpu_hours(epochs)
    lines = [
        f"Detecting a difference of {effect:g} between the arms when a run's score scatters with standard "
        f"deviation {spread:g} between seeds ({abs(effect) / spread:.2f} standard deviations), by the decision's "
        f"two-sided 95 % interval (Welch's t) with {100 * target:.0f} % power:",
        "",
        f"| seeds per arm | power | detectable with {100 * target:.0f} % power | runs | GPU-hours |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.seeds} | {100 * r.power:.0f} % | {r.detectable:.3g} ({r.detectable / spread:.2f} sd) | {r.runs} | "
        f"{r.gpu_hours[0]:.0f}-{r.gpu_hours[1]:.0f} |"
        for r in rows
    ]
    lines.append("")
    if needed is None:
        lines.append(f"Even 100 seeds per arm do not reach {100 * target:.0f} % power for this difference.")
    else:
        row = next(r for r in rows if r.seeds == needed)
        lines.append(
            f"Needed: {needed} seeds per arm, {row.runs} runs, {row.gpu_hours[0]:.0f}-{row.gpu_hours[1]:.0f} GPU-hours."
        )
    lines.append(
        f"A run: {epochs} epochs over {REAL_LAYOUTS:,} layouts at 512 x 512, at {CLUSTER_IMAGES_PER_S[0]:.0f}-"
        f"{CLUSTER_IMAGES_PER_S[1]:.0f} images/s (the cluster's V100 and L40s): {low:.1f}-{high:.1f} GPU-hours; "
        "the probe and the analysis not included. Unequal spreads in the two arms need more seeds."
    )
    return "\n".join(lines) + "\n"
