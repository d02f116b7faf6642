import json
import shutil

import numpy as np
import pytest
import torch
from helpers import MANIFEST_HEADER
from PIL import Image

from imginav_core.data import cache as cache_module
from imginav_core.data.batches import CachedLayouts, batch_loader, to_model_inputs
from imginav_core.data.cache import build_cache, cache_key, load_layout
from imginav_core.data.manifest import read_manifest
from imginav_core.errors import LayoutReadError
from imginav_core.palette import PALETTE, class_map_hash, rgb_to_class


def test_cache_holds_decoded_layouts_and_later_reads_need_no_png(synthetic_manifest, tmp_path):
    records = read_manifest(synthetic_manifest).records
    cache = build_cache(records, 64, tmp_path / "cache", synthetic_manifest, workers=2, log=lambda _: None)
    layouts = CachedLayouts(cache, np.arange(len(records)))
    stored = layouts.stored(np.arange(len(records)))
    class_map, exact = stored["class_map"].numpy(), stored["off_palette_rgb"]
    assert class_map.shape == (len(records), 64, 64) and exact.shape == (0, 64, 64, 3)  # drawn in palette colours
    for i in (0, len(records) - 1):
        expected_rgb, expected_map, _ = load_layout(records[i].path, 64)
        assert np.array_equal(layouts[i]["rgb"][0].numpy(), expected_rgb) and np.array_equal(class_map[i], expected_map)
        assert cache.hashes[i] == class_map_hash(expected_map)
    assert cache.labels.tolist() == [r.label for r in records]
    # A second build with the same manifest and resolution reads the cache, not the PNGs.
    moved = synthetic_manifest.parent / "images_moved"
    (synthetic_manifest.parent / "images").rename(moved)
    try:
        again = build_cache(records, 64, tmp_path / "cache", synthetic_manifest, log=lambda _: None)
        assert again.folder == cache.folder
        again_maps = CachedLayouts(again, np.arange(len(again))).stored(np.arange(len(again)))["class_map"]
        assert np.array_equal(again_maps.numpy(), class_map) and again.hashes.tolist() == cache.hashes.tolist()
        with pytest.raises(LayoutReadError, match="not found"):  # another resolution is another cache
            build_cache(records, 32, tmp_path / "cache", synthetic_manifest, workers=1, log=lambda _: None)
    finally:
        moved.rename(synthetic_manifest.parent / "images")


