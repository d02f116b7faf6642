"""The layout scorer (imginav_core/scoring): real layouts score at their floor, damaged ones clearly
worse, bad input stops with the file named, the feature network is trained once per reference.

One synthetic reference (64 x 64) trains one feature network for the whole module; "real"
generated layouts are new layouts from the same generator (another seed), so they share no
image with the reference.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import MANIFEST_HEADER, ROOT
from PIL import Image

from imginav_core.__main__ import main
from imginav_core.data.synthetic import generate_layouts
from imginav_core.errors import LayoutReadError, ManifestError
from imginav_core.palette import PALETTE, rgb_to_class
from imginav_core.scoring import (
    SCORE_KEYS,
    LayoutScorer,
    ReferenceSet,
    format_scores,
    read_generated,
    reference_from_manifest,
    split_by_scene,
)
from imginav_core.scoring.bootstrap import bootstrap_ci
from imginav_core.scoring.copies import CopyIndex, generated_class_maps, hashes_of
from imginav_core.scoring.features import cache_key
from imginav_core.scoring.inputs import ClassMapRows
from imginav_core.scoring.pixels import label_components, speckle_counts

RESOLUTION = 64


@pytest.fixture(scope="module")
def reference_manifest(tmp_path_factory):
    return generate_layouts(tmp_path_factory.mktemp("reference") / "set", samples=400, resolution=RESOLUTION, seed=3)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("scorer_cache")


@pytest.fixture(scope="module")
def fitted(reference_manifest, cache_dir):
    """(scorer, its log): the network trained on one thread, as the shared test machine needs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit, held = split_by_scene(reference_from_manifest(reference_manifest, RESOLUTION), seed=0)
        log = []
        scorer = LayoutScorer.fit(fit, held, cache_dir=cache_dir, seed=0, log=log.append)
    finally:
        torch.set_num_threads(before)
    return scorer, log


@pytest.fixture(scope="module")
def new_real(tmp_path_factory) -> np.ndarray:
    """Real layouts the scorer has never seen, as RGB."""
    manifest = generate_layouts(tmp_path_factory.mktemp("new") / "set", samples=160, resolution=RESOLUTION, seed=11)
    return reference_from_manifest(manifest, RESOLUTION).rgb()


def blurred(rgb: np.ndarray) -> np.ndarray:
    """A 5 x 5 binomial blur (sigma ~1 pixel): the muddy edges of a blurry decoder."""
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float()
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = (k[:, None] * k[None, :] / 256).expand(3, 1, 5, 5)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
    return y.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def shuffled(rgb: np.ndarray, block: int = 8, seed: int = 0) -> np.ndarray:
    """Each layout's 8 x 8 blocks in random order: the same colours, the structure broken."""
    rng = np.random.default_rng(seed)
    n, r, _, c = rgb.shape
    g = r // block
    blocks = rgb.reshape(n, g, block, g, block, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, g * g, block, block, c)
    out = np.stack([b[rng.permutation(g * g)] for b in blocks])
    return out.reshape(n, g, g, block, block, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, r, r, c)


def noisy(rgb: np.ndarray, sigma: float = 40, seed: int = 0) -> np.ndarray:
    """Gaussian colour noise: off-palette pixels everywhere."""
    rng = np.random.default_rng(seed)
    return np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def results(fitted, new_real):
    scorer, _ = fitted
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            name: scorer.score(images, bootstrap=50, seed=0)
            for name, images in [
                ("real", new_real),
                ("blurred", blurred(new_real)),
                ("shuffled", shuffled(new_real)),
                ("noisy", noisy(new_real)),
            ]
        }
    finally:
        torch.set_num_threads(before)


# ---- what the scores say ----------------------------------------------------------------------


def test_the_feature_net_learned_what_a_layout_is(fitted):
    scorer, _ = fitted
    accuracy = scorer.accuracy
    assert accuracy["room_scene"] > 0.9, accuracy  # a quarter are scenes: 0.75 is guessing
    assert accuracy["area_share_mae"] < 0.03, accuracy


