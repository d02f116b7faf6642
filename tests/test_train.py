import csv
import importlib
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
import yaml
from helpers import PHASE, TINY_MODEL, V1, V2, metrics_rows, run_dir, small_config
from PIL import Image

from imginav_core import load_config, train
from imginav_core.config import config_from_dict
from imginav_core.errors import LayoutReadError, ManifestError, ResumeError
from imginav_core.outputs import Outputs
from imginav_core.palette import PALETTE
from imginav_core.runtime import setup_runtime
from imginav_core.study.runs import load_run
from imginav_core.training.checkpoints import RunState, load_checkpoint, load_model, save_checkpoint

training = importlib.import_module("imginav_core.training.loop")  # the package's ``train`` is the function


@pytest.mark.parametrize("config", [V1, V2], ids=["V1", "V2"])
def test_one_epoch_writes_every_output_with_finite_values(config, tmp_path):
    cfg = small_config(config, tmp_path)
    run_dir = train(cfg, log=lambda _: None)
    assert run_dir == tmp_path / "experiments" / cfg.name
    rows = metrics_rows(run_dir / f"{cfg.name}_metrics.csv")
    assert len(rows) == 1 and rows[0]["status"] == "completed"
    assert (tmp_path / PHASE / f"{cfg.name}_metrics.csv").read_text() == (
        run_dir / f"{cfg.name}_metrics.csv"
    ).read_text()
    for column in (
        "train_total",
        "val_total",
        "train_reconstruction",
        "val_reconstruction",
        "val_mse",
        "val_psnr",
        "val_miou",
        "val_pixel_accuracy",
        "val_classification_accuracy",
        "val_kld",
        "val_segmentation_weighted",
        "lr",
        "epoch_seconds",
        "train_images_per_s",
        "val_seconds",
    ):
        assert math.isfinite(float(rows[0][column])), column
    assert float(rows[0]["val_seconds"]) > 0
    assert (float(rows[0]["val_kld"]) > 0) == cfg.model.variational
    kld = float(rows[0]["val_kld_weighted"])  # the total is the reconstruction sum and the weighted KL
    assert float(rows[0]["val_total"]) == pytest.approx(float(rows[0]["val_reconstruction"]) + kld, rel=1e-6)
    # the configuration the run used, every key with the schema version, its output root relative to it
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["version"] == 2 and written["output_root"] == "../.."
    assert load_config(run_dir / "config.yaml") == cfg
    sample = tmp_path / PHASE / "samples" / f"{cfg.name}_epoch_001_comparison.png"
    width, height = Image.open(sample).size
    # input | reconstruction | segmentation, several rows; the 32-pixel tiles enlarged 8 times, to 256
    assert width == 3 * 256 and height >= 2 * 256
    tile = np.asarray(Image.open(sample).convert("RGB"))[:256, :256]  # the first input, pixel by pixel
    assert np.array_equal(tile, tile[::8, ::8].repeat(8, axis=0).repeat(8, axis=1))
    for name in ("best.pt", "last.pt"):
        payload = load_checkpoint(run_dir / name)
        assert payload["epoch"] == 1 and payload["config"]["name"] == cfg.name
        assert {"model", "optimizer", "rng", "state"} <= set(payload)
        assert len(payload["state"]["history"]) == 1
    loaded_cfg, model, _ = load_model(run_dir / "best.pt")
    assert loaded_cfg.model.variational == cfg.model.variational
    assert model.encode(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 2, 2)
    # the split the run used, by scene, with the manifest's own paths
    with open(run_dir / "split.csv", newline="") as handle:
        split = list(csv.DictReader(handle))
    manifest = tmp_path / "synthetic" / "n48_r32_s0" / "layouts.csv"
    with open(manifest, newline="") as handle:
        listed = {row["layout_path"] for row in csv.DictReader(handle) if row["is_empty"] == "false"}
    assert {row["layout_path"] for row in split} == listed
    assert list(split[0]) == ["layout_path", "scene_id", "type", "split", "group", "hash"]
    for key in ("scene_id", "group", "hash"):  # a scene, a group, an identical layout: one side each
        sides = {side: {row[key] for row in split if row["split"] == side} for side in ("train", "val", "test")}
        assert all(sides.values()) and not (sides["train"] & sides["val"] or sides["train"] & sides["test"]), key
        assert sides["val"].isdisjoint(sides["test"]), key
    summary = json.loads((run_dir / "split_summary.json").read_text())
    assert summary["layouts"] == {side: sum(row["split"] == side for row in split) for side in ("train", "val", "test")}
    assert summary["identical_across_sides"] == 0 and summary["groups"] == len({row["group"] for row in split})
    assert (summary["val_fraction"], summary["test_fraction"], summary["split_seed"]) == (0.1, 0.2, 42)
    # what produced the run
    (session,) = json.loads((run_dir / "provenance.json").read_text())["sessions"]
    assert session["torch"] == torch.__version__ and session["precision"] in ("fp32", "bf16")
    assert session["world_size"] == 1 and session["device"] and session["host"]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown.*", session["git_commit"])
    # what the session cost: seconds per phase, the process's peak memory at the end of each
    resources = session["resources"]
    assert list(resources["phases"]) == list(resources["peak_memory_after"]) == ["data", "training", "validation"]
    assert resources["seconds"] >= sum(resources["phases"].values()) > 0
    assert resources["peak_memory"]["resident_bytes"] >= resources["peak_memory_after"]["data"]["resident_bytes"] > 0


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = small_config(V2, tmp_path / "straight", **{"training.epochs": 3})
    train(straight, log=lambda _: None)
    # the same run, stopped after 1 epoch and then asked for all 3
    train(small_config(V2, tmp_path / "resumed", **{"training.epochs": 1}), log=lambda _: None)
    messages = []
    train(small_config(V2, tmp_path / "resumed", **{"training.epochs": 3}), log=messages.append)
    provenance = tmp_path / "resumed" / "experiments" / straight.name / "provenance.json"
    assert len(json.loads(provenance.read_text())["sessions"]) == 2  # the start and the resumption
    assert any("resuming" in m and "after epoch 1" in m for m in messages)
    a = load_checkpoint(run_dir(straight) / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "experiments" / straight.name / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    rows_a = metrics_rows(run_dir(straight) / f"{straight.name}_metrics.csv", timing=False)
    rows_b = metrics_rows(
        tmp_path / "resumed" / "experiments" / straight.name / f"{straight.name}_metrics.csv", timing=False
    )
    assert rows_a == rows_b and len(rows_a) == 3


def test_a_finished_run_is_not_retrained(tmp_path):
    cfg = small_config(V1, tmp_path)
    train(cfg, log=lambda _: None)
    stamp = (run_dir(cfg) / "last.pt").stat().st_mtime_ns
    messages = []
    train(cfg, log=messages.append)
    assert (run_dir(cfg) / "last.pt").stat().st_mtime_ns == stamp
    assert any("nothing to do" in m for m in messages)


def test_resuming_with_another_architecture_is_refused(tmp_path):
    train(small_config(V1, tmp_path), log=lambda _: None)
    from imginav_core.errors import ResumeError

    with pytest.raises(ResumeError, match=r"model.latent_channels: 16 -> 8"):
        train(small_config(V1, tmp_path, **{"model.latent_channels": 8, "training.epochs": 2}), log=lambda _: None)


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path):
    # min_delta so large that no epoch after the first counts as an improvement
    cfg = small_config(
        V1,
        tmp_path,
        **{"training.epochs": 5, "training.early_stopping.patience": 2, "training.early_stopping.min_delta": 1e3},
    )
    train(cfg, log=lambda _: None)
    rows = metrics_rows(run_dir(cfg) / f"{cfg.name}_metrics.csv")
    assert len(rows) == 3 and rows[-1]["status"] == "early_stopped"
    assert [r["is_best"] for r in rows] == ["1", "0", "0"]
    assert load_checkpoint(run_dir(cfg) / "best.pt")["epoch"] == 1
    assert load_checkpoint(run_dir(cfg) / "last.pt")["epoch"] == 3  # last.pt moved on, best.pt stayed


