"""Phase 1.3's data: a trained run's autoencoder loaded to encode and decode, and every layout's
latent exported (``python -m imginav_core export-latents``), checked against answers computed
here from the model and the tensors directly.

The runs are the session's tiny V1 and V2 (``tiny_runs``: 96 synthetic layouts at 32 x 32). The
manifest the export reads is in the original's all-in-one shape as far as the reader takes it:
the layouts.csv columns plus a ``viewpoint`` column, every layout on 3 rows (the reader ignores
other columns and drops rows repeating a layout with the same metadata).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PHASE, ROOT, V1_NAME, V2_NAME
from PIL import Image

from imginav_core.__main__ import main
from imginav_core.autoencoder import images_to_input, load_autoencoder, posterior_std
from imginav_core.data.manifest import read_manifest
from imginav_core.errors import (
    CheckpointError,
    ConfigError,
    LayoutReadError,
    ManifestError,
    ResumeError,
)
from imginav_core.export import COLUMNS, STD_COLUMN, export_instructions, export_latents, load_latent_stats
from imginav_core.outputs import Outputs

VIEWPOINTS = 3
QUIET = {"log": lambda _: None}


def _run(root: Path, name: str) -> Path:
    return Outputs(root, PHASE).run_dir(name)


@pytest.fixture
def layouts(tiny_runs, tmp_path) -> Path:
    """A copy of the layouts the tiny runs trained on, with an all-in-one manifest: 3 rows a layout."""
    source = next((tiny_runs / "synthetic").glob("*/layouts.csv")).parent
    data = tmp_path / "data"
    shutil.copytree(source / "images", data / "images")
    with open(source / "layouts.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(data / "all_in_one.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, [*rows[0], "viewpoint"])
        writer.writeheader()
        for row in rows:
            for view in range(VIEWPOINTS):
                writer.writerow({**row, "viewpoint": view})
    return data / "all_in_one.csv"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _moments(latents: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance over layouts and positions, computed directly."""
    values = latents.double()
    return values.mean((0, 2, 3)).numpy(), values.var((0, 2, 3), unbiased=False).numpy()