def test_new_real_layouts_score_near_the_floor(results):
    scores = results["real"]["scores"]
    assert scores["fld"]["value"] < 2.5 * scores["fld"]["floor"], scores["fld"]
    assert scores["kid"]["value"] < 0.5, scores["kid"]
    for name in ("precision", "recall", "coverage"):
        assert scores[name]["value"] > 0.85, (name, scores[name])
    assert 0.8 < scores["density"]["value"] < 1.3, scores["density"]
    assert scores["palette_purity"]["value"] == 1.0
    assert scores["class_frequency_distance"]["value"] < 0.05
    assert scores["memorisation"]["value"] < 0.2  # about 0.05 by construction for new real layouts
    assert 0.8 < scores["memorisation"]["median_ratio"]["value"] < 1.25
    for name, entry in scores.items():
        lo, hi = entry["ci95"]
        assert lo <= entry["value"] <= hi, (name, entry)


@pytest.mark.parametrize("case", ["blurred", "shuffled", "noisy"])
def test_damaged_layouts_score_clearly_worse(results, case):
    real, damaged = results["real"]["scores"], results[case]["scores"]
    assert damaged["fld"]["value"] > 2 * real["fld"]["value"], (damaged["fld"], real["fld"])
    assert damaged["fld"]["ci95"][0] > real["fld"]["ci95"][1], (damaged["fld"], real["fld"])
    assert damaged["kid"]["value"] > real["kid"]["ci95"][1]
    assert damaged["coverage"]["value"] < real["coverage"]["value"] - 0.15
    if case in ("blurred", "noisy"):
        assert damaged["palette_purity"]["value"] < 0.95
        assert damaged["palette_purity"]["ci95"][1] < real["palette_purity"]["ci95"][0]
        assert damaged["speckle_rate"]["value"] > 2 * real["speckle_rate"]["value"]
    else:  # the same pixels, rearranged: only the structure can tell
        assert damaged["palette_purity"]["value"] == 1.0


def test_each_real_layout_is_judged_real_and_a_blurred_or_noisy_one_is_not(fitted, new_real):
    """The per-layout judgement the analysis uses along interpolation paths."""
    scorer, _ = fitted
    real = scorer.on_manifold(new_real)
    assert real.shape == (len(new_real),) and set(np.unique(real)) <= {0.0, 1.0}
    assert real.mean() >= 0.8
    assert scorer.on_manifold(blurred(new_real)).mean() < real.mean() - 0.3
    assert scorer.on_manifold(noisy(new_real)).mean() < 0.2


def test_copies_of_the_training_layouts_are_flagged_as_memorised(fitted):
    scorer, _ = fitted
    copies = scorer.fit_set.subset(np.arange(60)).rgb()
    memorisation = scorer.score(copies, bootstrap=0)["scores"]["memorisation"]
    assert memorisation["value"] == 1.0
    assert memorisation["median_ratio"]["value"] < 1e-3
    assert memorisation["floor"] < 0.2  # real layouts, each left out of its own neighbours


def test_copies_of_any_training_layout_are_found_exactly_or_nearly(fitted, new_real):
    """The copy search looks in every training layout, not in the scorer's fit subset: copies of
    training layouts the scorer never fit on slip past its feature-space memorisation score but
    not past the search; copies with a few pixels changed are no exact copies but near ones; new
    real layouts are near copies only at about the rate held-out ones are."""
    scorer, _ = fitted
    half = len(new_real) // 2
    unseen, other = new_real[:half], new_real[half:]  # training layouts outside the fit subset; new ones
    training = np.concatenate([scorer.fit_set.class_maps, rgb_to_class(unseen)[0]])
    index = CopyIndex.build(
        [(training[:100], hashes_of(training[:100])), (training[100:], hashes_of(training[100:]))], 64
    )
    index.calibrate(index.describe(scorer.held.class_maps))
    assert len(index) == len(training) and index.heldout["heldout_exact_copy_share"] == 0.0

    def copies(rgb):
        return index.summary(index.describe(generated_class_maps(rgb)))

    assert scorer.score(unseen, bootstrap=0)["scores"]["memorisation"]["value"] < 0.3  # the subset misses them
    exact = copies(unseen)
    assert exact["exact_copy_share"] == 1.0 and exact["near_copy_share"] == 1.0
    assert exact["training_layouts_searched"] == len(training)
    changed = unseen.copy()
    rng = np.random.default_rng(0)
    for image in changed:  # 8 pixels of each layout another palette colour
        image[rng.integers(0, 64, 8), rng.integers(0, 64, 8)] = PALETTE[rng.integers(0, 10, 8)]
    near = copies(changed)
    assert near["exact_copy_share"] < 0.1 and near["near_copy_share"] > 0.9, near
    new = copies(other)
    assert new["exact_copy_share"] == 0.0 and new["near_copy_share"] < 0.25, new
    assert 0 < index.threshold < new["median_distance"]
    assert new["near_copy_ci95"][0] <= new["near_copy_share"] <= new["near_copy_ci95"][1]


