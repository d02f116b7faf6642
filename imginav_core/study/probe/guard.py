"""The guard of the primary endpoint (book/using/probe.md, "The guard"): the probe scores each
run's generations beside its own reconstructions of test layouts, at equal numbers, by every scorer
network (FLD and coverage, with floors: ``guard_scores``); ``guard_run`` reads that under the
decision's rule, whose thresholds it is given.

Why reconstructions: both are the run's decoder's renderings, of drawn latents and of real ones, so
a denoiser that learned the latent distribution generates what the reconstructions are; generations
that score clearly better are something the feature network rewards (a collapse, a fooled scorer).
Test layouts, since reconstructions of training layouts flatter the decoder; outside the scorer's
held-out reference first, since a reconstruction paired with its reference layout lowers the FLD.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from ...scoring import LayoutScorer
from ...scoring.features import Embedding
from ..numbers import sig


def reconstruction_positions(total: int, reference: np.ndarray | None, count: int, seed: int) -> tuple[np.ndarray, int]:
    """(positions of ``min(count, total)`` test layouts to reconstruct, in order; how many of them
    are in the scorer's held-out ``reference``, positions in the same split): drawn from ``seed``,
    those outside the reference first."""
    inside = np.zeros(total, dtype=bool)
    if reference is not None:
        inside[np.asarray(reference, dtype=np.int64)] = True
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(~inside)), rng.permutation(np.flatnonzero(inside))])
    chosen = np.sort(order[: min(count, total)])
    return chosen, int(inside[chosen].sum())


def _subset(embedding: Embedding, n: int, rng: np.random.Generator) -> Embedding:
    if len(embedding) <= n:
        return embedding
    return embedding.subset(np.sort(rng.choice(len(embedding), n, replace=False)))


def guard_scores(
    generated: list[Embedding], reconstructed: list[Embedding], scorers: list[LayoutScorer], seed: int
) -> dict:
    """Generations against reconstructions, one embedding of each per scorer (in ``scorers``'
    order): both at the smaller count (the larger subsampled from ``seed``, the same layouts for
    every scorer, so that FLD and coverage, which depend on the count, compare), and per scorer
    seed each set's FLD and coverage with the floors of as many real layouts. JSON-ready."""
    n = min(len(generated[0]), len(reconstructed[0]))
    if n < 2:
        raise ValueError(
            f"{len(generated[0])} generated and {len(reconstructed[0])} reconstructed layouts: need 2 each"
        )
    by_scorer = {}
    for scorer, gen, rec in zip(scorers, generated, reconstructed, strict=True):
        # the same draw for every scorer: rng made afresh, so each network sees the same layouts
        gen_scores = scorer.fld_and_coverage(_subset(gen, n, np.random.default_rng(seed)), seed=seed)
        rec_scores = scorer.fld_and_coverage(_subset(rec, n, np.random.default_rng(seed + 1)), seed=seed)
        by_scorer[str(scorer.model.seed)] = {
            "generated_fld": gen_scores["fld"],
            "reconstructed_fld": rec_scores["fld"],
            "fld_floor": gen_scores["fld_floor"],
            "generated_coverage": gen_scores["coverage"],
            "reconstructed_coverage": rec_scores["coverage"],
            "coverage_floor": gen_scores["coverage_floor"],
        }
    return {
        "n_layouts": n,
        "generated": len(generated[0]),
        "reconstructed": len(reconstructed[0]),
        "by_scorer": by_scorer,
    }


# ---- reading it under the decision's rule -------------------------------------------------------------

COLLAPSED = "generator collapsed or scorer fooled"
TOO_FAR = "generations too far from real for the endpoint to inform"
NOT_GUARDED = "not guarded"


class GuardRule(Protocol):
    """What the reading needs of the decision's rule (``analysis.criteria.Rule``, a layer above)."""

    guard_fld_ratio: float
    guard_coverage_share: float


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def guard_run(name: str, record: dict[str, Any] | None, rule: GuardRule, label: str | None = None) -> dict[str, Any]:
    """The guard's reading of one run (``record``: ``ProbeMetrics.guard``) under ``rule`` (the
    decision's ``Rule``, its thresholds and nothing else: none is fixed here): per scorer seed the
    generations' FLD over the reconstructions' and their coverage over the real layouts' (the
    floor), each combined over the seeds (the ratio's geometric mean, the share's mean), and
    ``flags``: a list of "<run>: <flag>: <why>" lines, empty when the run's generations can inform
    the endpoint. A run without the record (a probe file from before the guard) is flagged as not
    guarded: nothing then says its generations did not collapse. ``label``: how the flags name the
    run (its name by default)."""
    shown = label or name
    if record is None:
        return {
            "measured": False,
            "flags": [
                f"{shown}: {NOT_GUARDED}: the probe's metrics hold no experiments.{name}.guard (probed before the "
                "probe compared generations with test reconstructions): probe this run again"
            ],
        }
    ratios, shares, flags = {}, {}, []
    for seed, scores in record["by_scorer"].items():
        if not all(_positive(scores[k]) for k in ("generated_fld", "reconstructed_fld", "coverage_floor")):
            flags.append(
                f"{shown}: {NOT_GUARDED}: scorer seed {seed}'s FLD or coverage floor is not a positive number "
                f"({scores}): the guard cannot be read"
            )
            continue
        ratios[seed] = scores["generated_fld"] / scores["reconstructed_fld"]
        shares[seed] = float(scores["generated_coverage"] or 0.0) / scores["coverage_floor"]
    found: dict[str, Any] = {
        "measured": True,
        "n_layouts": record.get("n_layouts"),
        "fld_ratio_by_scorer": ratios,
        "coverage_share_by_scorer": shares,
        "fld_ratio": math.exp(float(np.mean(np.log(list(ratios.values()))))) if ratios else None,
        "coverage_share": float(np.mean(list(shares.values()))) if shares else None,
    }
    if found["fld_ratio"] is not None and found["fld_ratio"] < rule.guard_fld_ratio:
        below = sum(r < rule.guard_fld_ratio for r in ratios.values())
        flags.append(
            f"{shown}: {COLLAPSED}: its generations' FLD is {sig(found['fld_ratio'])} x its test reconstructions' "
            f"(geometric mean over {len(ratios)} scorer seeds, {below} of them below; the rule: at least "
            f"{rule.guard_fld_ratio:g} x), closer to real than its own decoder's rendering of real layouts"
        )
    if found["coverage_share"] is not None and found["coverage_share"] < rule.guard_coverage_share:
        flags.append(
            f"{shown}: {TOO_FAR}: they cover {sig(found['coverage_share'])} of what as many real layouts cover "
            f"(coverage, mean over {len(shares)} scorer seeds; the rule: at least {rule.guard_coverage_share:g})"
        )
    return found | {"flags": flags}