@pytest.mark.parametrize("name", [V1_NAME, V2_NAME])
def test_every_distinct_layout_is_exported_once_as_its_posterior_mean(tiny_runs, layouts, tmp_path, name, one_thread):
    run, out = _run(tiny_runs, name), tmp_path / "embeddings"
    argv = ["export-latents", "--run", str(run), "--manifest", str(layouts), "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--batch-size", "5"]) == 0

    ae = load_autoencoder(run)
    records = read_manifest(layouts, drop_empty=False).records
    assert len(records) == 96 and sum(r.is_empty for r in records) > 0  # 3 rows a layout read as one, empty kept
    means = sorted(out.rglob("*_layout_emb.pt"))
    stds = sorted(out.rglob("*_layout_emb_std.pt"))
    assert len(means) == len(records) and len(stds) == (len(records) if ae.variational else 0)

    with open(out / "layout_embeddings.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == [*COLUMNS, *([STD_COLUMN] if ae.variational else [])]
    assert len(rows) == len(records)
    latents, variances = [], []
    for row, record in zip(rows, records):
        assert (row["scene_id"], row["type"], row["room_id"]) == (record.scene_id, record.type, record.room_id)
        assert row["is_empty"] == str(record.is_empty).lower()
        assert (out / row["layout_path"]).resolve() == record.path  # every path relative to the CSV's folder
        relative = record.path.relative_to(layouts.parent)
        assert row["layout_emb_path"] == relative.with_name(relative.stem + "_layout_emb.pt").as_posix()
        latent = torch.load(out / row["layout_emb_path"], weights_only=True)
        posterior = ae.encode_png(record.path)
        assert latent.dtype == torch.float32 and tuple(latent.shape) == ae.latent_shape
        torch.testing.assert_close(latent, posterior.mean[0], rtol=1e-4, atol=1e-5)  # a batch of 5 vs of 1
        if ae.variational:
            std = torch.load(out / row[STD_COLUMN], weights_only=True)
            torch.testing.assert_close(std, posterior_std(posterior)[0], rtol=1e-4, atol=1e-5)
        if not record.is_empty:
            latents.append(latent)
            if ae.variational:
                variances.append(std.double() ** 2)
    # layout_embeddings.csv is a manifest in its own right: the same layouts
    assert [r.path for r in read_manifest(out / "layout_embeddings.csv", drop_empty=False).records] == [
        r.path for r in records
    ]

    stats = json.loads((out / "latent_stats.json").read_text())
    mean, variance = _moments(torch.stack(latents))
    assert stats["layouts"] == len(records) and stats["non_empty"] == len(latents)
    assert stats["empty"] == len(records) - len(latents) and stats["skipped"] == []
    assert stats["latent_shape"] == list(ae.latent_shape) and stats["resolution"] == ae.resolution == 32
    assert stats["variational"] is ae.variational and stats["experiment"] == name
    assert stats["latents"]["channel_mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
    assert stats["latents"]["channel_std"] == pytest.approx(np.sqrt(variance), rel=1e-9)
    everything = torch.stack(latents).double()
    assert stats["latents"]["mean"] == pytest.approx(float(everything.mean()), rel=1e-9, abs=1e-12)
    assert stats["latents"]["std"] == pytest.approx(float(everything.std(unbiased=False)), rel=1e-9)
    if ae.variational:  # samples mean + std * noise: variance var(mean) + E[std^2]
        sampled = variance + torch.stack(variances).mean((0, 2, 3)).numpy()
        assert stats["samples"]["channel_mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert stats["samples"]["channel_std"] == pytest.approx(np.sqrt(sampled), rel=1e-9)
        assert stats["standardise_with"] == "samples"
    else:
        assert stats["samples"] is None and stats["standardise_with"] == "latents"
        # standardised by the statistics, the latents have zero mean and unit variance per channel
        standard = load_latent_stats(out).standardise(torch.stack(latents))
        z_mean, z_variance = _moments(standard)
        assert z_mean == pytest.approx(np.zeros_like(mean), abs=1e-5)
        assert z_variance == pytest.approx(np.ones_like(mean), abs=1e-4)
        torch.testing.assert_close(load_latent_stats(out).unstandardise(standard), torch.stack(latents))


def test_load_autoencoder_decodes_what_the_model_reconstructs(tiny_runs, one_thread):
    for name in (V1_NAME, V2_NAME):
        ae = load_autoencoder(_run(tiny_runs, name))
        assert ae.name == name and not ae.model.training and ae.checkpoint.name == "best.pt"
        assert ae.variational is (name == V2_NAME) and ae.config.model.variational is ae.variational
        paths = sorted((tiny_runs / "synthetic").glob("*/images/*.png"))[:4]
        x = torch.cat([ae.load_png(p) for p in paths])
        # the image as training reads it: uint8 / 127.5 - 1
        pixels = np.asarray(Image.open(paths[0]).convert("RGB"), dtype=np.float32)
        torch.testing.assert_close(x[0].permute(1, 2, 0), torch.from_numpy(pixels / 127.5 - 1.0))
        assert x.shape == (4, 3, ae.resolution, ae.resolution) and -1 <= x.min() and x.max() <= 1
        posterior = ae.encode(x)
        assert tuple(posterior.mean.shape) == (4, *ae.latent_shape) and not posterior.mean.requires_grad
        assert (posterior_std(posterior) is None) is (not ae.variational)
        decoded = ae.decode(posterior.mean)
        with torch.no_grad():
            forward = ae.model(x)  # eval mode: the decoder reads the posterior's mode, its mean
        for head in ("rgb", "segmentation", "classification"):
            assert torch.equal(decoded[head], forward[head]), head
            assert torch.equal(ae.reconstruct(x)[head], forward[head]), head
        assert decoded["rgb"].shape == x.shape and decoded["rgb"].abs().max() <= 1
        assert decoded["segmentation"].shape == (4, 10, ae.resolution, ae.resolution)
        assert decoded["classification"].shape == (4, 2)


def test_the_autoencoder_refuses_what_it_cannot_use(tiny_runs, tmp_path):
    with pytest.raises(CheckpointError, match="no such run folder"):
        load_autoencoder(tmp_path / "nowhere")
    unfinished = tmp_path / "experiments" / "unfinished"
    unfinished.mkdir(parents=True)
    with pytest.raises(CheckpointError, match=re.escape(f"{unfinished}: not a finished run: it has no best.pt")):
        load_autoencoder(unfinished)
    (unfinished / "best.pt").write_bytes(b"written by something else")
    with pytest.raises(CheckpointError, match=r"best.pt: not a readable checkpoint"):
        load_autoencoder(unfinished)
    torch.save({"format": 1, "config": {}}, unfinished / "best.pt")  # another writer's file of the same format
    with pytest.raises((CheckpointError, ConfigError), match=r"best.pt"):
        load_autoencoder(unfinished)
    with pytest.raises(ConfigError, match="device 'gpu'"):
        load_autoencoder(_run(tiny_runs, V1_NAME), device="gpu")

    ae = load_autoencoder(_run(tiny_runs, V1_NAME))
    image = np.full((32, 32, 3), 240, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"expected \[-1, 1\]"):
        ae.encode(images_to_input(image) * 127.5 + 127.5)  # 0..255 floats
    with pytest.raises(ValueError, match="expected float images"):
        ae.encode(torch.from_numpy(image).permute(2, 0, 1)[None])
    with pytest.raises(ValueError, match="multiples of 16"):
        ae.encode(torch.zeros(1, 3, 40, 40))
    with pytest.raises(ValueError, match="latents B x"):
        ae.decode(torch.zeros(1, 3, 8, 8))


def test_a_killed_export_resumes_and_writes_the_same_files(tiny_runs, layouts, tmp_path, one_thread):
    run = _run(tiny_runs, V2_NAME)
    options = {"device": "cpu", "batch_size": 8, "workers": 1, **QUIET}
    whole = tmp_path / "whole"
    export_latents(run, layouts, whole, **options)
    expected = _snapshot(whole)

    # killed by the batch system while writing the 30th layout's latent: a temporary is left
    killed = tmp_path / "killed"
    records = read_manifest(layouts, drop_empty=False).records
    target = records[29].path.stem + "_layout_emb.pt"
    command = [sys.executable, "-m", "imginav_core", "export-latents", "--run", str(run), "--manifest", str(layouts)]
    command += ["--out", str(killed), "--device", "cpu", "--batch-size", "8", "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IMGINAV_KILL_AT": f"written:{target}"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, done.stdout + done.stderr
    left = _snapshot(killed)
    assert not (killed / "latent_stats.json").exists() and not (killed / "layout_embeddings.csv").exists()
    assert any(name.endswith(".tmp") for name in left)  # the temporary of the file being written
    written = [name for name in left if name.endswith("_layout_emb.pt")]
    assert 24 <= len(written) < 32  # three batches of 8 written whole, the fourth cut short
    assert all(left[name] == expected[name] for name in left if not name.endswith((".tmp", ".lock")))

    export_latents(run, layouts, killed, **options)  # the same command again
    assert _snapshot(killed) == expected  # bit for bit, the temporary gone

    # files lost after the export (deleted by hand): a rerun writes them again, the same
    lost = [n for n in expected if n.endswith("_std.pt")][:5] + [n for n in expected if n.endswith("_emb.pt")][7:9]
    for name in [*lost, "layout_embeddings.csv", "latent_stats.json"]:
        (killed / name).unlink()
    summary = export_latents(run, layouts, killed, **options)
    assert _snapshot(killed) == expected and 0 < summary.encoded <= 3 * 8

    # a folder holding another checkpoint's latents is refused, not mixed
    with pytest.raises(ResumeError, match="never mixes two models' latents"):
        export_latents(_run(tiny_runs, V1_NAME), layouts, killed, **options)


def test_a_bad_png_is_named_and_left_out_only_when_asked(tiny_runs, layouts, tmp_path, one_thread, capsys):
    records = read_manifest(layouts, drop_empty=False).records
    broken = records[10]
    broken.path.write_bytes(b"not a png at all")
    run, out = _run(tiny_runs, V1_NAME), tmp_path / "out"
    argv = ["export-latents", "--run", str(run), "--manifest", str(layouts), "--out", str(out), "--device", "cpu"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"line {broken.line}: {broken.path}" in error and "not an image file" in error and "--skip-broken" in error
    with pytest.raises(LayoutReadError):
        export_latents(run, layouts, out, device="cpu", **QUIET)

    summary = export_latents(run, layouts, out, device="cpu", skip_broken=True, **QUIET)
    assert summary.layouts == len(records) - 1 and len(summary.skipped) == 1 and str(broken.path) in summary.skipped[0]
    stats = json.loads((out / "latent_stats.json").read_text())
    assert stats["skipped"] == summary.skipped and stats["layouts"] == len(records) - 1
    with open(out / "layout_embeddings.csv", newline="") as handle:
        listed = [(out / row["layout_path"]).resolve() for row in csv.DictReader(handle)]
    assert broken.path not in listed and len(listed) == len(records) - 1
    assert not list(out.rglob(broken.path.stem + "*"))


def _manifest(folder: Path, rows: list[tuple[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["scene_id,type,room_id,layout_path,is_empty"] + [f"{s},scene,scene,{p},false" for s, p in rows]
    (folder / "layouts.csv").write_text("\n".join(lines) + "\n")
    return folder / "layouts.csv"


def test_layouts_that_cannot_be_mirrored_into_the_folder_are_refused_naming_both(tiny_runs, layouts, tmp_path):
    run, image = _run(tiny_runs, V1_NAME), next(layouts.parent.glob("images/*.png"))
    outside = _manifest(tmp_path / "manifests", [("a", str(image)), ("b", "../data/images/" + image.name)])
    with pytest.raises(
        ManifestError, match=re.escape(f"line 2: {image} lies outside the manifest's folder {outside.parent}")
    ):
        export_latents(run, outside, tmp_path / "out", device="cpu", **QUIET)

    twin = image.with_suffix(".PNG")
    shutil.copy(image, twin)
    clash = _manifest(layouts.parent, [("a", f"images/{image.name}"), ("b", f"images/{twin.name}")])
    with pytest.raises(ManifestError, match=re.escape(f"lines 2 and 3: {image} and {twin} would both be exported to")):
        export_latents(run, clash, tmp_path / "out", device="cpu", **QUIET)

    # a folder linked in from elsewhere lies below the manifest all the same
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "pictures").symlink_to(layouts.parent / "images")
    manifest = _manifest(linked, [("a", f"pictures/{image.name}")])
    export_latents(run, manifest, linked / "out", device="cpu", **QUIET)
    assert (linked / "out" / "pictures" / (image.stem + "_layout_emb.pt")).is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--study", "S", "--run", "R"], "give either --study OUTPUT_ROOT or --run RUN_DIR"),
        (["--run", "R", "--manifest", "M"], "missing --out"),
        (["--manifest", "M", "--out", "O"], "missing --run"),
        (["--run", "R", "--manifest", "M", "--out", "O", "--phase", "P"], "--phase picks the study's phase folder"),
        (["--run", "RUN", "--manifest", "M", "--out", "O"], "RUN: no such run folder"),
        (["--run", "V1", "--manifest", "M", "--out", "O", "--batch-size", "0"], "batch size 0"),
        (["--run", "V1", "--manifest", "nothing.csv", "--out", "O"], "manifest not found: nothing.csv"),
        (["--study", "nowhere"], "--study nowhere: no such output root"),
    ],
)
def test_bad_arguments_are_refused_with_what_to_give(tiny_runs, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [str(_run(tiny_runs, V1_NAME)) if a == "V1" else a for a in argv]
    assert main(["export-latents", *argv, "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err


def _study_copy(tiny_runs: Path, target: Path, chosen: str | None) -> Path:
    """The tiny runs' output root moved elsewhere, with a decision.json choosing ``chosen``."""
    shutil.copytree(tiny_runs, target, ignore=shutil.ignore_patterns("cache"))
    decision = {"choice": "variational" if chosen == V2_NAME else None, "verdict": "vae better", "reason": "test"}
    Outputs(target, PHASE).decision.write_text(json.dumps({**decision, "chosen_experiment": chosen}))
    return target


def test_the_study_export_takes_the_chosen_run_and_its_layouts(tiny_runs, tmp_path):
    root = _study_copy(tiny_runs, tmp_path / "moved", V2_NAME)
    # the output root the runs trained in is gone from where they were: the layouts are found under this one
    env = {**os.environ, "IMGINAV_OUTPUTS": str(root), "IMGINAV_CONDA_ENV": ""}
    env.update(OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    done = subprocess.run(["bash", "hpc/export_latents.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    files = Outputs(root, PHASE).layout_embeddings
    stats = json.loads(files.stats.read_text())
    assert stats["experiment"] == V2_NAME and stats["variational"] is True and stats["layouts"] == 96
    assert Path(stats["manifest"]).is_relative_to(root.resolve())
    assert len(list(files.folder.rglob("*_layout_emb_std.pt"))) == 96


def test_the_study_export_refuses_an_undecided_study(tiny_runs, tmp_path, capsys):
    root = _study_copy(tiny_runs, tmp_path / "undecided", None)
    assert main(["export-latents", "--study", str(root)]) == 2
    assert "the decision chose no run" in capsys.readouterr().err
    Outputs(root, PHASE).decision.unlink()
    assert main(["export-latents", "--study", str(root)]) == 2
    assert "the study has not decided yet" in capsys.readouterr().err


def test_the_export_instructions_name_the_command_and_the_files(tmp_path):
    out = Outputs(tmp_path / "outputs", PHASE)
    text = export_instructions(out, V2_NAME)
    assert "export-latents --study OUTPUT_ROOT" in text and "hpc/export_latents.sh" in text
    assert str(out.root) not in text  # the next phase's config names no folder of this machine
    assert out.shown(out.layout_embeddings.folder) in text and "latent_stats.json" in text and V2_NAME in text
    assert not any(line.startswith("#") for line in text.splitlines())  # write_decision makes them comments


def test_the_command_answers_help_without_torch_and_shows_an_example():
    code = (
        "import sys\nfrom imginav_core.__main__ import main\n"
        "try:\n    main(['export-latents', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout and "python -m imginav_core export-latents --study" in done.stdout
