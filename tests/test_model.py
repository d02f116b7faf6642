import pytest
import torch

from imginav_core import build_model, load_config
from imginav_core.model import DiagonalGaussian, count_parameters

from helpers import V1, V2


@pytest.mark.parametrize("config", [V1, V2], ids=["V1", "V2"])
@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes(config, resolution):
    cfg = load_config(config, {"data.resolution": resolution})
    model = build_model(cfg)
    x = torch.rand(2, 3, resolution, resolution) * 2 - 1
    out = model(x)
    side = resolution // 16
    assert out["rgb"].shape == (2, 3, resolution, resolution)
    assert out["rgb"].abs().max() <= 1.0  # tanh head: images in [-1, 1]
    assert out["segmentation"].shape == (2, 10, resolution, resolution)
    assert out["classification"].shape == (2, 2)
    assert out["latent"].shape == (2, 16, side, side)
    posterior = out["posterior"]
    assert posterior.deterministic is not cfg.model.variational
    assert posterior.mean.shape == (2, 16, side, side)
    z = model.encode(x)
    assert z.shape == (2, 16, side, side)
    assert set(model.decode(z)) == {"rgb", "segmentation", "classification"}


def test_512_gives_a_32x32x16_latent_and_about_3m_parameters():
    for config in (V1, V2):
        model = build_model(load_config(config))
        assert model.encode(torch.zeros(1, 3, 512, 512)).shape == (1, 16, 32, 32)
        assert 2.5e6 < count_parameters(model) < 3.5e6


def test_vae_samples_in_training_and_uses_the_mean_in_evaluation():
    model = build_model(load_config(V2, {"data.resolution": 32}))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model.train()
    a, b = model(x)["latent"], model(x)["latent"]
    assert not torch.allclose(a, b)  # two posterior samples differ
    model.eval()
    out = model(x)
    assert torch.equal(out["latent"], out["posterior"].mean)
    assert torch.equal(model.encode(x), out["posterior"].mean)
    assert float(out["posterior"].kl().detach()) > 0


def test_deterministic_encoder_is_deterministic_and_its_posterior_a_point_mass():
    model = build_model(load_config(V1, {"data.resolution": 32})).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = model(x)
    assert torch.equal(out["latent"], model(x)["latent"])
    assert torch.equal(out["latent"], out["posterior"].mean) and float(out["posterior"].kl().detach()) == 0.0


def test_a_point_mass_has_no_kl_wherever_it_sits_and_a_gaussian_has_its_closed_form():
    """The case built to fool a KL that only looks at the mean: a point mass at 3 is as far from
    the prior's centre as a unit Gaussian at 3, whose KL is 3^2 / 2 = 4.5 per element, yet the
    point mass is not regularised at all (KL 0, sample = mode = mean)."""
    mean = torch.full((2, 4, 3, 3), 3.0)
    point = DiagonalGaussian(mean)
    assert point.deterministic and float(point.kl()) == 0.0 and torch.equal(point.sample(), mean)
    gaussian = DiagonalGaussian(mean, torch.zeros_like(mean))
    assert not gaussian.deterministic
    assert abs(float(gaussian.kl()) - 4.5) < 1e-6
    assert float(DiagonalGaussian(torch.zeros_like(mean), torch.zeros_like(mean)).kl()) == 0.0  # the prior itself
    torch.manual_seed(0)
    assert not torch.equal(gaussian.sample(), mean)
    # computed in float32 whatever the encoder's precision, as the loss needs
    half = DiagonalGaussian(mean.bfloat16(), torch.zeros_like(mean).bfloat16())
    assert half.kl().dtype == torch.float32 and abs(float(half.kl()) - 4.5) < 1e-6
