"""The diffusability measures on constructed latents, encoders and decoders whose answers are
known, including cases built to fool a naive version of each measure."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import V2

from imginav_core import build_model, load_config
from imginav_core.palette import IGNORE_INDEX, NUM_CLASSES, class_to_rgb
from imginav_core.study.probe import diffusability as d


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _checkerboard(size):
    i = torch.arange(size, dtype=torch.float64)
    return (-1.0) ** (i.view(-1, 1) + i.view(1, -1))


def _high_bins(h, w, cutoff):
    """The definition's count of high-frequency bins, spelled out bin by bin."""
    return sum(1 for u in range(h) for v in range(w) if (u, v) != (0, 0) and max(u / h, v / w) >= cutoff)


def _smooth(n, c, size, seed=0):
    """Random fields with no detail finer than size / 4: 4 x 4 noise, bilinearly upsampled."""
    low = torch.randn(n, c, 4, 4, generator=_gen(seed), dtype=torch.float64)
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


# ---- spectrum ------------------------------------------------------------------------------------


def _dct_matrix(n):
    """The orthonormal DCT-II matrix from its formula: D[k, i] = s_k cos(pi (2i + 1) k / (2n))."""
    k, i = np.arange(n).reshape(-1, 1), np.arange(n).reshape(1, -1)
    scale = np.where(k == 0, math.sqrt(1 / n), math.sqrt(2 / n))
    return torch.from_numpy(scale * np.cos(math.pi * (2 * i + 1) * k / (2 * n)))


def test_dct_is_orthonormal_and_matches_its_formula():
    x = torch.randn(3, 2, 6, 4, generator=_gen(), dtype=torch.float64)
    y = d.dct2(x)
    assert torch.allclose(y, _dct_matrix(6) @ x @ _dct_matrix(4).T)  # the formula, row and column
    assert torch.allclose(y.pow(2).sum((-2, -1)), x.pow(2).sum((-2, -1)))  # Parseval
    assert torch.allclose(_dct_matrix(6).T @ y @ _dct_matrix(4), x)  # inverse
    flat = d.dct2(torch.full((4, 4), 3.0, dtype=torch.float64))
    assert float(flat[0, 0]) == pytest.approx(12.0) and float(flat.abs().sum()) == pytest.approx(12.0)