def test_an_improving_epoch_writes_its_checkpoint_once(tmp_path):
    """best.pt and last.pt of an epoch that improved are one file under two names (one write);
    the next epoch's last.pt replaces only its own name."""
    cfg = small_config(V1, tmp_path, **{"training.early_stopping.min_delta": 1e3})  # only epoch 1 improves
    train(cfg, log=lambda _: None)
    best, last = run_dir(cfg) / "best.pt", run_dir(cfg) / "last.pt"
    assert best.samefile(last)
    train(small_config(V1, tmp_path, **{"training.early_stopping.min_delta": 1e3, "training.epochs": 2}))
    assert not best.samefile(last)
    assert load_checkpoint(best)["epoch"] == 1 and load_checkpoint(last)["epoch"] == 2


def _manifest(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "layouts.csv").write_text("scene_id,type,room_id,layout_path,is_empty\n" + "".join(lines))
    return folder / "layouts.csv"


def test_missing_image_names_row_and_file_and_writes_nothing(tmp_path):
    folder = tmp_path / "data"
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 240, dtype=np.uint8)).save(_manifest(folder, []).parent / f"{i}.png")
    manifest = _manifest(folder, [f"s,room,{i},{i}.png,false\n" for i in range(4)] + ["s,room,9,gone.png,false\n"])
    cfg = small_config(V1, tmp_path / "out", **{"data.manifest": str(manifest)})
    with pytest.raises(LayoutReadError, match=r"layouts.csv, line 6: .*gone.png: image file not found"):
        train(cfg, log=lambda _: None)
    assert not run_dir(cfg).exists()


