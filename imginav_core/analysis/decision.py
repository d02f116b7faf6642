"""The Phase 1.2 decision, written as code from the specification's criteria.

Prefer the deterministic encoder when quality is similar (simpler, faster, more direct). Choose
the VAE only when its latent space is measurably smoother — interpolation or robustness to
latent noise — without a material loss of reconstruction quality or sharpness, and without
posterior collapse. A weighted KLD outside 1e-4..1e-3 is flagged. Every threshold is a named
field of ``Thresholds``; the outputs record each criterion's numbers and verdict.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import config_from_dict
from ..files import write_text_atomic
from ..outputs import Outputs
from .runs import RunSummary


@dataclass(frozen=True)
class Thresholds:
    # Reconstruction may get at most this much worse with the VAE (relative validation MSE).
    max_mse_increase: float = 0.25
    # ... and SSIM at most this much lower (absolute).
    max_ssim_drop: float = 0.02
    # Blur: the VAE's sharpness ratio (reconstruction / input gradient energy) at most this much lower.
    max_sharpness_drop: float = 0.05
    # Interpolation: the VAE's mean path-length ratio (straight path) at least this much lower (relative).
    min_path_ratio_gain: float = 0.02
    # Noise: the VAE's growth of MSE under latent noise (MSE(sigma) / MSE(0)) at least this much lower (relative).
    min_noise_gain: float = 0.10
    # The noise level compared (a multiple of each latent space's own standard deviation).
    noise_sigma: float = 0.5
    # The specification's band for the (weighted) KLD: below = barely regularised, above = risk of blur/collapse.
    kld_low: float = 1e-4
    kld_high: float = 1e-3
    # Below these the data cannot settle the question (e.g. the small synthetic default).
    min_train_images: int = 5000
    min_resolution: int = 256
    min_epochs: int = 5


def _noise_growth(model: dict, sigma: float) -> float:
    noise = model["noise"]
    index = min(range(len(noise["sigmas"])), key=lambda i: abs(noise["sigmas"][i] - sigma))
    return noise["relative_to_clean"][index]


def decide(latent_metrics: dict, runs: list[RunSummary], train_images: int,
           thresholds: Thresholds = Thresholds(), warnings: list[str] | None = None) -> dict[str, Any]:
    """The decision record (``decision.json``'s content) for one deterministic and one VAE run."""
    det = [r for r in runs if not r.config.model.variational]
    vae = [r for r in runs if r.config.model.variational]
    if len(det) != 1 or len(vae) != 1:
        raise ValueError(f"the decision compares one deterministic and one variational run, got "
                         f"{[r.name for r in det]} and {[r.name for r in vae]}")
    det, vae = det[0], vae[0]
    t = thresholds
    a, b = latent_metrics["models"][det.name], latent_metrics["models"][vae.name]
    ra, rb = a["reconstruction"]["all"], b["reconstruction"]["all"]
    criteria: dict[str, dict[str, Any]] = {}

    def criterion(name: str, passed: bool, value: float, threshold: float, meaning: str, **numbers: float) -> bool:
        criteria[name] = {"verdict": "pass" if passed else "fail", "value": value, "threshold": threshold,
                          "meaning": meaning, **numbers}
        return passed

    mse_increase = rb["mse"] / ra["mse"] - 1.0
    quality = criterion("reconstruction_mse", mse_increase <= t.max_mse_increase, mse_increase, t.max_mse_increase,
                        "relative increase of the VAE's validation MSE over the deterministic one",
                        deterministic=ra["mse"], vae=rb["mse"])
    ssim_drop = ra["ssim"] - rb["ssim"]
    quality &= criterion("reconstruction_ssim", ssim_drop <= t.max_ssim_drop, ssim_drop, t.max_ssim_drop,
                         "how much lower the VAE's SSIM is", deterministic=ra["ssim"], vae=rb["ssim"])
    sharp_drop = ra["sharpness_ratio"] - rb["sharpness_ratio"]
    quality &= criterion("sharpness", sharp_drop <= t.max_sharpness_drop, sharp_drop, t.max_sharpness_drop,
                         "how much lower the VAE's sharpness ratio is (blur)",
                         deterministic=ra["sharpness_ratio"], vae=rb["sharpness_ratio"])
    pa = a["interpolation"]["linear"]["mean_path_length_ratio"]
    pb = b["interpolation"]["linear"]["mean_path_length_ratio"]
    path_gain = 1.0 - pb / pa
    smoother = criterion("interpolation_smoothness", path_gain >= t.min_path_ratio_gain, path_gain,
                         t.min_path_ratio_gain, "relative reduction of the path-length ratio with the VAE",
                         deterministic=pa, vae=pb)
    na, nb = _noise_growth(a, t.noise_sigma), _noise_growth(b, t.noise_sigma)
    noise_gain = 1.0 - nb / na
    smoother |= criterion("noise_robustness", noise_gain >= t.min_noise_gain, noise_gain, t.min_noise_gain,
                          f"relative reduction of MSE growth under latent noise (sigma {t.noise_sigma}) with the VAE",
                          deterministic=na, vae=nb)

    posterior = b.get("posterior", {})
    kld = posterior.get("kld_weighted", float("nan"))
    in_band = t.kld_low <= kld <= t.kld_high
    criteria["kld_band"] = {"verdict": "ok" if in_band else "flag", "value": kld, "threshold": [t.kld_low, t.kld_high],
                            "meaning": "weighted KLD of the VAE against the specification's band"}
    collapsed = bool(posterior.get("collapsed", False))
    criteria["posterior_collapse"] = {
        "verdict": "flag" if collapsed else "ok", "value": posterior.get("active_units"),
        "threshold": posterior.get("channels"), "meaning": "active latent channels of the VAE (collapse if too few)"}

    flags = list(warnings or [])
    if not in_band:
        flags.append(f"weighted KLD {kld:.2e} is outside the band {t.kld_low:g}..{t.kld_high:g}")
    if collapsed:
        flags.append(f"posterior collapse: only {posterior.get('active_units')} of {posterior.get('channels')} "
                     "latent channels are active")

    resolution = det.config.data.resolution
    epochs = min(det.epochs_run, vae.epochs_run)
    too_little = []
    if train_images < t.min_train_images:
        too_little.append(f"{train_images} training layouts (< {t.min_train_images})")
    if resolution < t.min_resolution:
        too_little.append(f"{resolution} x {resolution} pixels (< {t.min_resolution})")
    if epochs < t.min_epochs:
        too_little.append(f"{epochs} epochs (< {t.min_epochs})")

    vae_wins = smoother and quality and not collapsed
    chosen = vae if vae_wins else det
    if vae_wins:
        reason = "the VAE's latent space is measurably smoother without a material loss of quality or sharpness"
    elif collapsed:
        reason = "the VAE's posterior collapsed"
    elif not smoother:
        reason = "the VAE's latent space is not measurably smoother, so the simpler deterministic encoder is preferred"
    else:
        reason = "the VAE is smoother but loses reconstruction quality or sharpness beyond the thresholds"
    summary = f"Choose {chosen.label} ({'variational' if vae_wins else 'deterministic'}): {reason}."
    if too_little:
        summary += (" This is provisional: the data is too little to decide (" + ", ".join(too_little) +
                    "); rerun on the full layout set at 512 x 512 for 10 epochs.")
    return {
        "choice": "variational" if vae_wins else "deterministic",
        "chosen_experiment": chosen.name,
        "summary": summary,
        "reason": reason,
        "data_sufficient": not too_little,
        "data_limits": too_little,
        "criteria": criteria,
        "flags": flags,
        "thresholds": asdict(t),
    }


def phase1_3_base_config(decision: dict, runs: list[RunSummary], phase: str = "phase1_3_loss_tuning") -> dict:
    """The next phase's base configuration: the winning architecture and ``variational`` setting,
    with the KLD loss (at the Phase 1.2 weight) only if the VAE won."""
    winner = next(r for r in runs if r.name == decision["chosen_experiment"])
    values = winner.config.to_dict()
    values["name"] = "phase1_3_base"
    values["phase"] = phase
    values["model"]["variational"] = decision["choice"] == "variational"
    if decision["choice"] != "variational":
        values["loss"]["kld"] = 0.0
    return values


def write_decision(decision: dict, runs: list[RunSummary], out: Outputs) -> tuple[Path, Path]:
    """Write ``decision.json`` and ``phase1_3_base.yaml`` (validated as a loadable config) into the phase folder."""
    decision_path, config_path = out.decision, out.next_phase_config
    base = phase1_3_base_config(decision, runs)
    cfg = config_from_dict(base, source=config_path.name)  # refuse to write a config load_config would reject
    write_text_atomic(decision_path, json.dumps(decision, indent=1))
    cfg.save(config_path)
    return decision_path, config_path
