import numpy as np
import pytest
import torch
from helpers import TINY_MODEL, V1, V2, metrics_rows, run_dir, small_config
from torch.distributions import Normal, kl_divergence

from imginav_core import ConfigError, build_model, load_config, losses, train
from imginav_core.data.cache import load_layout
from imginav_core.data.manifest import read_manifest
from imginav_core.losses import TERMS, LossTerm, add_term, compute_losses
from imginav_core.model import DiagonalGaussian
from imginav_core.palette import IGNORE_INDEX
from imginav_core.runtime import setup_runtime
from imginav_core.training.checkpoints import load_checkpoint
from imginav_core.training.loop import build_training, make_train_step


def _outputs(batch=2, size=8, variational=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {
        "rgb": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
        "segmentation": torch.randn(batch, 10, size, size, generator=g),
        "classification": torch.randn(batch, 2, generator=g),
    }
    mean = torch.randn(batch, 4, 2, 2, generator=g)
    out["posterior"] = DiagonalGaussian(mean, torch.randn(batch, 4, 2, 2, generator=g) * 0.5 if variational else None)
    return out


def _targets(batch=2, size=8):
    g = torch.Generator().manual_seed(1)
    return (
        torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
        torch.randint(0, 10, (batch, size, size), generator=g),
        torch.randint(0, 2, (batch,), generator=g),
    )


def test_kld_matches_the_closed_form_mean_over_latent_elements():
    out = _outputs()
    cfg = load_config(V2)
    losses = compute_losses(out, *_targets(), cfg.loss)
    std = torch.exp(0.5 * out["posterior"].logvar)
    expected = kl_divergence(Normal(out["posterior"].mean, std), Normal(0.0, 1.0)).mean()
    assert torch.allclose(losses["kld"], expected, rtol=1e-5)
    mu, var = out["posterior"].mean.numpy(), std.numpy() ** 2
    by_hand = np.mean(0.5 * (var + mu**2 - 1.0 - np.log(var)))
    assert abs(float(losses["kld"]) - by_hand) < 1e-5
    assert torch.allclose(losses["kld_weighted"], 1e-4 * expected, rtol=1e-5)


def test_weighted_terms_sum_to_the_total_the_kl_is_no_reconstruction_and_v1_has_zero_kld():
    rgb, class_map, label = _targets()
    assert [(t.name, t.reconstruction) for t in TERMS] == [
        ("mse", True),
        ("segmentation", True),
        ("classification", True),
        ("kld", False),
    ]
    for config, variational in ((V1, False), (V2, True)):
        cfg = load_config(config)
        losses = compute_losses(_outputs(variational=variational), rgb, class_map, label, cfg.loss)
        total = sum(losses[f"{t}_weighted"] for t in ("mse", "segmentation", "classification", "kld"))
        assert torch.allclose(losses["total"], total)
        reconstruction = sum(losses[f"{t}_weighted"] for t in ("mse", "segmentation", "classification"))
        assert torch.allclose(losses["reconstruction"], reconstruction)
        assert torch.allclose(losses["total"] - losses["reconstruction"], losses["kld_weighted"])
        assert torch.allclose(losses["segmentation_weighted"], 0.05 * losses["segmentation"])
        assert torch.allclose(losses["classification_weighted"], 0.01 * losses["classification"])
        if not variational:
            assert float(losses["kld"]) == 0.0


def test_cross_entropy_takes_logits_and_skips_off_palette_pixels():
    rgb, class_map, label = _targets()
    out = _outputs(variational=False)
    # confident, correct logits: the loss of a logits-based CE goes to ~0 (a softmax-then-CE
    # implementation cannot go below ~1.46 for 10 classes)
    out["segmentation"] = torch.nn.functional.one_hot(class_map, 10).permute(0, 3, 1, 2).float() * 50
    out["classification"] = torch.nn.functional.one_hot(label, 2).float() * 50
    class_map = class_map.clone()
    class_map[0, :2] = IGNORE_INDEX
    losses = compute_losses(out, rgb, class_map, label, load_config(V1).loss)
    assert float(losses["segmentation"]) < 1e-6 and float(losses["classification"]) < 1e-6
    class_map[:] = IGNORE_INDEX
    assert torch.isfinite(compute_losses(out, rgb, class_map, label, load_config(V1).loss)["total"])


def test_the_segmentation_head_learns(synthetic_manifest):
    records = read_manifest(synthetic_manifest).records[:8]
    layouts = [load_layout(r.path, 32) for r in records]
    rgb = torch.from_numpy(np.stack([layout[0] for layout in layouts])).permute(0, 3, 1, 2).float() / 127.5 - 1
    class_map = torch.from_numpy(np.stack([layout[1] for layout in layouts])).long()
    label = torch.tensor([r.label for r in records])
    cfg = load_config(V1, {"data.resolution": 32})
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(80):
        optimizer.zero_grad()
        losses = compute_losses(model(rgb), rgb, class_map, label, cfg.loss)
        losses["total"].backward()
        optimizer.step()
        history.append(float(losses["segmentation"].detach()))
    assert history[-1] < 0.4 * history[0], history[::10]


# ---- a term added without touching the training loop ---------------------------------------------


class FrozenFeatures:
    """A perceptual-style term: the MSE between a frozen random conv net's features of the RGB head
    and of the target. It owns its network, built on first use on its inputs' device, from its own
    generator (the global one belongs to the run, which a resumption replays), and never trained."""

    def __init__(self):
        self.network = None

    def __call__(self, outputs, rgb, class_map, label):
        if self.network is None:
            generator = torch.Generator().manual_seed(7)
            conv = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1)
            with torch.no_grad():
                for weight in conv.parameters():
                    weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
            self.network = torch.nn.Sequential(conv, torch.nn.SiLU()).requires_grad_(False).eval()
        self.network.to(rgb.device)
        return torch.nn.functional.mse_loss(self.network(outputs["rgb"].float()), self.network(rgb))