def test_the_fld_alone_is_the_scores_fld(fitted, new_real):
    scorer, _ = fitted
    full = scorer.score(new_real, bootstrap=50, seed=0)["scores"]["fld"]
    alone = scorer.fld(scorer.embedding(new_real), bootstrap=50, seed=0)
    assert alone["value"] == pytest.approx(full["value"]) and alone["floor"] == pytest.approx(full["floor"])
    assert alone["ci95"][0] <= alone["value"] <= alone["ci95"][1]


def test_the_floor_is_scored_once_for_a_sample_size(fitted, new_real, monkeypatch):
    """The floor depends on the reference alone: scoring a second set of as many layouts reuses it."""
    from imginav_core.scoring import scores

    scorer, _ = fitted
    sizes = []
    measure = scores.pixel_statistics
    monkeypatch.setattr(scores, "pixel_statistics", lambda rgb: sizes.append(len(rgb)) or measure(rgb))
    first = scorer.score(new_real[:40], bootstrap=0, seed=5)
    second = scorer.score(blurred(new_real[:40]), bootstrap=0, seed=5)
    assert sizes == [40, 40, 40]  # the two generated sets, the floor's 40 real layouts once
    assert first["scores"]["fld"]["floor"] == second["scores"]["fld"]["floor"]
    assert first["scores"]["fld"]["value"] < second["scores"]["fld"]["value"]


def test_a_reference_read_from_disk_scores_as_one_held_in_memory(fitted, new_real, cache_dir, tmp_path):
    """Class maps left on disk (as the probe leaves the layout cache's) give the same network
    (found in the cache by the same key) and the same scores, without being held in memory."""
    scorer, _ = fitted
    fit = scorer.fit_set
    stored = np.lib.format.open_memmap(tmp_path / "maps.npy", "w+", np.uint8, fit.class_maps.shape)
    stored[:] = fit.class_maps[::-1]
    stored.flush()
    rows = ClassMapRows.of_array(np.load(tmp_path / "maps.npy", mmap_mode="r"), np.arange(len(fit))[::-1])
    on_disk = ReferenceSet(rows, fit.labels, fit.source, fit.scene_ids)
    assert not isinstance(on_disk.class_maps, np.ndarray) and len(on_disk) == len(fit)
    assert np.array_equal(on_disk.subset([5, 2]).class_maps[:], fit.class_maps[[5, 2]])
    assert cache_key(on_disk, 0) == cache_key(fit, 0)
    log = []
    again = LayoutScorer.fit(on_disk, scorer.held, cache_dir=cache_dir, seed=0, log=log.append)
    assert any("loaded" in line for line in log)
    assert again.score(new_real[:30], bootstrap=0)["scores"] == scorer.score(new_real[:30], bootstrap=0)["scores"]


def test_the_result_is_json_with_every_score_and_a_table(results):
    result = results["real"]
    text = json.dumps(result, allow_nan=False)
    assert set(json.loads(text)["scores"]) == set(SCORE_KEYS)
    assert result["n_generated"] == result["n_floor"] and result["resolution"] == RESOLUTION
    assert result["features"]["num_features"] == 64
    table = format_scores(result)
    for name in SCORE_KEYS:
        line = next(line for line in table.splitlines() if line.startswith(name + " "))
        assert f"{result['scores'][name]['floor']:.4g}" in line


def test_the_feature_net_is_trained_once_per_reference(fitted, cache_dir):
    scorer, log = fitted
    assert any("trained" in line for line in log)
    again = []
    second = LayoutScorer.fit(scorer.fit_set, scorer.held, cache_dir=cache_dir, seed=0, log=again.append)
    assert any("loaded" in line for line in again) and not any("epoch" in line for line in again)
    images = scorer.held.rgb()[:8]
    assert np.array_equal(second.features(images), scorer.features(images))
    assert len(list(cache_dir.glob("layout_features_*.pt"))) == 1


# ---- pieces ----------------------------------------------------------------------------------