@pytest.mark.parametrize("size,cutoff", [(32, 0.5), (32, 0.25), (4, 0.5)])
def test_white_noise_has_the_analytic_share(size, cutoff):
    noise = torch.randn(2048 // size, 4, size, size, generator=_gen())
    result = d.high_frequency_share(noise, cutoff)
    expected = _high_bins(size, size, cutoff) / (size * size - 1)  # 768/1023, 960/1023, 12/15
    assert result["high_bins"] == _high_bins(size, size, cutoff)
    assert result["share"] == pytest.approx(expected, abs=0.01)
    assert result["pooled_share"] == pytest.approx(expected, abs=0.01)


def test_smooth_fields_have_a_low_share_and_checkerboards_a_share_near_one():
    assert d.high_frequency_share(_smooth(32, 4, 32))["share"] < 0.002
    # On a 4 x 4 grid the smoothest non-flat maps are planes; their only high bin is (3, *) or (*, 3).
    i = torch.arange(4, dtype=torch.float64)
    slopes = torch.randn(32, 4, 2, 1, 1, generator=_gen(), dtype=torch.float64)
    planes = slopes[:, :, 0] * i.view(-1, 1) + slopes[:, :, 1] * i.view(1, -1)
    assert d.high_frequency_share(planes)["share"] < 0.01

    signs = torch.randn(16, 3, 1, 1, generator=_gen(1), dtype=torch.float64)
    assert d.high_frequency_share(signs * _checkerboard(32))["share"] > 0.99
    # On 4 x 4, (-1)^i puts (2 + sqrt 2) / 4 of its power in DCT bin 3 and the rest in bin 1,
    # so only bin (1, 1) of the 2-D checkerboard is low.
    assert d.high_frequency_share(signs * _checkerboard(4))["share"] == pytest.approx(
        1 - ((2 - math.sqrt(2)) / 4) ** 2, abs=1e-9
    )


def test_share_is_invariant_to_each_channels_scale_and_offset():
    z = torch.randn(16, 4, 8, 8, generator=_gen())
    base = d.high_frequency_share(z)
    z[:, 2] = 100.0 * z[:, 2] + 7.0
    moved = d.high_frequency_share(z)
    assert moved["per_channel"] == pytest.approx(base["per_channel"], rel=1e-5)
    assert moved["share"] == pytest.approx(base["share"], rel=1e-5)


def test_a_faint_high_frequency_channel_is_not_hidden_by_loud_smooth_ones():
    """Fooling case: three smooth channels of scale 100 and one checkerboard channel of scale
    0.01. Pooling raw power, the checkerboard is 1e-8 of the total and vanishes; standardised
    per channel, it is one channel in four."""
    z = 100.0 * _smooth(16, 4, 32) + 50.0
    z[:, 3] = 0.01 * torch.randn(16, 1, 1, generator=_gen(2), dtype=torch.float64) * _checkerboard(32)
    power = d.dct2(z - z.mean((0, 2, 3), keepdim=True)).pow(2).sum((0, 1))
    high = torch.tensor([[max(u, v) >= 16 for v in range(32)] for u in range(32)])
    high[0, 0] = False
    naive = float(power[high].sum() / (power.sum() - power[0, 0]))
    assert naive < 1e-3  # no more than the smooth channels' own share (~3e-4)

    result = d.high_frequency_share(z)
    assert result["per_channel"][3] > 0.99 and max(result["per_channel"][:3]) < 0.002
    assert result["share"] == pytest.approx(0.25, abs=0.002)
    assert result["pooled_share"] > 0.2  # standardised, the faint channel's power counts fully too


def test_constant_channels_are_left_out_not_counted_as_smooth():
    z = torch.randn(8, 3, 8, 8, generator=_gen())
    z[:, 1] = 5.0  # e.g. a class absent from every layout, or a collapsed latent channel
    z[:, 2] = torch.randn(8, 1, 1, generator=_gen(1))  # varies across images, flat within each
    result = d.high_frequency_share(z)
    assert result["per_channel"][1] is None and result["per_channel"][2] is None
    assert result["share"] == pytest.approx(result["per_channel"][0])
    assert d.high_frequency_share(torch.zeros(2, 2, 4, 4))["share"] is None
    with pytest.raises(ValueError):
        d.high_frequency_share(torch.randn(2, 2, 1, 1))


# ---- class maps ------------------------------------------------------------------------------------


def test_pooled_class_maps_are_cell_shares_that_sum_to_one():
    maps = torch.randint(0, NUM_CLASSES, (5, 32, 32), generator=_gen(), dtype=torch.uint8)
    pooled = d.pooled_class_maps(maps, 4)
    assert pooled.shape == (5, NUM_CLASSES, 4, 4) and pooled.dtype == torch.float32
    assert torch.allclose(pooled.sum(1), torch.ones(5, 4, 4))
    cell = maps[3, 8:16, 24:32]
    assert float(pooled[3, 7, 1, 3]) == pytest.approx(float((cell == 7).float().mean()))
    assert torch.equal(d.pooled_class_maps(maps, 4, chunk=2), pooled)  # chunking changes nothing


def test_a_half_and_half_map_pools_to_the_right_shares():
    m = np.full((1, 8, 8), 8, dtype=np.uint8)  # wall; numpy, as palette.rgb_to_class returns it
    m[:, :, :4] = 2  # chair on the left half
    whole = d.pooled_class_maps(m, 1)[0, :, 0, 0]
    assert float(whole[2]) == 0.5 and float(whole[8]) == 0.5 and float(whole.sum()) == 1.0
    halves = d.pooled_class_maps(m, 2)[0]
    assert torch.equal(halves[2], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    m[:, :, :3] = 0  # bed on 3 of 8 columns: 3/8 of the whole, 3/4 of the left cells
    assert float(d.pooled_class_maps(m, 1)[0, 0, 0, 0]) == pytest.approx(3 / 8)
    assert float(d.pooled_class_maps(m, 2)[0, 0, 1, 0]) == pytest.approx(3 / 4)


def test_ignored_pixels_count_for_no_class():
    m = torch.full((1, 4, 4), 3, dtype=torch.uint8)
    m[0, :2, :1] = IGNORE_INDEX  # half of the top-left cell
    m[0, 2:, 2:] = IGNORE_INDEX  # all of the bottom-right cell
    pooled = d.pooled_class_maps(m, 2)[0]
    assert float(pooled[3, 0, 0]) == 1.0  # shares of the valid pixels
    assert float(pooled[:, 1, 1].sum()) == 0.0
    with pytest.raises(ValueError):
        d.pooled_class_maps(torch.full((1, 4, 4), 12), 2)  # neither a class nor IGNORE_INDEX
    with pytest.raises(ValueError):
        d.pooled_class_maps(m, 3)  # 4 px do not pool exactly to 3 cells


# ---- equivariance -------------------------------------------------------------------------------------


def _pointwise_encoder(seed=0):
    """A 1x1 conv then 4x4 average pooling: commutes with every rotation and flip exactly."""
    g = _gen(seed)
    weight = torch.randn(8, 3, 1, 1, generator=g, dtype=torch.float64)
    bias = torch.randn(8, generator=g, dtype=torch.float64)
    return lambda x: F.avg_pool2d(F.conv2d(x, weight, bias), 4)


def _images(n=12, size=16, seed=0):
    return torch.randn(n, 3, size, size, generator=_gen(seed), dtype=torch.float64)


def test_a_pointwise_encoder_is_exactly_equivariant():
    result = d.equivariance_errors(_pointwise_encoder(), _images(), batch_size=5)
    assert set(result["per_transform"]) == {"rot90", "rot180", "rot270", "flip_h", "flip_v"}
    assert max(result["per_transform"].values()) < 1e-12 and result["mean"] < 1e-12


def test_a_position_dependent_pattern_breaks_equivariance_by_the_expected_amount():
    """E(x) = A(x) + P with A equivariant: E(T x) - T E(x) = P - T P for every image."""
    encoder, x = _pointwise_encoder(), _images()
    pattern = torch.randn(8, 4, 4, generator=_gen(3), dtype=torch.float64)
    result = d.equivariance_errors(lambda b: encoder(b) + pattern, x)
    z = encoder(x) + pattern
    variance = float((z - z.mean((0, 2, 3), keepdim=True)).pow(2).sum()) / len(z)
    for name, transform in d.TRANSFORMS.items():
        expected = float((pattern - transform(pattern)).pow(2).sum()) / variance
        assert result["per_transform"][name] == pytest.approx(expected, rel=1e-9)
        assert expected > 0.1
    # unit-free: the same encoder, scaled and shifted, scores the same
    loud = d.equivariance_errors(lambda b: 1000.0 * (encoder(b) + pattern) - 5.0, x)
    assert loud["per_transform"] == pytest.approx(result["per_transform"], rel=1e-9)


def test_a_latent_unrelated_to_the_image_scores_about_two():
    """E(x) = P, i.i.d. noise ignoring the image: ||P - T P||^2 is about twice P's variance, since
    no rotation or flip of an even-sized grid leaves a position in place (so T P is independent
    of P, element by element)."""
    pattern = torch.randn(16, 32, 32, generator=_gen(4), dtype=torch.float64)
    result = d.equivariance_errors(lambda b: pattern.expand(len(b), -1, -1, -1), _images(n=3, size=32))
    for value in result["per_transform"].values():
        assert value == pytest.approx(2.0, abs=0.1)


def test_a_horizontal_kernel_is_flip_but_not_rotation_equivariant():
    """A symmetric 1x3 kernel k = [1, 2, 1] smooths along rows only: mirroring either axis (and so
    the half turn, both mirrors at once) commutes with it. A quarter turn makes it vertical: the
    error is the output of k' - k (taps +1 above and below, -1 left and right: squared norm 4) on
    white noise, against the output of k (squared norm 6), so 4/6 away from the zero-padded border."""
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64).view(1, 1, 1, 3).repeat(3, 1, 1, 1)

    def encode(x):
        return F.conv2d(x, kernel, padding=(0, 1), groups=3)

    result = d.equivariance_errors(encode, _images(n=16, size=32))["per_transform"]
    for name in ("flip_h", "flip_v", "rot180"):
        assert result[name] < 1e-12
    assert result["rot90"] == pytest.approx(4 / 6, abs=0.05) and result["rot270"] == pytest.approx(4 / 6, abs=0.05)


def test_an_antisymmetric_kernel_flips_the_sign_and_scores_four():
    """y[j] = x[j+1] - x[j-1]: mirroring left-right gives E(F x) = -F E(x), so the error is
    ||2 E(x)||^2 = 4 ||E(x)||^2 against a variance of ~||E(x)||^2 (its mean is ~0): worse than an
    unrelated latent. Mirroring top-bottom commutes with it."""
    kernel = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64).view(1, 1, 1, 3)

    def encode(x):
        return F.conv2d(x[:, :1], kernel, padding=(0, 1))

    x = _images(n=32)
    result = d.equivariance_errors(encode, x)["per_transform"]
    z = encode(x)
    expected = 4 * float(z.pow(2).sum()) / float((z - z.mean()).pow(2).sum())
    assert result["flip_h"] == pytest.approx(expected, rel=1e-9) and expected == pytest.approx(4.0, abs=0.05)
    assert result["rot180"] == pytest.approx(expected, rel=1e-9)
    assert result["flip_v"] < 1e-12