@pytest.fixture
def features_term():
    term = LossTerm("features", FrozenFeatures(), reconstruction=True, label="frozen features")
    add_term(term)
    yield term
    TERMS.remove(term)


def test_a_term_with_a_frozen_network_is_one_function_and_one_weight(features_term, tmp_path, one_thread):
    cfg = small_config(V1, tmp_path, **TINY_MODEL, **{"training.epochs": 2, "loss.features": 0.5})
    assert cfg.loss.features == cfg.get("loss.features") == 0.5
    with pytest.raises(ConfigError, match=r"missing config key 'loss.features'"):
        load_config(V1)  # a registered term's weight is a key like the others: every config states it

    # one real optimisation step: the term is summed, weighted, and its network gets no gradient
    rt = setup_runtime(cfg)
    model, optimizer, scaler = build_training(cfg, rt)
    step = make_train_step(model, optimizer, cfg, rt, scaler)
    rgb = torch.rand(2, 3, 32, 32) * 2 - 1
    step_losses = step(rgb, torch.randint(0, 10, (2, 32, 32)), torch.tensor([0, 1]))
    assert float(step_losses["features"].detach()) > 0
    assert torch.allclose(step_losses["features_weighted"], 0.5 * step_losses["features"])
    assert torch.allclose(
        step_losses["reconstruction"],
        sum(step_losses[f"{t}_weighted"] for t in ("mse", "segmentation", "classification", "features")),
    )
    network = features_term.compute.network
    assert all(p.grad is None and not p.requires_grad for p in network.parameters())
    in_optimiser = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not in_optimiser & {id(p) for p in network.parameters()}

    # a short run: its raw and weighted columns, train and validation, in the metrics CSV
    train(cfg, log=lambda _: None)
    rows = metrics_rows(run_dir(cfg) / f"{cfg.name}_metrics.csv")
    assert len(rows) == 2
    for row in rows:
        for split in ("train", "val"):
            raw, weighted = float(row[f"{split}_features"]), float(row[f"{split}_features_weighted"])
            assert raw > 0 and weighted == pytest.approx(0.5 * raw)
    checkpoint = load_checkpoint(run_dir(cfg) / "last.pt")
    assert checkpoint["config"]["loss"]["features"] == 0.5
    assert len(checkpoint["optimizer"]["state"]) == len(list(build_model(cfg).parameters()))  # the model's only


def test_a_term_name_must_be_new_and_name_a_key():
    for name in ("mse", "total", "reconstruction", "two words"):
        with pytest.raises(ValueError, match=rf"loss term name '{name}'"):
            add_term(LossTerm(name, losses.mse, reconstruction=True, label=name))