def _flood_fill_regions(class_map: np.ndarray) -> np.ndarray:
    """Region sizes by plain breadth-first search, for comparison."""
    h, w = class_map.shape
    seen = np.zeros((h, w), dtype=bool)
    sizes = []
    for y in range(h):
        for x in range(w):
            if seen[y, x]:
                continue
            stack, size = [(y, x)], 0
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                size += 1
                for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                    if 0 <= ny < h and 0 <= nx < w and not seen[ny, nx] and class_map[ny, nx] == class_map[cy, cx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
            sizes.append(size)
    return np.sort(sizes)


def test_connected_regions_match_a_flood_fill():
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 3, size=(4, 20, 20))
    maps[3] = 0
    for row in range(1, 19, 2):  # a serpentine: one region whose labels need many rounds to meet
        maps[3, row, 1:19] = 1
        maps[3, row + 1, 18 if row % 4 == 1 else 1] = 1
    maps[3, 0, 0] = 2  # and a one-pixel speck
    labels = label_components(torch.from_numpy(maps)).numpy()
    for i in range(len(maps)):
        _, sizes = np.unique(labels[i], return_counts=True)
        assert np.array_equal(np.sort(sizes), _flood_fill_regions(maps[i])), i
    assert len(np.unique(labels[3][maps[3] == 1])) == 1
    small, total = speckle_counts(torch.from_numpy(maps), max_pixels=3)
    assert small[3] == 1 and total[3] == len(_flood_fill_regions(maps[3]))
    assert np.array_equal(total, [len(_flood_fill_regions(m)) for m in maps])


def test_split_keeps_each_scene_and_its_copies_on_one_side():
    """Scenes stay whole, and a layout listed under two scenes (an identical class map) puts both
    scenes on one side: a held-out copy of a fit layout would make real-vs-real look like copying."""
    scene_ids = np.repeat([f"s{i}" for i in range(30)], 4)
    maps = np.arange(120 * 16, dtype=np.int64).reshape(120, 4, 4) % 251  # every layout its own
    maps[[8, 48, 88]] = maps[0]  # scene s0's first room also listed in scenes s2, s12 and s22
    reference = ReferenceSet(maps.astype(np.uint8), np.zeros(120), "test", scene_ids)
    fit, held = split_by_scene(reference, held_fraction=0.3, seed=1)
    assert not set(fit.scene_ids) & set(held.scene_ids)
    joined = {"s0", "s2", "s12", "s22"}
    assert joined <= set(fit.scene_ids) or joined <= set(held.scene_ids)
    assert len(fit) + len(held) == 120 and 30 <= len(held) <= 48
    again = split_by_scene(reference, held_fraction=0.3, seed=1)[1]
    assert list(again.scene_ids) == list(held.scene_ids)


def test_bootstrap_intervals_cover_the_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    trials, n = 300, 40
    covered = {"percentile": 0, "centred": 0}
    for trial in range(trials):
        x = rng.exponential(2.0, size=n)  # skewed, true mean 2

        def statistic(idx, x=x):
            return x[idx].mean()

        lo, hi = bootstrap_ci(statistic, n, resamples=200, seed=trial)
        covered["percentile"] += lo <= 2.0 <= hi
        lo, hi = bootstrap_ci(statistic, n, resamples=200, seed=trial, estimate=x.mean())
        covered["centred"] += lo <= 2.0 <= hi
    for kind, count in covered.items():
        assert 0.87 <= count / trials <= 0.99, (kind, count / trials)


def test_a_set_statistic_biased_by_repeats_keeps_its_estimate_inside_the_interval():
    n = 200
    distinct = lambda idx: len(np.unique(idx)) / n  # noqa: E731 - 1.0 on the sample, ~0.63 on resamples
    lo, hi = bootstrap_ci(distinct, n, resamples=100)
    assert hi < 1.0  # the plain percentile interval misses the estimate
    lo, hi = bootstrap_ci(distinct, n, resamples=100, estimate=1.0)
    assert lo < 1.0 <= hi


# ---- bad input ---------------------------------------------------------------------------------


def _png(path, side=RESOLUTION, array=None, mode=None):
    rng = np.random.default_rng(0)
    array = PALETTE[rng.integers(0, 10, size=(side, side))] if array is None else array
    Image.fromarray(array, mode=mode).save(path, format="PNG")
    return path


def _case_empty(folder):
    return folder, LayoutReadError, "no PNG files"


def _case_not_png(folder):
    _png(folder / "a.png")
    (folder / "notes.txt").write_text("not a layout")
    return folder / "notes.txt", LayoutReadError, "not a .png file"