def test_manifest_missing_a_column_is_named(tmp_path):
    path = tmp_path / "layouts.csv"
    path.write_text("scene_id,type,layout_path,is_empty\ns,room,a.png,false\n")
    with pytest.raises(ManifestError, match="missing column.*room_id"):
        train(small_config(V1, tmp_path / "out", **{"data.manifest": str(path)}), log=lambda _: None)


@pytest.mark.parametrize("amp,channels_last", [("off", True), ("bf16", False)])
def test_auto_memory_format_on_the_cpu_follows_the_precision(tmp_path, amp, channels_last):
    """On a CPU, "auto" trains channels_last in float32 and contiguous in bf16: the faster layout
    of each (imginav_core.bench); "on" and "off" are taken as they are."""
    cfg = small_config(V1, tmp_path, **{"training.device": "cpu", "training.amp": amp})
    assert setup_runtime(cfg).channels_last is channels_last
    for switch, wanted in (("on", True), ("off", False)):
        forced = small_config(
            V1, tmp_path, **{"training.device": "cpu", "training.amp": amp, "training.channels_last": switch}
        )
        assert setup_runtime(forced).channels_last is wanted


def test_both_queues_get_the_same_precision_by_default(monkeypatch):
    """V1 trains on a V100 (no bf16), V2 on an L40s (bf16): `training.amp: auto` must give both the
    one recipe, whatever about the card it might consult (its bf16 support, its compute capability,
    its name), or the arms' difference could be their precision's."""
    from imginav_core.runtime import auto_precision

    cards = {"Tesla V100-SXM2-32GB": ((7, 0), False), "NVIDIA L40S": ((8, 9), True)}
    chosen = {}
    for name, (capability, bf16) in cards.items():
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, bf16=bf16, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, c=capability, **k: c)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, n=name, **k: n)
        chosen[name] = auto_precision(cuda=True)
    assert len(set(chosen.values())) == 1, chosen
    assert chosen["Tesla V100-SXM2-32GB"] in ("fp16", "off")  # what a V100 can run on its tensor cores, or float32