def test_a_collapsed_encoder_is_not_reported_as_equivariant():
    """Fooling case: a constant latent commutes with everything; with no variance the relative
    error is undefined, and reported as such rather than as a perfect 0."""
    result = d.equivariance_errors(lambda b: torch.ones(len(b), 4, 2, 2), _images())
    assert result["mean"] is None and all(v is None for v in result["per_transform"].values())


def test_non_square_images_skip_the_quarter_turns():
    x = torch.randn(4, 3, 16, 32, generator=_gen(), dtype=torch.float64)
    result = d.equivariance_errors(_pointwise_encoder(), x)["per_transform"]
    assert result["rot90"] is None and result["rot270"] is None and result["flip_h"] < 1e-12


# ---- scale consistency -------------------------------------------------------------------------------


def test_identity_autoencoder_is_scale_consistent():
    x = _images(n=4)
    result = d.scale_consistency(lambda b: b, lambda z: {"rgb": z}, x, factor=2)
    assert result["mse"] == 0.0 and result["relative_mse"] == 0.0 and result["reference_relative_mse"] == 0.0
    assert result["target_size"] == [8, 8]


def test_a_decoder_adding_a_checkerboard_is_off_by_its_power():
    x = _images(n=4)

    def decode(z):
        return z + 0.5 * _checkerboard(z.shape[-1])

    result = d.scale_consistency(lambda b: b, decode, x, factor=2)
    pooled = F.avg_pool2d(x, 2)
    variance = float((pooled - pooled.mean((0, 2, 3), keepdim=True)).pow(2).mean())
    assert result["mse"] == pytest.approx(0.25) and result["reference_mse"] == pytest.approx(0.25)
    assert result["relative_mse"] == pytest.approx(0.25 / variance, rel=1e-9)
    assert result["relative_mse"] == pytest.approx(1.0, abs=0.2)  # white noise: Var(pool(x)) = 1/4


