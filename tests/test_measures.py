"""Each latent-space measurement on a constructed case whose answer is known."""

import math

import numpy as np
import pytest
import torch

from imginav_core.palette import PALETTE
from imginav_core.study.analysis import measures as m
from imginav_core.study.analysis.criteria import Rule, rule_criteria
from imginav_core.study.analysis.evaluation import noise_partners
from imginav_core.study.analysis.study import noise_robustness, reconstruction_per_image


def _layout(n=2, size=16, seed=0):
    """Blocky palette images in [-1, 1]: two colours split down the middle, plus a square."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor(PALETTE, dtype=torch.float32) / 127.5 - 1
    images = torch.empty(n, 3, size, size)
    for i in range(n):
        a, b, c = colours[torch.randint(0, 10, (3,), generator=g)]
        images[i] = a.view(3, 1, 1)
        images[i, :, :, size // 2 :] = b.view(3, 1, 1)
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


def test_latent_statistics_per_channel_are_not_fooled_by_unequal_scales():
    g = torch.Generator().manual_seed(0)
    gaussian = 2.0 * torch.randn(400, 4, 8, 8, generator=g) + 0.5
    stats = m.latent_statistics(gaussian)
    assert stats["std"] == pytest.approx(2.0, rel=0.02) and stats["scale_factor"] == pytest.approx(0.5, rel=0.02)
    assert max(abs(k) for k in stats["channel_excess_kurtosis"]) < 0.1 and len(stats["channel_std"]) == 4
    # two Gaussian channels of std 0.5 and 2: pooled, their kurtosis would read 2.3 (heavy tails)
    mixed = torch.randn(4000, 2, 4, 4, generator=g) * torch.tensor([0.5, 2.0]).view(1, 2, 1, 1)
    pooled = mixed.double().flatten()
    assert float((pooled - pooled.mean()).pow(4).mean() / pooled.var().pow(2) - 3) == pytest.approx(2.3, abs=0.2)
    assert abs(m.latent_statistics(mixed)["max_channel_excess_kurtosis"]) < 0.1
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((400, 4, 8, 8))
    assert m.latent_statistics(laplace)["median_channel_excess_kurtosis"] == pytest.approx(3.0, abs=0.5)


def test_posterior_health_counts_units_and_states_the_kl_in_units():
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(200, 4, 2, 2)
    mu[:, :2] = torch.randn(200, 2, 2, 2, generator=g)  # channels 0, 1 vary across layouts
    mu[:, 2, 0, 0] = torch.randn(200, generator=g)  # and one unit of channel 2
    logvar = torch.zeros_like(mu)
    health = m.posterior_health(mu, logvar, kld_weight=1e-4, pixels=64 * 64, total_loss=0.05)
    assert health["active_units"] == 9 and health["units"] == 16 and health["active_share"] == pytest.approx(9 / 16)
    assert health["active_share_per_channel"] == pytest.approx([1.0, 1.0, 0.25, 0.0])
    # KL of N(mu, 1) to N(0, 1) is mu^2 / 2 per element
    nats = float((mu.double().pow(2) / 2).mean())
    assert health["kl_nats_per_element"] == pytest.approx(nats, rel=1e-6)
    assert health["kl_bits_per_pixel"] == pytest.approx(nats * 16 / math.log(2) / 4096, rel=1e-6)
    assert health["kl_share_of_loss"] == pytest.approx(1e-4 * nats / 0.05, rel=1e-6)
    # sigma_q = 1 against means of spread 1: as much noise as signal in channels 0 and 1
    assert health["noise_to_signal_per_channel"][0] == pytest.approx(1.0, rel=0.15)
    assert health["collapsed"] is False
    # a VAE that prunes half its channels has not collapsed; one that encodes nothing has
    collapsed = m.posterior_health(torch.zeros(50, 4, 2, 2), torch.zeros(50, 4, 2, 2), 1e-4, 4096, 0.05)
    assert collapsed["active_units"] == 0 and collapsed["collapsed"] is True
    # the thresholds are the rule's (recorded in the protocol), and the measurement says which it used
    assert (m.ACTIVE_UNIT_THRESHOLD, m.COLLAPSE_SHARE) == (Rule().active_unit_variance, Rule().collapse_active_share)
    assert health["active_threshold"] == 0.01
    strict = m.posterior_health(mu, logvar, 1e-4, 64 * 64, 0.05, active_threshold=2.0, collapse_share=0.5)
    assert strict["active_units"] < 9 and strict["active_threshold"] == 2.0 and strict["collapsed"] is True


def _palette_image(colour_left, colour_right, size=64, block=1, seed=0):
    """A 64 px layout of two palette colours; ``block``-sized squares of the right colour placed at random."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor(PALETTE, dtype=torch.float32) / 127.5 - 1
    image = colours[colour_left].view(3, 1, 1).repeat(1, size, size)
    mask = torch.rand(size // block, size // block, generator=g) < 0.5
    mask = mask.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image[:, mask] = colours[colour_right].view(3, 1)
    return image, mask


def _confident_logits(images):
    """Logits that are sure where an image is a palette colour, unsure where it is not."""
    purity = m.palette_purity(images)
    return torch.stack([torch.full(images.shape[-2:], 10.0 * float(p)) for p in purity]).unsqueeze(1).repeat(
        1, 10, 1, 1
    ) * torch.nn.functional.one_hot(torch.zeros(images.shape[-2:], dtype=torch.long), 10).permute(2, 0, 1)


def test_a_crisp_switch_is_a_valid_path_and_a_cross_fade_is_not_though_its_length_ratio_is_1():
    a, _ = _palette_image(9, 0, seed=1)
    b, _ = _palette_image(9, 1, seed=2)
    alphas = torch.linspace(0, 1, 11)
    fade = m.lerp(a, b, alphas)
    # a per-pixel switch: each pixel jumps from A's colour to B's at its own alpha
    order = torch.rand(a.shape[-2:], generator=torch.Generator().manual_seed(3))
    switch = torch.stack([torch.where(order < t, b, a) for t in alphas])
    blocks = (
        torch.rand(8, 8, generator=torch.Generator().manual_seed(4)).repeat_interleave(8, 0).repeat_interleave(8, 1)
    )
    block_switch = torch.stack([torch.where(blocks < t, b, a) for t in alphas])
    # the review's numbers: the length ratio is 1 for the fade, about sqrt(10) for the switches
    assert m.path_length_ratio(fade) == pytest.approx(1.0)
    assert m.path_length_ratio(switch) == pytest.approx(3.16, abs=0.15)
    assert m.path_length_ratio(block_switch) == pytest.approx(2.93, abs=0.3)
    fade_validity = m.path_validity(fade, _confident_logits(fade))
    switch_validity = m.path_validity(switch, _confident_logits(switch))
    assert (
        switch_validity["min_purity"] == 1.0
        and m.path_validity(block_switch, _confident_logits(block_switch))["min_purity"] == 1.0
    )
    # at the fade's midpoint only the pixels A and B share are still a palette colour
    assert fade_validity["purity"][4] == pytest.approx(float((a == b).all(0).float().mean()), abs=1e-6)
    assert fade_validity["mean_purity"] < 0.9 < switch_validity["mean_purity"]
    assert fade_validity["mean_confidence"] < switch_validity["mean_confidence"]


def test_nearest_finds_the_closest_latent():
    pool = torch.stack([torch.full((2, 2, 2), float(v)) for v in (0.0, 1.0, 5.0)])
    queries = torch.stack([torch.full((2, 2, 2), 0.9), torch.full((2, 2, 2), 4.0)])
    assert m.nearest(queries, pool).tolist() == [1, 2]


def test_latent_noise_follows_each_channels_scale_and_is_reproducible():
    z = torch.zeros(200, 2, 3, 3)
    scales = torch.tensor([100.0, 0.01])
    a = m.perturb(z, 0.5, scales, torch.Generator().manual_seed(3))
    assert torch.equal(a, m.perturb(z, 0.5, scales, torch.Generator().manual_seed(3)))
    stds = a.transpose(0, 1).flatten(1).std(1)
    assert float(stds[0]) == pytest.approx(50.0, rel=0.1) and float(stds[1]) == pytest.approx(0.005, rel=0.1)
    assert torch.equal(m.perturb(z, 0.0, scales, torch.Generator().manual_seed(3)), z)


def test_noise_robustness_does_not_reward_a_decoder_worse_without_noise():
    """Two decoders that react to latent noise identically, one with a constant error added: the
    old ratio MSE(sigma) / MSE(0) called the worse one more robust; the decoded change does not."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 4, generator=g)
    target = torch.zeros(8, 3, 5, 5)

    def good(z):
        return torch.einsum("oc,nchw->nohw", weight, z)

    def worse(z):
        return good(z) + 0.3

    z = 0.1 * torch.randn(8, 4, 5, 5, generator=g)
    noisy = m.perturb(z, 0.5, z.transpose(0, 1).flatten(1).std(1), torch.Generator().manual_seed(1))
    ratio = [
        float(m.mse_per_image(f(noisy), target).mean() / m.mse_per_image(f(z), target).mean()) for f in (good, worse)
    ]
    assert ratio[1] < 0.9 * ratio[0]  # the old measure's mistake, reproduced
    change = [m.mse_per_image(f(noisy), f(z)) for f in (good, worse)]
    assert torch.allclose(change[0], change[1], rtol=1e-5, atol=1e-6) and float(change[0].mean()) > 0


# ---- criteria a trivial model could game: each fooled as it was, then not --------------------------


def _criterion(name):
    """The measure of criterion ``name`` and its (numerator, denominator) per-image keys."""
    for measure, keys, _ in rule_criteria(Rule(), with_realism=False):
        if measure.name == name:
            return measure, keys
    raise KeyError(name)


def _value(name, items):
    """A criterion's value for one run, as the decision computes it: ``sum(numerator) /
    sum(denominator)`` over the items, or the numerator's mean without a denominator. ``items``:
    per-image arrays by key, or (a criterion per pair) the pairs' dicts."""
    measure, (numerator, denominator) = _criterion(name)
    if measure.per == "pair":
        return float(np.mean([pair[numerator] for pair in items]))
    num = np.asarray(items[numerator], dtype=float)
    return float(num.mean()) if denominator is None else float(num.sum() / np.asarray(items[denominator]).sum())


def _better(name, a, b) -> bool:
    """Whether criterion ``name`` scores ``a`` strictly better than ``b``."""
    higher = _criterion(name)[0].better == "higher"
    return _value(name, a) > _value(name, b) if higher else _value(name, a) < _value(name, b)


def _blur(images):
    return torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)