def _palette_manifest(folder, houses):
    """A house (scene_id) per layout, each a random 16 x 16 palette image."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for h in range(houses):
        Image.fromarray(PALETTE[rng.integers(0, 10, size=(16, 16))]).save(folder / f"h{h}.png")
    return _manifest(folder, [f"house{h},room,{h},h{h}.png,false\n" for h in range(houses)])


def test_resuming_under_another_split_is_refused_and_says_what_to_do(tmp_path, one_thread):
    manifest = _palette_manifest(tmp_path / "data", 20)
    settings = {**TINY_MODEL, "data.manifest": str(manifest), "data.resolution": 16}
    cfg = small_config(V1, tmp_path / "out", **settings)
    train(cfg, log=lambda _: None)
    more = {**settings, "training.epochs": 2}
    last = run_dir(cfg) / "last.pt"
    assert load_checkpoint(last)["split"]["test_fraction"] == 0.2

    with pytest.raises(
        ResumeError,
        match=r"another split of the data \(.*test_fraction 0.2, .*\) than this run's "
        r"\(.*test_fraction 0.25.*delete the run folder",
    ):
        train(small_config(V1, tmp_path / "out", **more, **{"data.test_fraction": 0.25}), log=lambda _: None)

    # a checkpoint of the earlier scheme: train/validation by scene, 80/20, no split recorded
    payload = load_checkpoint(last)
    del payload["split"], payload["config"]["data"]["test_fraction"]
    payload["config"]["data"]["val_fraction"] = 0.2
    save_checkpoint(last, {k: v for k, v in payload.items() if k != "format"})
    with pytest.raises(ResumeError, match=r"train/validation by scene, val_fraction 0.2, split_seed 42, no test split"):
        train(small_config(V1, tmp_path / "out", **more), log=lambda _: None)


def test_resuming_after_the_manifest_changed_is_refused(tmp_path, one_thread):
    manifest = _palette_manifest(tmp_path / "data", 20)
    settings = {**TINY_MODEL, "data.manifest": str(manifest), "data.resolution": 16}
    train(small_config(V1, tmp_path / "out", **settings), log=lambda _: None)
    _palette_manifest(tmp_path / "data", 24)  # four houses more: other layouts on each side
    with pytest.raises(
        ResumeError, match=r"same split scheme but other layouts on its sides: the manifest's layouts changed"
    ):
        train(small_config(V1, tmp_path / "out", **settings, **{"training.epochs": 2}), log=lambda _: None)
    # the same layouts in another order, in a moved folder: the same split, resumed
    shutil.move(tmp_path / "data", tmp_path / "moved")
    _palette_manifest(tmp_path / "moved", 20)
    lines = (tmp_path / "moved" / "layouts.csv").read_text().splitlines(True)
    (tmp_path / "moved" / "layouts.csv").write_text(lines[0] + "".join(reversed(lines[1:])))
    moved = {**settings, "data.manifest": str(tmp_path / "moved" / "layouts.csv"), "training.epochs": 2}
    messages = []
    train(small_config(V1, tmp_path / "out", **moved), log=messages.append)
    assert any("resuming" in m and "after epoch 1" in m for m in messages)


# ---- what picks the best checkpoint ----------------------------------------------------------------


def _epochs(cfg, figures):
    """``figures``: (val_reconstruction, weighted KL) per epoch, through the loop's bookkeeping;
    returns which epochs were marked best."""
    state = RunState()
    for epoch, (reconstruction, kl) in enumerate(figures, start=1):
        row = {"val_total": reconstruction + kl, "val_reconstruction": reconstruction, "val_kld_weighted": kl}
        training._record_epoch(state, cfg, epoch, row)
    return [row["is_best"] for row in state.history]


# Epoch 2: the reconstruction terms improve by 1e-5 (less than min_delta, 1e-4); the weighted KL falls
# from 2.1e-4 to 1e-5, so the total improves by 2.1e-4, across min_delta, on the KL alone.
KL_ALONE = [(0.07460, 2.1e-4), (0.07459, 1e-5)]


def test_a_vae_whose_kl_alone_moves_the_total_is_not_marked_best_under_reconstruction():
    cfg = load_config(V2)
    assert cfg.training.early_stopping.monitor == "reconstruction" and cfg.training.early_stopping.min_delta == 1e-4
    assert _epochs(cfg, KL_ALONE) == [True, False]
    assert _epochs(load_config(V2, {"training.early_stopping.monitor": "total"}), KL_ALONE) == [True, True]
    # the deterministic arm is picked on the same quantity: its total is its reconstruction sum
    assert _epochs(load_config(V1), [(r, 0.0) for r, _ in KL_ALONE]) == [True, False]


def test_a_version_1_config_selects_on_the_total_as_older_code_did():
    values = load_config(V2).to_dict()
    del values["version"], values["training"]["early_stopping"]["monitor"]
    old = config_from_dict(values, source="config.yaml")
    assert old.training.early_stopping.monitor == "total" and old.defaulted
    assert _epochs(old, KL_ALONE) == [True, True]


def test_resuming_under_another_selection_is_refused_and_says_how_to_continue(tmp_path, one_thread):
    train(small_config(V1, tmp_path, **TINY_MODEL), log=lambda _: None)
    more = {**TINY_MODEL, "training.epochs": 2}
    with pytest.raises(
        ResumeError,
        match=r"training.early_stopping.monitor: 'reconstruction' -> 'total'.*"
        r"train with --set training.early_stopping.monitor=reconstruction",
    ):
        train(small_config(V1, tmp_path, **more, **{"training.early_stopping.monitor": "total"}), log=lambda _: None)
    # a checkpoint of older code (no version, no monitor): it picked on the total, so it resumes only so
    last = tmp_path / "experiments" / load_config(V1).name / "last.pt"
    payload = load_checkpoint(last)
    del payload["config"]["version"], payload["config"]["training"]["early_stopping"]["monitor"]
    save_checkpoint(last, {k: v for k, v in payload.items() if k != "format"})
    with pytest.raises(ResumeError, match=r"training.early_stopping.monitor: 'total' -> 'reconstruction'"):
        train(small_config(V1, tmp_path, **more), log=lambda _: None)
    messages = []
    train(small_config(V1, tmp_path, **more, **{"training.early_stopping.monitor": "total"}), log=messages.append)
    assert any("resuming" in m and "after epoch 1" in m for m in messages)


def test_a_run_folder_copied_elsewhere_reads_with_the_new_folder_as_its_output_root(tmp_path, one_thread):
    cfg = small_config(V2, tmp_path / "first", **TINY_MODEL)
    train(cfg, log=lambda _: None)
    shutil.copytree(tmp_path / "first", tmp_path / "copy")
    shutil.rmtree(tmp_path / "first")  # nothing may still lead to the original
    copied = load_config(tmp_path / "copy" / "experiments" / cfg.name / "config.yaml")
    assert copied.output_root == str(tmp_path / "copy")
    assert copied.to_dict() == {**cfg.to_dict(), "output_root": str(tmp_path / "copy")}
    run = load_run(Outputs(tmp_path / "copy", PHASE), cfg.name)  # as the probe and the analysis read it
    assert run.finished and run.config == copied and run.best_checkpoint.is_file()
    assert run.selection_column == "val_reconstruction"


def test_the_original_all_in_one_manifest_trains_as_its_distinct_layouts(tmp_path, one_thread):
    """The original pipeline's later manifest: 64 layouts with 3 viewpoint rows each (192 rows).
    A run trains on the 64 layouts, split as the equivalent layouts.csv is: not on 192 rows, and
    never with a layout's viewpoints on two sides."""
    from test_manifest import _all_in_one

    from imginav_core.data.synthetic import generate_layouts

    layouts_csv = generate_layouts(tmp_path / "set", samples=64, resolution=32, seed=4)
    all_in_one = _all_in_one(layouts_csv)
    assert len(all_in_one.read_text().splitlines()) == 1 + 3 * 64
    summaries = []
    for manifest, root in ((layouts_csv, tmp_path / "a"), (all_in_one, tmp_path / "b")):
        cfg = small_config(V1, root, **{"data.manifest": str(manifest), "data.drop_empty": False, **TINY_MODEL})
        train(cfg, log=lambda _: None)
        summaries.append(json.loads(Outputs(root, PHASE).split_summary(cfg.name).read_text()))
    assert sum(summaries[1]["layouts"].values()) == 64 and summaries[0]["layouts"] == summaries[1]["layouts"]
