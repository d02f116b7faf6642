"""Each latent-space measurement on a constructed case whose answer is known."""

import math

import pytest
import torch

from imginav_core.analysis import measures as m
from imginav_core.palette import PALETTE


def _layout(n=2, size=16, seed=0):
    """Blocky palette images in [-1, 1]: two colours split down the middle, plus a square."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor(PALETTE, dtype=torch.float32) / 127.5 - 1
    images = torch.empty(n, 3, size, size)
    for i in range(n):
        a, b, c = colours[torch.randint(0, 10, (3,), generator=g)]
        images[i] = a.view(3, 1, 1)
        images[i, :, :, size // 2:] = b.view(3, 1, 1)
        images[i, :, 4:8, 4:8] = c.view(3, 1, 1)
    return images


def test_identical_images_are_perfect():
    x = _layout()
    assert torch.all(m.mse_per_image(x, x) == 0)
    assert torch.allclose(m.ssim_per_image(x, x), torch.ones(2))
    out, inp = m.edge_energy(x, x)
    assert torch.allclose(out / inp, torch.ones(2))
    # and edges half as strong score half (the ratio is not 1 by construction)
    out, inp = m.edge_energy(0.5 * x, x)
    assert torch.allclose(out / inp, torch.full((2,), 0.5))
    assert torch.allclose(m.palette_purity(x), torch.ones(2))


def test_blur_lowers_the_sharpness_ratio_but_noise_in_flat_regions_does_not_raise_it():
    x = _layout()
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    out, inp = m.edge_energy(blurred, x)
    assert float((out / inp).max()) < 0.8
    noisy = x.clone()
    noisy[:, :, 10:, 0:3] += 0.3 * torch.randn(2, 3, 6, 3, generator=torch.Generator().manual_seed(1))
    out, inp = m.edge_energy(noisy, x)
    assert abs(float((out / inp).mean()) - 1.0) < 0.2  # noise away from edges barely counts


def test_palette_purity_counts_off_palette_pixels():
    x = _layout(n=1)
    x[:, :, :4, :] = 0.0  # 127.5 grey: 6.4 from "others" (127), within tolerance
    assert float(m.palette_purity(x)) == 1.0
    x[:, 0, :8, :] = 1.0
    x[:, 1:, :8, :] = -1.0  # pure red (255, 0, 0): far from every palette colour
    assert float(m.palette_purity(x)) == pytest.approx(0.5)


def test_segmentation_confidence_of_uniform_and_certain_logits():
    assert float(m.segmentation_confidence(torch.zeros(1, 10, 4, 4))) == pytest.approx(0.1)
    certain = torch.zeros(1, 10, 4, 4)
    certain[:, 3] = 50.0
    assert float(m.segmentation_confidence(certain)) == pytest.approx(1.0)


def test_latent_statistics_of_known_distributions():
    g = torch.Generator().manual_seed(0)
    gaussian = 2.0 * torch.randn(400, 4, 8, 8, generator=g) + 0.5
    stats = m.latent_statistics(gaussian)
    assert stats["std"] == pytest.approx(2.0, rel=0.02) and stats["mean"] == pytest.approx(0.5, abs=0.05)
    assert stats["scale_factor"] == pytest.approx(0.5, rel=0.02)
    assert abs(stats["excess_kurtosis"]) < 0.1 and len(stats["channel_std"]) == 4
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((400, 4, 8, 8))
    assert m.latent_statistics(laplace)["excess_kurtosis"] == pytest.approx(3.0, abs=0.4)


def test_posterior_health_counts_active_channels_and_flags_collapse():
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(200, 4, 2, 2)
    mu[:, :2] = torch.randn(200, 2, 2, 2, generator=g)  # channels 0, 1 vary across layouts
    logvar = torch.zeros_like(mu)
    health = m.posterior_health(mu, logvar, kld_weight=1e-4, min_active_fraction=0.5)
    assert health["active_units"] == 2 and health["collapsed"] is False
    # KL of N(mu, 1) to N(0, 1) is mu^2 / 2 per element
    assert health["kld"] == pytest.approx(float((mu.pow(2) / 2).mean()), rel=1e-6)
    assert health["kld_weighted"] == pytest.approx(1e-4 * health["kld"])
    assert health["kl_per_channel"][2] == 0.0 and health["kl_per_channel"][0] > 0.3
    collapsed = m.posterior_health(torch.zeros(50, 4, 2, 2), torch.zeros(50, 4, 2, 2), 1e-4, 0.5)
    assert collapsed["active_units"] == 0 and collapsed["collapsed"] is True


def test_path_smoothness_of_even_detouring_and_abrupt_paths():
    a, b = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    alphas = torch.linspace(0, 1, 11)
    even = m.path_smoothness(m.lerp(a, b, alphas))
    assert even["path_length_ratio"] == pytest.approx(1.0) and even["max_step_share"] == pytest.approx(0.1)
    abrupt = torch.stack([a] * 5 + [b] * 6)
    jump = m.path_smoothness(abrupt)
    assert jump["path_length_ratio"] == pytest.approx(1.0) and jump["max_step_share"] == pytest.approx(1.0)
    detour = torch.stack([a, torch.full((3, 4, 4), 3.0), b])  # overshoots and comes back
    assert m.path_smoothness(detour)["path_length_ratio"] == pytest.approx(5.0)


def test_slerp_keeps_the_ends_and_the_norm_between_equal_norm_latents():
    z0 = torch.zeros(2, 2, 2)
    z1 = torch.zeros(2, 2, 2)
    z0[0, 0, 0], z1[1, 1, 1] = 3.0, 3.0  # orthogonal, same norm
    path = m.slerp(z0, z1, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], z0, atol=1e-6) and torch.allclose(path[-1], z1, atol=1e-6)
    assert torch.allclose(path.flatten(1).norm(dim=1), torch.full((5,), 3.0), atol=1e-5)
    straight = m.lerp(z0, z1, torch.tensor([0.5]))
    assert float(straight.norm()) == pytest.approx(3 / math.sqrt(2), rel=1e-5)


def test_latent_noise_scales_with_sigma_and_is_reproducible():
    z = torch.zeros(2, 4, 3, 3)
    a = m.add_latent_noise(z, 0.5, 2.0, torch.Generator().manual_seed(3))
    b = m.add_latent_noise(z, 0.5, 2.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert float(a.std()) == pytest.approx(1.0, rel=0.35)
    assert torch.equal(m.add_latent_noise(z, 0.0, 2.0, torch.Generator().manual_seed(3)), z)