def test_sharpness_charges_ringing_and_blur_and_a_faithful_reconstruction_wins():
    """Ringing (overshoot on both sides of every edge) and noise at the edges raise the gradient
    energy at the input's edges above the input's: 'higher is better' called them sharper than a
    perfect reconstruction. The |log ratio| is 0 only for edges as strong as the input's."""
    x = _layout(n=4, size=32, seed=5)
    edges = (m._gradient(x) > 1e-3).float()
    edge_noise = x.clone()
    edge_noise[..., :-1, :-1] += 0.3 * edges.unsqueeze(1) * torch.randn(4, 3, 31, 31, generator=torch.Generator())
    candidates = {
        "faithful": x,
        "ringing": (x + 0.8 * (x - _blur(x))).clamp(-1, 1),  # an unsharp mask's halo
        "edge noise": edge_noise.clamp(-1, 1),
        "blurred": _blur(x),
    }
    values = {k: {n: v.numpy() for n, v in reconstruction_per_image(r, x).items()} for k, r in candidates.items()}
    old = {k: v["sharp_out"].sum() / v["sharp_in"].sum() for k, v in values.items()}
    # the old measure's mistake, reproduced: ringing and noise scored sharper than the input itself
    assert old["ringing"] > 1.2 and old["edge noise"] > 1.2 and old["faithful"] == pytest.approx(1.0)
    assert _value("sharpness", values["faithful"]) == 0.0
    for flawed in ("ringing", "edge noise", "blurred"):
        assert _value("sharpness", values[flawed]) > 0.15, flawed
        assert _better("sharpness", values["faithful"], values[flawed]), flawed
    # and the closer to the input's edges, the better, from either side
    milder = {n: v.numpy() for n, v in reconstruction_per_image((x + 0.2 * (x - _blur(x))).clamp(-1, 1), x).items()}
    assert _better("sharpness", milder, values["ringing"])