def test_a_lossless_but_scale_inconsistent_autoencoder_is_caught():
    """Fooling case: space-to-depth (pixel unshuffle) and back reconstructs perfectly, yet its
    pooled latent decodes to a strided subsample, not the pooled image. On white noise each
    output pixel and its target are means of 4 pixels sharing one: MSE = 6/16, Var = 4/16."""
    x = torch.randn(64, 1, 32, 32, generator=_gen(), dtype=torch.float64)
    result = d.scale_consistency(lambda b: F.pixel_unshuffle(b, 2), lambda z: F.pixel_shuffle(z, 2), x, factor=2)
    assert result["reference_relative_mse"] == 0.0
    assert result["relative_mse"] == pytest.approx(1.5, abs=0.05)


def test_scale_consistency_skips_grids_too_small_to_pool():
    x = _images(n=2, size=4)

    def identity(t):
        return t

    assert "skipped" in d.scale_consistency(lambda b: b[..., :2, :2], identity, x, factor=2)
    assert "skipped" in d.scale_consistency(lambda b: b[..., :3, :3], identity, x, factor=2)
    assert "skipped" not in d.scale_consistency(identity, identity, x, factor=2)  # 4x4 -> 2x2


# ---- the real model ---------------------------------------------------------------------------------


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_every_measure_runs_on_the_untrained_layout_autoencoder():
    torch.manual_seed(0)
    model = build_model(load_config(V2, {"data.resolution": 64})).eval()
    blocks = torch.randint(0, NUM_CLASSES, (8, 8, 8), generator=_gen(), dtype=torch.uint8)
    maps = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)
    maps[:, 31, :5] = IGNORE_INDEX  # a few anti-aliased pixels
    images = torch.from_numpy(class_to_rgb(maps)).permute(0, 3, 1, 2).float() / 127.5 - 1

    def encode(x):
        return model.posterior(x).mean

    with torch.no_grad():
        latents = encode(images)
    assert latents.shape == (8, 16, 4, 4)
    results = {
        "latents": d.high_frequency_share(latents),
        "layouts": d.high_frequency_share(d.pooled_class_maps(maps, 4)),
        "equivariance": d.equivariance_errors(encode, images, batch_size=4),
        "scale": d.scale_consistency(encode, model.decode, images),
    }
    assert results["latents"]["share"] is not None and results["equivariance"]["mean"] is not None
    assert results["scale"]["target_size"] == [32, 32] and results["scale"]["relative_mse"] is not None
    assert _finite(results)