def _case_other_size(folder):
    _png(folder / "a.png")
    _png(folder / "b.png", side=32)
    return folder / "b.png", LayoutReadError, "must all be one size"


def _case_sixteen_bit(folder):
    _png(folder / "a.png")
    _png(folder / "b.png", array=np.full((RESOLUTION, RESOLUTION), 240 * 257, dtype=np.uint16))
    return folder / "b.png", LayoutReadError, "PNG mode I;16"


def _case_not_square(folder):
    _png(folder / "a.png")
    Image.fromarray(PALETTE[np.zeros((32, 64), dtype=int)]).save(folder / "b.png", format="PNG")
    return folder / "b.png", LayoutReadError, "expected a square layout"


def _case_manifest_without_rows(folder):
    (folder / "layouts.csv").write_text(MANIFEST_HEADER)
    return folder / "layouts.csv", ManifestError, "no rows"


def _case_manifest_missing_image(folder):
    (folder / "layouts.csv").write_text(MANIFEST_HEADER + "s1,room,r1,images/gone.png,false\n")
    return folder / "layouts.csv", LayoutReadError, "line 2.*image file not found"


BAD = {
    f.__name__.removeprefix("_case_"): f
    for f in (
        _case_empty,
        _case_not_png,
        _case_other_size,
        _case_sixteen_bit,
        _case_not_square,
        _case_manifest_without_rows,
        _case_manifest_missing_image,
    )
}


def _given(named, folder):
    return named if named.suffix == ".csv" else folder


@pytest.mark.parametrize("case", BAD)
def test_bad_generated_input_names_the_file(tmp_path, case):
    named, error, message = BAD[case](tmp_path)
    with pytest.raises(error, match=message) as caught:
        read_generated(_given(named, tmp_path))
    assert str(named) in str(caught.value)


@pytest.mark.parametrize("case", BAD)
def test_the_command_line_says_what_is_wrong_and_keeps_the_old_json(tmp_path, capsys, reference_manifest, case):
    folder = tmp_path / "generated"
    folder.mkdir()
    named, _, message = BAD[case](folder)
    old = tmp_path / "scores.json"
    old.write_text('{"earlier": true}\n')
    status = main(
        [
            "score-layouts",
            "--reference",
            str(reference_manifest),
            "--generated",
            str(_given(named, folder)),
            "--json",
            str(old),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and str(named) in err, err
    assert old.read_text() == '{"earlier": true}\n'
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_reference_manifest_without_rows_names_it(tmp_path, capsys):
    (tmp_path / "layouts.csv").write_text(MANIFEST_HEADER)
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    (tmp_path / "generated").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / name).rename(tmp_path / "generated" / name)
    status = main(
        ["score-layouts", "--reference", str(tmp_path / "layouts.csv"), "--generated", str(tmp_path / "generated")]
    )
    err = capsys.readouterr().err
    assert status == 2 and str(tmp_path / "layouts.csv") in err and "no rows" in err


def test_the_command_scores_a_folder_and_writes_the_json(
    tmp_path, capsys, fitted, reference_manifest, cache_dir, new_real, one_thread
):
    folder = tmp_path / "generated"
    folder.mkdir()
    for i, image in enumerate(new_real[:40]):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    out = tmp_path / "out" / "scores.json"
    status = main(
        [
            "score-layouts",
            "--reference",
            str(reference_manifest),
            "--generated",
            str(folder),
            "--json",
            str(out),
            "--cache-dir",
            str(cache_dir),
            "--bootstrap",
            "20",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    assert "feature net loaded" in printed  # the module's network, not a new one
    result = json.loads(out.read_text())
    assert result["n_generated"] == 40 and set(result["scores"]) == set(SCORE_KEYS)
    assert all(entry["ci95"][0] <= entry["value"] <= entry["ci95"][1] for entry in result["scores"].values())
    for name in SCORE_KEYS:
        assert name in printed


def test_the_command_exits_with_status_2(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imginav_core",
            "score-layouts",
            "--reference",
            str(tmp_path / "missing.csv"),
            "--generated",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: {tmp_path}: no PNG files; expected the generated layouts as PNGs\n"


def test_the_help_answers_without_importing_torch():
    code = (
        "import sys\nfrom imginav_core.__main__ import main\ntry:\n    main(['score-layouts', '--help'])\n"
        "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert "python -m imginav_core score-layouts" in done.stdout and "torch imported: False" in done.stdout