def _linear_decoder(seed=0):
    weight = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))
    return lambda z: torch.einsum("oc,nchw->nohw", weight, z)


def _noise_values(decode, z, partners):
    std = z.transpose(0, 1).flatten(1).std(1)
    return noise_robustness(decode, z, partners, std, (0.5,), seed=0, chunk=4, device="cpu")


def test_latent_noise_charges_a_decoder_that_ignores_its_latent_and_is_blind_to_scale():
    """A decoder that ignores its latent moves by 0 under any noise: 'lower decoded change is
    better' made it the most robust. On the scale of its own differences between layouts it
    scores 1, the worst; and a decoder merely scaled by a constant scores what it did."""
    z = torch.randn(10, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    partners = noise_partners([str(i) for i in range(10)], seed=0)
    linear = _linear_decoder()
    decoders = {
        "linear": linear,
        "scaled": lambda latent: 0.1 * linear(latent),
        "ignores its latent": lambda latent: torch.full((len(latent), 3, 5, 5), 0.2),
    }
    values = {k: _noise_values(decode, z, partners) for k, decode in decoders.items()}
    old = {k: float(v["change_sigma0.5"].mean()) for k, v in values.items()}
    # the old measure's mistakes, reproduced: the constant decoder wins, the scaled one gains 100x
    assert old["ignores its latent"] == 0.0 < old["scaled"] < 0.02 * old["linear"]
    assert _value("latent_noise", values["ignores its latent"]) == 1.0
    assert 0 < _value("latent_noise", values["linear"]) < 0.5
    assert _better("latent_noise", values["linear"], values["ignores its latent"])
    assert np.allclose(values["scaled"]["noise_relative_sigma0.5"], values["linear"]["noise_relative_sigma0.5"])
    # and more noise, relative to the same layouts, scores worse
    more = noise_robustness(
        linear, z, partners, z.transpose(0, 1).flatten(1).std(1), (0.5, 2.0), seed=0, chunk=3, device="cpu"
    )
    assert np.all(more["noise_relative_sigma2"] > more["noise_relative_sigma0.5"])


def test_noise_partners_are_fixed_and_never_the_same_layout():
    identities = ["a", "b", "a", "c", "a", "b", "d", "a"]
    partners = noise_partners(identities, seed=3)
    assert np.array_equal(partners, noise_partners(identities, seed=3))
    assert all(identities[j] != identities[i] for i, j in enumerate(partners))
    assert not np.array_equal(partners, noise_partners(identities, seed=4))
    # only when every layout is the same one is a layout its own partner
    assert noise_partners(["a", "a", "a"], seed=0).tolist() == [0, 1, 2]


def _wipe(a, b, alphas):
    """Frames that are clean layouts turning A into B column by column: a share alpha of the
    columns is B's."""
    columns = torch.arange(a.shape[-1]).float() / a.shape[-1]
    return torch.stack([torch.where(columns < t, b, a) if t < 1 else b for t in alphas])


def test_path_validity_a_hard_switch_scores_no_better_than_the_step_path_and_a_gradual_valid_path_wins():
    """Every frame of a hard switch is a clean layout, so the mean purity of its inner frames
    (the old path validity) is perfect, though nothing lies between A and B. Relative purity x
    gradualness scores it as the step path between the same reconstructions (1 / (T - 1)), a
    ghosting cross-fade by its muddy frames, and clean frames changing gradually best."""
    a, _ = _palette_image(9, 0, seed=1)
    b, _ = _palette_image(8, 1, seed=2)
    alphas = torch.linspace(0, 1, 11)
    paths = {
        "step": torch.stack([a if t < 0.5 else b for t in alphas]),
        "switch at 0.3": torch.stack([a if t < 0.3 else b for t in alphas]),
        "oscillating": torch.stack([a if k % 2 == 0 else b for k in range(10)] + [b]),
        "cross-fade": m.lerp(a, b, alphas),
        "wipe": _wipe(a, b, alphas),
    }
    pairs = {k: [m.path_validity(f, _confident_logits(f))] for k, f in paths.items()}
    # the old measure's mistake, reproduced: the hard switch is as valid as the gradual wipe
    assert pairs["switch at 0.3"][0]["mean_purity"] == pairs["wipe"][0]["mean_purity"] == 1.0
    step = _value("path_validity", pairs["step"])
    assert step == pytest.approx(1 / 10)
    for hard in ("switch at 0.3", "oscillating"):
        assert _value("path_validity", pairs[hard]) <= step + 1e-12, hard
    assert _value("path_validity", pairs["wipe"]) > 0.85  # 6 or 7 of 64 columns a step: not quite even
    assert pairs["cross-fade"][0]["gradualness"] == pytest.approx(1.0)
    assert _better("path_validity", pairs["wipe"], pairs["cross-fade"])
    assert _better("path_validity", pairs["cross-fade"], pairs["step"])
    assert _better("path_validity", pairs["wipe"], pairs["switch at 0.3"])
    # both ends decoding alike: no path between two layouts to credit
    assert m.path_validity(torch.stack([a] * 5), _confident_logits(torch.stack([a] * 5)))["validity"] == 0.0


def test_path_numbers_do_not_depend_on_how_the_frames_are_chunked():
    a, _ = _palette_image(9, 0, seed=1)
    b, _ = _palette_image(8, 1, seed=2)
    frames = m.lerp(a, b, torch.linspace(0, 1, 7))
    logits = _confident_logits(frames)
    whole = m.path_validity(frames, logits) | {"length": m.path_length_ratio(frames)}
    trace = m.PathTrace()
    for part in (slice(0, 3), slice(3, 4), slice(4, 7)):
        trace.add(frames[part], logits[part])
    chunked = trace.validity() | {"length": trace.length_ratio()}
    assert chunked.keys() == whole.keys()
    for key, value in whole.items():
        assert chunked[key] == pytest.approx(value, rel=1e-9), key


def test_nearest_neighbour_validity_does_not_charge_a_blurrier_decoder_for_geometry_it_does_not_have():
    """Two decoders with the same latent geometry (the midpoint decodes to a clean layout, here
    the mirror image of the reconstruction), one blurrier: the old criterion, the midpoints' mean
    purity, charged the blurrier one for its blur a second time. Relative to each decoder's
    reconstruction purity they tie; a sharp decoder whose midpoints are cross-fades still loses."""
    layouts = _layout(n=6, size=32, seed=7)
    neighbours = _layout(n=6, size=32, seed=8)

    def run(reconstructions, midpoints):
        return {
            "purity": m.palette_purity(reconstructions).numpy(),
            "nn_midpoint_purity": m.palette_purity(midpoints).numpy(),
        }

    sharp = run(layouts, layouts.flip(-1))
    blurry = run(_blur(_blur(layouts)), _blur(_blur(layouts.flip(-1))))
    ghosting = run(layouts, 0.5 * (layouts + neighbours))
    old = {k: float(v["nn_midpoint_purity"].mean()) for k, v in (("sharp", sharp), ("blurry", blurry))}
    assert old["blurry"] < old["sharp"] - 0.1  # the old measure's mistake, reproduced
    assert _value("nearest_neighbour_validity", sharp) == pytest.approx(_value("nearest_neighbour_validity", blurry))
    assert _value("nearest_neighbour_validity", sharp) == pytest.approx(1.0)
    assert _better("nearest_neighbour_validity", blurry, ghosting)


def test_ssim_is_torchmetrics_ssim_one_image_at_a_time():
    from torchmetrics.functional.image import structural_similarity_index_measure

    g = torch.Generator().manual_seed(0)
    for shape in ((3, 3, 24, 20), (2, 3, 9, 40)):
        target = _layout(n=shape[0], size=40, seed=1)[..., : shape[2], : shape[3]]
        prediction = (target + 0.3 * torch.randn(shape, generator=g)).clamp(-1, 1)
        expected = structural_similarity_index_measure(
            (prediction.double() + 1) / 2, (target.double() + 1) / 2, data_range=1.0, reduction="none"
        )
        assert torch.allclose(m.ssim_per_image(prediction, target).double(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="wider than 5 pixels"):
        m.ssim_per_image(torch.zeros(1, 3, 5, 5), torch.zeros(1, 3, 5, 5))


def test_interpolation_pairs_are_never_repeated_even_when_few_layouts_allow_few_pairs():
    """Two rooms and one scene hold one room-room pair and two room-scene pairs: asking for three
    of each gives those, each once (a repeated pair would count twice in the per-pair intervals)."""
    from types import SimpleNamespace

    from imginav_core.study.analysis.evaluation import choose_pairs

    records = [SimpleNamespace(path=f"layout{i}.png") for i in range(3)]
    layouts = SimpleNamespace(types=np.array([0, 0, 1]), indices=np.arange(3), cache=SimpleNamespace(records=records))
    pairs = choose_pairs(layouts, np.arange(3), per_kind=3, seed=0)
    kinds = [p.kind for p in pairs]
    assert kinds.count("room-room") == 1 and kinds.count("room-scene") == 2 and "scene-scene" not in kinds
    assert len({frozenset((p.a, p.b)) for p in pairs}) == len(pairs)
