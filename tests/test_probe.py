"""The diffusion probe: a constructed pair of latent spaces whose answer is known, determinism,
resumption after a kill, and the probe over two finished runs as the notebook runs it."""

import dataclasses
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, V1_NAME, V2_NAME

from imginav_core.data.cache import load_layout
from imginav_core.data.manifest import read_manifest
from imginav_core.data.synthetic import generate_layouts
from imginav_core.errors import ResumeError
from imginav_core.palette import NUM_CLASSES, class_to_rgb
from imginav_core.study.probe.denoiser import heldout_losses, sample_latents, train_denoiser
from imginav_core.study.probe.latents import EncodedLayouts, Standardiser
from imginav_core.study.probe.settings import ProbeSettings

GRID = 16  # latent grid of the constructed spaces: 32 px layouts pooled by 2
SMALL = ProbeSettings(
    steps=150,
    batch_size=32,
    width=16,
    lr=3e-3,
    samples=48,
    loss_every=50,
    checkpoint_every=50,
    ddim_steps=10,
    bootstrap=50,
    noise_levels=(200, 500, 800),
    device="cpu",
)

# Enough generated layouts for intervals that separate the constructed spaces (see the test).
SAMPLED = dataclasses.replace(SMALL, samples=128)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Class maps of about 300 synthetic 32 px layouts (the empty ones dropped) in the real manifest
    format, and their labels."""

    manifest = read_manifest(generate_layouts(tmp_path_factory.mktemp("probe_set") / "set", 400, 32, seed=11))
    maps = np.stack([load_layout(r.path, 32)[1] for r in manifest.records])
    labels = np.array([r.label for r in manifest.records])
    return maps, labels


def structured_latents(maps: np.ndarray) -> torch.Tensor:
    """One-hot class maps area-pooled to 8 x 8: a latent space that keeps the layout's structure."""
    one_hot = F.one_hot(torch.from_numpy(maps).long(), NUM_CLASSES).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(one_hot, 32 // GRID)


def shuffled_latents(latents: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The same latents with their positions permuted, a different permutation per layout: the
    same values and channel statistics, no spatial structure."""
    generator = torch.Generator().manual_seed(seed)
    flat = latents.flatten(2)
    order = torch.stack([torch.randperm(flat.shape[-1], generator=generator) for _ in range(len(latents))])
    return flat.gather(2, order[:, None, :].expand_as(flat)).view_as(latents)


def decoded_classes(latents: torch.Tensor) -> np.ndarray:
    """The constructed decoder: each cell's strongest class, upsampled to 32 px (lossy: a class
    holding less than a cell's plurality, a thin wall, is lost)."""
    classes = F.interpolate(latents.argmax(1, keepdim=True).float(), scale_factor=32 // GRID, mode="nearest")
    return classes[:, 0].byte().numpy()


def decode(latents: torch.Tensor) -> np.ndarray:
    """The constructed decoder's layouts in palette colours (the structured space's reconstructions
    are close to the layouts; the shuffled space's cannot be)."""
    return class_to_rgb(decoded_classes(latents))


def probe_space(latents: torch.Tensor, checkpoint, seed: int = 0, settings: ProbeSettings = SMALL):
    encoded = EncodedLayouts(latents, None)
    standardiser = Standardiser.fit(encoded)
    model, state = train_denoiser(
        encoded, standardiser, settings, seed, checkpoint, torch.device("cpu"), log=lambda _: None
    )
    generated = standardiser.invert(sample_latents(model, settings.samples, encoded.shape, settings.ddim_steps, seed))
    return model, state, standardiser, generated


def test_a_structured_latent_space_generates_better_than_the_same_latents_shuffled(layouts, tmp_path, one_thread):
    """The probe tells a latent space that keeps the layout's structure from the same values without
    it. "Real" here is what the constructed decoder can show (the decoded layouts): measured
    against the original layouts, its loss of thin walls would dominate the score, and the noisy
    cells of a generated sample, restoring some of them by chance, can then beat even perfect
    decodings. At 150 steps the samples of the two spaces are apart for denoiser seeds 0, 1 and 2
    (FLD intervals 96-114 vs 140-162, 97-119 vs 130-145, 89-110 vs 174-197); near 300 steps the
    shuffled space's denoiser goes through a phase of spatially smooth samples (the UNet's own
    prior, not the space's) that score like the structured ones, and the order depends on the
    seed. The per-layout precision does not separate them (the shuffled cells keep each layout's
    class mix, which the scorer's k-NN balls mostly judge by)."""
    from imginav_core.scoring import LayoutScorer, ReferenceSet

    maps, labels = layouts
    train, held = slice(0, len(maps) * 3 // 4), slice(len(maps) * 3 // 4, None)
    structured = structured_latents(maps)
    shuffled = shuffled_latents(structured)
    shown = decoded_classes(structured)
    scorer = LayoutScorer.fit(
        ReferenceSet(shown[train], labels[train], "train"),
        ReferenceSet(shown[held], labels[held], "held"),
        cache_dir=tmp_path / "scorer",
        seed=0,
        log=lambda _: None,
    )
    # the known answer, generator aside: the structured space's own latents score at the floor
    perfect = {
        name: scorer.score(decode(z[train][:128]), bootstrap=0)["scores"]["fld"]
        for name, z in (("structured", structured), ("shuffled", shuffled))
    }
    assert perfect["structured"]["value"] < 2 * perfect["structured"]["floor"] < perfect["shuffled"]["value"] / 10
    results = {}
    for name, latents in (("structured", structured), ("shuffled", shuffled)):
        model, _, standardiser, generated = probe_space(latents[train], tmp_path / f"{name}.pt", settings=SAMPLED)
        loss = heldout_losses(model, standardiser.apply(latents[held]), SMALL.noise_levels, seed=0)
        results[name] = {"loss": loss, "scores": scorer.score(decode(generated), bootstrap=50, seed=0)["scores"]}
    good, bad = results["structured"], results["shuffled"]
    # easier to denoise where it matters, at intermediate noise, where structure predicts the noise
    assert good["loss"]["500"] < 0.9 * bad["loss"]["500"], results
    # and what it generates is closer to real layouts, beyond the bootstrap interval
    assert good["scores"]["fld"]["ci95"][1] < bad["scores"]["fld"]["ci95"][0], results


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """Real layouts (about 440 synthetic 32 px ones) split into the scorer's fit and held parts and
    test layouts outside both; two scorer networks (seeds 0 and 1) fit on them; and what the guard
    of a generated set against a reconstructed one says (``probe.guard`` measures through the real
    scorers, ``analysis.primary`` reads it under the rule)."""
    from imginav_core.scoring import LayoutScorer, ReferenceSet
    from imginav_core.study.analysis.criteria import Rule
    from imginav_core.study.probe.guard import guard_run, guard_scores

    folder = tmp_path_factory.mktemp("guard")
    manifest = read_manifest(generate_layouts(folder / "set", 800, 32, seed=11))
    maps = np.stack([load_layout(r.path, 32)[1] for r in manifest.records])
    labels = np.array([r.label for r in manifest.records])
    n = len(maps)
    fit, held, test = slice(0, n // 2), slice(n // 2, 3 * n // 4), slice(3 * n // 4, None)
    scorers = [
        LayoutScorer.fit(
            ReferenceSet(maps[fit], labels[fit], "fit"),
            ReferenceSet(maps[held], labels[held], "held"),
            cache_dir=folder / "scorer",
            seed=seed,
            log=lambda _: None,
        )
        for seed in (0, 1)
    ]

    def judge(generated: np.ndarray, reconstructed: np.ndarray) -> dict:
        record = guard_scores(
            [s.embedding(generated) for s in scorers], [s.embedding(reconstructed) for s in scorers], scorers, 0
        )
        return guard_run("run", record, Rule()) | {"record": record}

    return SimpleNamespace(maps=maps, fit=maps[fit], test=maps[test], judge=judge)


def blurring_decoder(latents: torch.Tensor, width: int = 5) -> np.ndarray:
    """A decoder of one-hot class-map latents that blurs what it decodes (a box of ``width``
    pixels): its layouts are off the palette and far from real, as the demo's tiny decoders'
    were (their reconstructions scored FLD 546 against a floor of 2)."""
    rgb = torch.from_numpy(class_to_rgb(latents.argmax(1).byte().numpy())).permute(0, 3, 1, 2).float()
    blurred = F.avg_pool2d(rgb, width, stride=1, padding=width // 2, count_include_pad=False)
    return blurred.round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous().numpy()


def one_hot(maps: np.ndarray) -> torch.Tensor:
    return F.one_hot(torch.from_numpy(maps).long(), NUM_CLASSES).permute(0, 3, 1, 2).float()


def test_the_guard_flags_collapsed_fooling_and_uninformative_generations_through_the_real_scorer(guarded):
    """Known answers. A blurring decoder (its reconstructions of test layouts far from real) and a
    generator that always returns its decoding of the mean latent, or one real layout repeated:
    both score better than the reconstructions (as the demo's V1 seed 42 did, 215 against 546),
    flagged as collapsed or fooling, and too far from real. The reconstructions themselves passed
    as generations score as the reconstructions do (no collapse), but are too far from real to
    inform; noise is too. Held-out real layouts, and a good generator (real layouts mirrored),
    against a faithful decoder's reconstructions, are not flagged."""
    half = len(guarded.test) // 2
    reconstructed = blurring_decoder(one_hot(guarded.test[half:]))
    collapsed, far = "generator collapsed or scorer fooled", "generations too far from real for the endpoint to inform"

    def flags(found: dict) -> list[str]:
        return [flag.split(": ")[1] for flag in found["flags"]]

    mean_latent = one_hot(guarded.fit).mean(0, keepdim=True).repeat(half, 1, 1, 1)
    decoded_mean = guarded.judge(blurring_decoder(mean_latent), reconstructed)
    assert flags(decoded_mean) == [collapsed, far] and decoded_mean["fld_ratio"] < 0.25
    assert decoded_mean["record"]["n_layouts"] == half and set(decoded_mean["record"]["by_scorer"]) == {"0", "1"}
    repeated = guarded.judge(np.repeat(class_to_rgb(guarded.test[:1]), half, 0), reconstructed)
    assert flags(repeated) == [collapsed, far]
    as_generations = guarded.judge(blurring_decoder(one_hot(guarded.test[:half])), reconstructed)
    assert flags(as_generations) == [far] and 0.67 < as_generations["fld_ratio"] < 1.5
    noise = np.random.default_rng(0).integers(0, 256, (half, 32, 32, 3), dtype=np.uint8)
    assert flags(guarded.judge(noise, reconstructed)) == [far]
    faithful = class_to_rgb(guarded.test[half:])
    for generated in (class_to_rgb(guarded.test[:half]), class_to_rgb(guarded.test[:half])[:, :, ::-1].copy()):
        healthy = guarded.judge(generated, faithful)
        assert healthy["flags"] == [] and healthy["coverage_share"] > 0.8 and healthy["fld_ratio"] > 0.6, healthy
    # at unequal counts both are scored at the smaller one (FLD and coverage depend on it)
    uneven = guarded.judge(class_to_rgb(guarded.test[: half // 2]), faithful)
    assert uneven["record"]["n_layouts"] == half // 2 and uneven["record"]["reconstructed"] == len(faithful)


def test_reconstructions_are_drawn_outside_the_scorers_reference_first():
    from imginav_core.study.probe.guard import reconstruction_positions

    chosen, inside = reconstruction_positions(100, np.arange(0, 100, 2), 30, seed=0)
    assert len(chosen) == 30 and inside == 0 and np.all(chosen % 2 == 1) and np.all(np.diff(chosen) > 0)
    chosen, inside = reconstruction_positions(100, np.arange(0, 100, 2), 70, seed=0)
    assert len(set(chosen)) == 70 and inside == 20  # 50 outside, the rest from the reference
    assert reconstruction_positions(10, None, 30, seed=0)[0].tolist() == list(range(10))


def test_the_denoiser_is_deterministic_and_a_killed_run_resumes_to_the_same_result(layouts, tmp_path, one_thread):
    latents = structured_latents(layouts[0][:120])
    settings = dict(steps=40, batch_size=16, width=16, loss_every=10, checkpoint_every=10, device="cpu")
    script = f"""
import sys, torch
sys.path.insert(0, {str(ROOT / "tests")!r})
torch.set_num_threads(1)
from imginav_core.study.probe.denoiser import train_denoiser, sample_latents
from imginav_core.study.probe.latents import EncodedLayouts, Standardiser
from imginav_core.study.probe.settings import ProbeSettings
latents = torch.load(sys.argv[1])
encoded = EncodedLayouts(latents, 0.1 * torch.ones_like(latents))  # a VAE's posterior: draws from the generator
model, state = train_denoiser(encoded, Standardiser.fit(encoded), ProbeSettings(**{settings!r}), 3,
                              __import__('pathlib').Path(sys.argv[2]), torch.device('cpu'))
torch.save({{"curve": state.curve, "sample": sample_latents(model, 4, encoded.shape, 5, 3)}}, sys.argv[3])
"""
    torch.save(latents, tmp_path / "latents.pt")

    def start(checkpoint, result, kill=""):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "IMGINAV_KILL_AT": kill}
        return subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "latents.pt"), str(checkpoint), str(result)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(process):
        stdout, stderr = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    # two processes at a time, one thread each: the same numbers whatever else the machine runs
    uninterrupted, killed = (
        start(tmp_path / "a.pt", tmp_path / "a_result.pt"),
        start(tmp_path / "c.pt", tmp_path / "c_result.pt", kill="probe_step@35"),
    )
    uninterrupted, killed = finish(uninterrupted), finish(killed)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert killed.returncode == -9 and not (tmp_path / "c_result.pt").exists()
    assert torch.load(tmp_path / "c.pt", weights_only=True)["step"] == 30  # the last checkpoint before the kill
    again, resumed = (
        start(tmp_path / "b.pt", tmp_path / "b_result.pt"),
        start(tmp_path / "c.pt", tmp_path / "c_result.pt"),
    )
    again, resumed = finish(again), finish(resumed)
    assert again.returncode == 0, again.stderr
    assert resumed.returncode == 0 and "resuming the denoiser from step 30 of 40" in resumed.stdout
    a, b, c = (torch.load(tmp_path / f"{k}_result.pt") for k in "abc")
    assert a["curve"] == b["curve"] and torch.equal(a["sample"], b["sample"])  # deterministic on the CPU
    assert a["curve"] == c["curve"] and torch.equal(a["sample"], c["sample"])  # resumed = uninterrupted


def test_a_denoiser_continued_to_a_longer_budget_equals_one_trained_to_it_at_once(layouts, tmp_path, one_thread):
    """The second budget costs only its extra steps: training to 20 steps and then on to 40 gives
    the weights, curve and samples of training to 40 at once (a VAE's posterior draws included)."""
    latents = structured_latents(layouts[0][:64])
    encoded = EncodedLayouts(latents, 0.1 * torch.ones_like(latents))
    settings = ProbeSettings(steps=20, batch_size=8, width=16, loss_every=5, checkpoint_every=10, device="cpu")
    standardiser, cpu = Standardiser.fit(encoded), torch.device("cpu")
    messages = []
    short, _ = train_denoiser(encoded, standardiser, settings, 0, tmp_path / "a.pt", cpu, messages.append)
    short_sample = sample_latents(short, 4, encoded.shape, 5, 0)
    continued, state = train_denoiser(encoded, standardiser, settings, 0, tmp_path / "a.pt", cpu, messages.append, 40)
    assert messages == ["resuming the denoiser from step 20 of 40 (a.pt)"]
    at_once, at_once_state = train_denoiser(encoded, standardiser, settings, 0, tmp_path / "b.pt", cpu, print, 40)
    assert state.step == at_once_state.step == 40 and state.curve == at_once_state.curve
    for a, b in zip(continued.parameters(), at_once.parameters()):
        assert torch.equal(a, b)
    sample = sample_latents(continued, 4, encoded.shape, 5, 0)
    assert torch.equal(sample, sample_latents(at_once, 4, encoded.shape, 5, 0))
    assert not torch.equal(sample, short_sample)  # the longer budget is another denoiser
    with pytest.raises(ResumeError, match="past the 20 asked for"):  # a budget cannot be undone
        train_denoiser(encoded, standardiser, settings, 0, tmp_path / "a.pt", cpu, print, 20)


def test_a_checkpoint_of_other_settings_is_refused_not_resumed(layouts, tmp_path, one_thread):
    encoded = EncodedLayouts(structured_latents(layouts[0][:32]), None)
    settings = ProbeSettings(steps=4, batch_size=8, width=16, loss_every=2, checkpoint_every=2, device="cpu")
    train_denoiser(
        encoded, Standardiser.fit(encoded), settings, 0, tmp_path / "d.pt", torch.device("cpu"), log=lambda _: None
    )
    other = ProbeSettings(steps=4, batch_size=8, width=32, loss_every=2, checkpoint_every=2, device="cpu")
    with pytest.raises(ResumeError, match="other probe settings"):
        train_denoiser(
            encoded, Standardiser.fit(encoded), other, 0, tmp_path / "d.pt", torch.device("cpu"), log=lambda _: None
        )


def test_standardisation_is_inverted_exactly_and_uses_what_a_vae_denoiser_sees():
    mean = torch.randn(500, 3, 4, 4) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1) + 2.0
    std = torch.full_like(mean, 2.0)
    standardiser = Standardiser.fit(EncodedLayouts(mean, std))
    drawn = EncodedLayouts(mean, std).draw(torch.arange(500), torch.Generator().manual_seed(0))
    z = standardiser.apply(drawn)
    # the samples, not the means, get unit variance: sqrt(var(mean) + 2^2) per channel
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=0.05)
    assert torch.allclose(standardiser.invert(z), drawn, atol=1e-5)


def test_the_probe_over_two_finished_runs_writes_its_metrics_and_resumes(tiny_runs, tmp_path):
    """The command a job runs, on the 2-epoch V1 and V2 runs: both latent spaces probed, scored
    with floors and intervals, measured; run again, it reuses every finished seed."""
    import shutil

    root = tmp_path / "outputs"
    shutil.copytree(tiny_runs, root)
    # the probe as its job runs it (run_probe), here on two runs named directly, with small settings
    code = (
        "from imginav_core.outputs import Outputs\n"
        "from imginav_core.study.probe.run import run_probe\n"
        "from imginav_core.study.probe.settings import ProbeSettings\n"
        "settings = ProbeSettings(steps=10, batch_size=8, width=16, samples=6, seeds=2, scorer_seeds=2, device='cpu')\n"
        f"run_probe(Outputs({str(root)!r}, 'phase1_2_vae_test'), [{V1_NAME!r}, {V2_NAME!r}], settings)\n"
    )
    args = [sys.executable, "-c", code]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    phase = root / "phase1_2_vae_test" / "probe"
    metrics = json.loads((phase / "probe_metrics.json").read_text())
    assert list(metrics["experiments"]) == [V1_NAME, V2_NAME]
    assert [scorer["seed"] for scorer in metrics["scorers"]] == [0, 1]
    for name, result in metrics["experiments"].items():
        assert (phase / f"{name}_generated.png").is_file()
        assert len(result["seeds"]) == 2 and len(result["heldout_loss"]) == 5
        fld = result["generated"]["scores"]["fld"]
        assert fld["ci95"][0] <= fld["value"] <= fld["ci95"][1] and np.isfinite(fld["floor"])
        assert result["generated"]["n_generated"] == 12  # 6 samples x 2 seeds
        assert "fld" in result["reconstructed"]["scores"]
        # the generations beside the run's reconstructions of test layouts, as many, by every scorer seed
        guard = result["guard"]
        assert guard["reconstructed_split"] == "test" and list(guard["by_scorer"]) == ["0", "1"]
        assert guard["n_layouts"] == min(12, metrics["data"]["test"]) == result["reconstructed"]["n_generated"]
        assert 0 <= guard["reconstructed_in_reference"] <= guard["n_layouts"]
        for scores in guard["by_scorer"].values():
            assert scores["generated_fld"] > 0 and scores["reconstructed_fld"] > 0 and scores["coverage_floor"] > 0
        assert guard["by_scorer"]["0"]["fld_floor"] == pytest.approx(fld["floor"]) or guard["n_layouts"] < 12
        assert set(result["diffusability"]["equivariance"]["per_transform"]) == {
            "rot90",
            "rot180",
            "rot270",
            "flip_h",
            "flip_v",
        }
        # the FLD by every scorer seed, the first being the scores' own
        by_scorer = result["generated"]["fld_by_scorer"]
        assert list(by_scorer) == ["0", "1"] and by_scorer["0"] == fld["value"]
        assert all(isinstance(v, float) and v >= 0 for v in by_scorer.values())
        # both budgets: the first is what is scored above, the second the same denoisers trained on
        budgets = result["budgets"]
        assert list(budgets) == ["10", "20"] and budgets["10"]["fld"] == fld["value"]
        assert isinstance(budgets["20"]["fld"], float) and budgets["20"]["fld"] != fld["value"]
        assert budgets["10"]["heldout_loss"] == result["heldout_loss"] and len(budgets["20"]["heldout_loss"]) == 5
        assert [s["budgets"]["20"]["steps"] for s in result["seeds"]] == [20, 20]
        assert result["loss_curve"][-1][0] == 20
        # copies looked up in every training layout
        copies = result["generated"]["memorisation"]
        assert copies["training_layouts_searched"] == metrics["data"]["train"]
        assert 0 <= copies["exact_copy_share"] <= copies["near_copy_share"] <= 1
        assert copies["heldout_layouts"] == metrics["data"]["heldout_latents"]
        # where the time went
        phases = {"encoding", "denoiser_training_10", "denoiser_training_20", "sampling", "decoding", "scoring"}
        phases |= {"memorisation", "reconstructions", "diffusability", "total"}
        assert phases <= set(result["timings"]) and all(v >= 0 for v in result["timings"].values())
        assert result["timings"]["total"] >= result["timings"]["encoding"] + result["timings"]["diffusability"]
        # and the process's peak memory at the end of each (it only grows)
        assert phases - {"total"} <= set(result["peak_memory_after"])
        assert all(p["resident_bytes"] > 0 and p["cuda_bytes"] is None for p in result["peak_memory_after"].values())
    assert {"scorers", "copy_index", "runs", "total"} <= set(metrics["timings"])
    peak = metrics["timings"]["peak_memory"]["resident_bytes"]
    assert peak >= max(p["resident_bytes"] for p in metrics["timings"]["peak_memory_after"].values()) > 0
    assert "seconds per phase: encoding" in first.stdout
    assert metrics["experiments"][V2_NAME]["denoiser_trained_on"].startswith("a fresh posterior sample")
    again = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    # 2 runs x 2 probe seeds x 2 budgets, each found finished
    assert again.returncode == 0 and again.stdout.count("done earlier") == 8, again.stdout[-2000:]
    rerun = json.loads((phase / "probe_metrics.json").read_text())
    for name in metrics["experiments"]:
        assert rerun["experiments"][name]["budgets"] == metrics["experiments"][name]["budgets"]


def test_the_probe_refuses_an_unfinished_or_missing_run_naming_it(tmp_path):
    planned = subprocess.run(
        [sys.executable, "-m", "imginav_core", "plan", "--out", str(tmp_path / "none"), "--seeds", "42"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert planned.returncode == 0, planned.stderr
    done = subprocess.run(
        [sys.executable, "-m", "imginav_core", "job", "probe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("IMGINAV_")}
        | {"IMGINAV_OUTPUTS": str(tmp_path / "none")},
    )
    assert done.returncode == 2
    assert f"no metrics for experiment '{V1_NAME}_seed42'" in done.stderr  # the plan's first run
    bad = subprocess.run(
        [sys.executable, "-m", "imginav_core", "plan", "--out", str(tmp_path / "bad"), "--set", "probe.samples=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "'samples' = 1" in bad.stderr


MEMORY_SCRIPT = """
import sys
import numpy as np, torch
import torch.nn.functional as F
torch.set_num_threads(1)
from imginav_core.palette import PALETTE
from imginav_core.study.probe.latents import Standardiser
from imginav_core.study.probe.run import decoded_layouts, describe_layouts
from imginav_core.scoring import LayoutScorer, ReferenceSet
from imginav_core.scoring.copies import CopyIndex, hashes_of
from imginav_core.scoring.features import FeatureModel, LayoutFeatureNet

R, S = int(sys.argv[1]), int(sys.argv[2])
cpu = torch.device("cpu")


class Decoder:  # latents (n, 10, R/16, R/16) -> 16 x 16-pixel blocks of the strongest class, in [-1, 1]
    def decode(self, z):
        rgb = torch.tensor(PALETTE).float()[z.argmax(1)].permute(0, 3, 1, 2) / 127.5 - 1
        return {"rgb": F.interpolate(rgb, scale_factor=16, mode="nearest")}


maps = np.random.default_rng(0).integers(0, 10, (40, 8, 8), dtype=np.uint8).repeat(R // 8, 1).repeat(R // 8, 2)
fit, held = ReferenceSet(maps[:20], np.zeros(20), "fit"), ReferenceSet(maps[20:], np.zeros(20), "held")
torch.manual_seed(0)
scorer = LayoutScorer(FeatureModel(LayoutFeatureNet(R), "untrained", 0.0), fit, held, log=lambda _: None)
copies = CopyIndex.build([(maps, hashes_of(maps))], R)
copies.calibrate(copies.describe(held.class_maps))
standardiser = Standardiser(torch.zeros(10), torch.ones(10))


def latents(n):
    return torch.randn(n, 10, R // 16, R // 16, generator=torch.Generator().manual_seed(n))


def kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))


def peak_growth(work):
    before = kib("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")  # restarts VmHWM, the peak resident set
    kept = work()
    return kib("VmHWM:") - before


def describe(n):
    described = describe_layouts(decoded_layouts(Decoder(), standardiser, latents(n), cpu), [scorer], copies, cpu)
    return scorer.score_embedded(described.embeddings[0], described.pixels, bootstrap=0)


print(peak_growth(lambda: describe(S)), peak_growth(lambda: describe(2 * S)),
      peak_growth(lambda: list(decoded_layouts(Decoder(), standardiser, latents(2 * S), cpu))))
"""


def test_the_probes_memory_does_not_grow_with_the_generated_layouts(tmp_path):
    """Generated layouts are decoded, described and dropped a chunk at a time: describing twice
    as many raises the peak resident memory by far less than the extra layouts' images would
    take, while holding them (the control) raises it by at least their size."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("this kernel does not let a process restart its peak memory (/proc/self/clear_refs)")
    resolution, samples = 256, 128
    # A fixed mmap threshold: freed image-sized blocks go back to the system, so the peak of one
    # step is not hidden by memory the allocator kept from the one before.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "1048576"}
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(resolution), str(samples)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    once, twice, held = (int(k) for k in done.stdout.split())
    images = samples * resolution * resolution * 3 // 1024  # KiB of S decoded layouts
    assert twice - once < images / 4, (once, twice, images)
    assert held > 2 * images * 0.9, (held, images)  # the measure sees layouts that are kept


def test_the_probes_guard_table_reads_each_run_under_the_decisions_rule():
    """The probe's own table of the guard: each run's generations against its test reconstructions
    per scorer seed, the combined ratio and coverage share with the rule's thresholds, and the
    guard's reading; a run probed before the guard existed says so instead of failing."""
    from imginav_core.study.analysis.criteria import Rule
    from imginav_core.study.probe import plots
    from imginav_core.study.results import ProbeMetrics

    def run(label, guard):
        score = {"value": 30.0, "floor": 2.0}
        scores = {"fld": score, "precision": score, "recall": score, "palette_purity": score}
        result = {"label": label, "training_seed": 42, "kld": 0.0, "generated": {"scores": scores}}
        result |= {"reconstructed": {"scores": {"fld": score}}, "heldout_loss": {"500": 0.1}}
        return result | ({"guard": guard} if guard else {})

    def guard(generated, coverage):
        scores = {"generated_fld": generated, "reconstructed_fld": 20.0, "fld_floor": 2.0}
        scores |= {"generated_coverage": coverage, "reconstructed_coverage": 0.6, "coverage_floor": 0.7}
        return {"n_layouts": 1000, "by_scorer": {"0": scores, "1": scores}}

    experiments = {"v1": run("V1", guard(30.0, 0.6)), "v2": run("V2", guard(6.0, 0.6)), "old": run("V3", None)}
    metrics = ProbeMetrics({}, "cpu", "fp32", {}, [], {}, experiments, {})
    table = plots.guard_table(metrics, Rule())
    assert table.loc["guard", "V1 seed 42"] == "ok"
    assert table.loc["guard", "V2 seed 42"].startswith(
        "generator collapsed or scorer fooled: its generations' FLD is 0.3 x"
    )
    assert table.loc["guard", "V3 seed 42"].startswith("not guarded: the probe's metrics hold no experiments.old.guard")
    assert table.loc["FLD generated / reconstructed, scorer seed 1", "V2 seed 42"] == "6 / 20 (0.30 x)"
    assert table.loc["FLD ratio, geometric mean (flagged below 0.5)", "V1 seed 42"] == "1.50"