def _layouts_with_off_palette_pixels(folder, size=16):
    """Six layouts: three in palette colours only, three with off-palette pixels, among them
    colours a lookup would get wrong: one a unit off a palette colour, one black (the colour the
    lookup gives an ignored pixel), one a smudge over a quarter of the image."""
    rng = np.random.default_rng(0)
    images = [PALETTE[rng.integers(0, 10, size=(size, size))] for _ in range(6)]
    images[1][3, 5] = PALETTE[0] + np.array([1, 0, 0], dtype=np.uint8)
    images[3][0, :] = (0, 0, 0)
    images[4][: size // 4] = (10, 20, 30)
    images[4][size // 2, 0] = (228, 26, 29)
    names = [f"layout{i}.png" for i in range(6)]
    for name, image in zip(names, images):
        Image.fromarray(image).save(folder / name)
    manifest = folder / "layouts.csv"
    manifest.write_text(MANIFEST_HEADER + "".join(f"s{i},room,{i},{n},false\n" for i, n in enumerate(names)))
    return manifest, images


def _old_model_inputs(rgb: np.ndarray, class_map: np.ndarray, labels: np.ndarray):
    """What the training loop was given from the cache that stored every decoded RGB image."""
    rgb = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return rgb.contiguous(), torch.from_numpy(class_map).long(), torch.from_numpy(labels)


# The images are rebuilt where the batch goes: on a GPU too, where there is one.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_rebuilt_from_class_maps_are_bit_identical_to_the_decoded_images(tmp_path, channels_last, device):
    manifest, images = _layouts_with_off_palette_pixels(tmp_path)
    cache = build_cache(
        read_manifest(manifest).records, 16, tmp_path / "cache", manifest, workers=2, log=lambda _: None
    )
    assert cache.rgb_rows.tolist() == [1, 3, 4]  # exact RGB kept only where the class map cannot give it
    decoded = [load_layout(tmp_path / f"layout{i}.png", 16) for i in range(6)]
    assert all(np.array_equal(rgb, image) for (rgb, _, _), image in zip(decoded, images))
    layouts = CachedLayouts(cache, np.arange(6))
    for positions in ([0, 1, 2, 3, 4, 5], [5, 3], [2], [4, 0], [1]):
        rows = np.sort(positions)
        old = _old_model_inputs(
            np.stack([decoded[i][0] for i in rows]), np.stack([decoded[i][1] for i in rows]), cache.labels[rows]
        )
        batch = layouts[np.array(positions)]
        assert "rgb" not in batch  # built when read: code reading class maps only never pays for it
        assert batch["rgb"].dtype == torch.uint8 and np.array_equal(batch["rgb"].numpy(), np.stack(images)[rows])
        for given in (batch, layouts.stored(np.array(positions))):  # the CPU's images, and the loader's batch
            new = to_model_inputs(given, torch.device(device), channels_last)
            for a, b in zip(new, old):
                assert a.device.type == device and a.dtype == b.dtype and torch.equal(a.cpu(), b), positions
            assert new[0].is_contiguous(memory_format=torch.channels_last) is channels_last
    loader = batch_loader(layouts, 4, shuffle=True, seed=0, num_workers=1, pin_memory=device == "cuda")
    for positions, batch in zip(loader.sampler, loader):  # the training path: batches as stored
        rows = np.sort(positions)
        old = _old_model_inputs(np.stack(images)[rows], np.stack([decoded[i][1] for i in rows]), cache.labels[rows])
        assert all(torch.equal(a.cpu(), b) for a, b in zip(to_model_inputs(batch, torch.device(device)), old))


def test_the_cache_stores_class_maps_and_only_the_off_palette_images_in_rgb(tmp_path):
    manifest, _ = _layouts_with_off_palette_pixels(tmp_path)
    cache = build_cache(
        read_manifest(manifest).records, 16, tmp_path / "cache", manifest, workers=2, log=lambda _: None
    )
    sizes = {p.name: p.stat().st_size for p in cache.folder.iterdir() if p.suffix == ".u8"}
    assert sizes == {"class_map.u8": 6 * 16 * 16, "off_palette_rgb.u8": 3 * 16 * 16 * 3}
    assert not list(cache.folder.glob("*.part"))


def test_a_cache_of_an_older_version_is_never_read_but_rebuilt_beside_it(tmp_path, monkeypatch):
    """An older cache (version 2: an RGB image and a class map per layout) under the key it had:
    the current version builds its own folder from the PNGs, reads nothing of the old one, and
    says where the old one is, so that its tens of GB can be deleted."""
    manifest, images = _layouts_with_off_palette_pixels(tmp_path)
    records = read_manifest(manifest).records
    monkeypatch.setattr(cache_module, "CACHE_VERSION", 2)
    old = tmp_path / "cache" / cache_key(records, 16, manifest.resolve().parent)
    monkeypatch.undo()
    old.mkdir(parents=True)
    (old / "rgb.u8").write_bytes(bytes(6 * 16 * 16 * 3))  # all black: wrong if read
    (old / "class_map.u8").write_bytes(bytes(6 * 16 * 16))
    meta = {"version": 2, "resolution": 16, "n": 6, "paths": [r.path.name for r in records]}
    meta |= {"labels": [0] * 6, "off_palette": [0.0] * 6, "skipped": []}
    (old / "meta.json").write_text(json.dumps(meta))
    messages = []
    cache = build_cache(records, 16, tmp_path / "cache", manifest, workers=1, log=messages.append)
    assert cache.folder != old and (old / "meta.json").is_file()
    assert np.array_equal(CachedLayouts(cache, np.arange(6))[np.arange(6)]["rgb"].numpy(), np.stack(images))
    assert any(f"{old.name} holds a decoded cache of an older version (2;" in m and "delete it" in m for m in messages)
    # an old meta.json under the current key (copied there by hand) is not read either
    shutil.rmtree(cache.folder)
    shutil.copytree(old, cache.folder)
    again = build_cache(records, 16, tmp_path / "cache", manifest, workers=1, log=lambda _: None)
    assert np.array_equal(CachedLayouts(again, np.arange(6))[np.arange(6)]["rgb"].numpy(), np.stack(images))


def test_other_sizes_are_resized_nearest_and_stay_in_the_palette(tmp_path):
    rng = np.random.default_rng(0)
    big = PALETTE[rng.integers(0, 10, size=(100, 100))]
    Image.fromarray(big).save(tmp_path / "big.png")
    rgb, class_map, unknown = load_layout(tmp_path / "big.png", 64)
    assert rgb.shape == (64, 64, 3) and unknown == 0
    assert set(np.unique(class_map)) <= set(range(10))


def test_grayscale_and_palette_mode_images_are_converted(tmp_path):
    grey = np.full((32, 32), 240, dtype=np.uint8)
    grey[:, :4] = 200
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    _, class_map, unknown = load_layout(tmp_path / "grey.png", 32)
    assert unknown == 0 and set(np.unique(class_map)) == {8, 9}  # wall, background
    rgb = PALETTE[np.arange(32 * 32).reshape(32, 32) % 10]
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=10).save(tmp_path / "p.png")
    _, class_map, unknown = load_layout(tmp_path / "p.png", 32)
    assert unknown == 0 and np.array_equal(class_map, rgb_to_class(rgb)[0])


def test_unreadable_image_names_the_manifest_line_and_leaves_nothing(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(np.full((8, 8, 3), 240, dtype=np.uint8)).save(folder / "ok.png")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "layouts.csv").write_text(
        "scene_id,type,room_id,layout_path,is_empty\ns,room,1,ok.png,false\ns,room,2,broken.png,false\n"
        "s,room,3,missing.png,false\n"
    )
    records = read_manifest(folder / "layouts.csv").records
    with pytest.raises(LayoutReadError, match=r"layouts.csv, line 3: .*broken.png: cannot decode"):
        build_cache(records, 8, tmp_path / "cache", folder / "layouts.csv", workers=1, log=lambda _: None)
    assert not any(p.name.endswith(".partial") or (p / "meta.json").exists() for p in (tmp_path / "cache").iterdir())
    cache = build_cache(
        records, 8, tmp_path / "cache", folder / "layouts.csv", skip_broken=True, workers=1, log=lambda _: None
    )
    assert [r.path.name for r in cache.records] == ["ok.png"]
    assert len(cache.skipped) == 2 and "line 4" in cache.skipped[1] and "not found" in cache.skipped[1]
