import pytest
import torch

from imginav_core import build_model, load_config
from imginav_core.model import count_parameters

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
    assert ("mu" in out) == ("logvar" in out) == cfg.model.variational
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
    assert torch.equal(out["latent"], out["mu"])
    assert torch.equal(model.encode(x), out["mu"])


def test_deterministic_encoder_is_deterministic():
    model = build_model(load_config(V1, {"data.resolution": 32})).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(model(x)["latent"], model(x)["latent"])
