import pytest
import torch
from helpers import V1, V2
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from imginav_core import build_model, load_config
from imginav_core.model import DiagonalGaussian, count_parameters


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


def _meta_model(config):
    with torch.device("meta"):  # shapes only: the 512 x 512 figures without computing anything
        return build_model(load_config(config))


@pytest.mark.parametrize("config", [V1, V2], ids=["V1", "V2"])
def test_512_gives_a_32x32x16_latent_and_the_phase_1_1_size(config):
    """book/using/network.md: the Phase 1.1 network has about 3.12 M parameters and costs 25.3 GFLOP
    forward per 512 x 512 image (flop_counter, a multiply-add counted as 2). V1 exactly 3,119,455;
    V2 adds only the log-variance's 1x1 conv (4,112)."""
    model = _meta_model(config)
    assert count_parameters(model) == {V1: 3_119_455, V2: 3_123_567}[config]
    assert abs(count_parameters(model) / 3.12e6 - 1) < 0.01
    with FlopCounterMode(display=False) as counter:
        out = model(torch.empty(1, 3, 512, 512, device="meta"))
    assert out["latent"].shape == (1, 16, 32, 32)
    assert abs(counter.get_total_flops() / 25.3e9 - 1) < 0.02


def test_the_decoder_ends_with_16_channels_at_the_input_resolution():
    model = build_model(load_config(V1, {"data.resolution": 64}))
    seen = {}
    model.decoder.blocks.register_forward_hook(lambda module, inputs, output: seen.update(features=output))
    model(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert seen["features"].shape == (1, 16, 64, 64)
    # and no further conv per stage: each upsampling stage is [transposed conv, GN, SiLU]
    for stage in model.decoder.blocks:
        assert [type(layer) for layer in stage] == [nn.ConvTranspose2d, nn.GroupNorm, nn.SiLU]


def test_the_heads_are_3x3_conv_gn_silu_3x3_conv_on_the_16_full_resolution_channels():
    decoder = build_model(load_config(V1)).decoder
    for head, out_channels, tail in ((decoder.rgb_head, 3, [nn.Tanh]), (decoder.segmentation_head, 10, [])):
        assert [type(layer) for layer in head] == [nn.Conv2d, nn.GroupNorm, nn.SiLU, nn.Conv2d, *tail]
        first, last = head[0], head[3]
        assert (first.in_channels, first.out_channels, first.kernel_size) == (16, 16, (3, 3))
        assert (last.in_channels, last.out_channels, last.kernel_size) == (16, out_channels, (3, 3))
    assert [type(layer) for layer in decoder.classification_head] == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]
    linear = decoder.classification_head[2]
    assert (linear.in_features, linear.out_features) == (16, 2)


def test_segmentation_and_classification_emit_unnormalised_logits():
    """The first implementation put a softmax before the cross-entropy, and its segmentation head
    never learned. Logits: raising a class's output bias raises exactly that class's output by the
    same amount; a softmax would change every class and keep the sum at 1."""
    model = build_model(load_config(V1, {"data.resolution": 32})).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before = model(x)
        assert not torch.allclose(before["segmentation"].sum(dim=1), torch.ones(2, 32, 32), atol=1e-3)
        assert not torch.allclose(before["classification"].sum(dim=1), torch.ones(2), atol=1e-3)
        model.decoder.segmentation_head[3].bias[0] += 5.0
        model.decoder.classification_head[2].bias[0] += 5.0
        after = model(x)
    for key in ("segmentation", "classification"):
        assert torch.allclose(after[key][:, 0] - before[key][:, 0], torch.tensor(5.0), atol=1e-4)
        assert torch.equal(after[key][:, 1:], before[key][:, 1:])


def test_the_vae_has_two_separate_1x1_convs_for_mean_and_log_variance():
    vae = build_model(load_config(V2, {"data.resolution": 32})).eval()
    to_mean, to_logvar = vae.encoder.to_mean, vae.encoder.to_logvar
    for conv in (to_mean, to_logvar):
        assert isinstance(conv, nn.Conv2d)
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (256, 16, (1, 1))
    assert to_mean.weight.data_ptr() != to_logvar.weight.data_ptr()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        features = vae.encoder(x)
        posterior = vae.posterior(x)
        assert torch.allclose(posterior.mean, to_mean(features))
        assert torch.allclose(posterior.logvar, to_logvar(features).clamp(-30.0, 20.0))
    # the deterministic encoder has the mean's conv alone: no log-variance to predict
    ae = build_model(load_config(V1, {"data.resolution": 32}))
    assert ae.encoder.to_logvar is None and ae.encoder.to_mean.kernel_size == (1, 1)


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
