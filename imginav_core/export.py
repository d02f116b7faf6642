"""Every layout's latent under a trained run, written once for Phase 1.3 (the original pipeline's
stage 6, ``stage6_create_layout_embeddings.py``): ``python -m imginav_core export-latents``.
book/using/phase1_3.md describes the files (``outputs.EmbeddingFiles`` names them) and the
statistics. What the code keeps to:

- **Paths.** Every path in ``layout_embeddings.csv`` is relative to its own folder, as in
  ``layouts.csv``: the file is itself a manifest ``read_manifest`` reads, and moves with the data.
- **Resumable.** Every file is written whole or not at all. The layouts are encoded in fixed
  batches of the manifest's order; a batch whose files are all there is skipped, any other is
  encoded whole again and its missing files written. So a killed export, run again, writes bit for
  bit the files an uninterrupted one would (same device and batch size), and the statistics,
  computed at the end from the written files in the manifest's order, are the same.
  ``export.json``, written first, records the checkpoint's sha256: a folder holding another
  checkpoint's latents is refused, never mixed. ``latent_stats.json`` is written last, so its
  presence says the export finished.
- **Memory.** Two batches of decoded images (the next one is decoded while this one is encoded)
  and one batch's activations; statistics are streamed (per-channel moments in float64, merged
  layout by layout), never all latents at once.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .autoencoder import TrainedAutoencoder, images_to_input, load_autoencoder, posterior_std
from .config import config_from_dict, is_folder_name
from .data.batches import manifest_path, read_ahead
from .data.cache import load_layout
from .data.manifest import LAYOUTS_CSV, LayoutRecord, Manifest, read_manifest
from .errors import ConfigError, LayoutReadError, ManifestError, ResumeError, RunInProgressError, UnfinishedRunError
from .files import (
    LockHeldError,
    csv_text,
    exclusive_lock,
    file_sha256,
    remove_leftovers,
    write_bytes_atomic,
    write_text_atomic,
)
from .outputs import LAYOUT_EMBEDDING_SUFFIX, EmbeddingFiles, Outputs, relative_path

FORMAT = 1
DEFAULT_BATCH_SIZE = 16
COLUMNS = ("scene_id", "type", "room_id", "layout_path", "layout_emb_path", "is_empty")
STD_COLUMN = "layout_emb_std_path"  # a VAE's export only
COMMAND = "python -m imginav_core export-latents"


# ---- what is written where ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportItem:
    """One distinct layout of the manifest and its files."""

    record: LayoutRecord
    mean: Path
    std: Path | None  # None for a deterministic encoder

    def written(self) -> bool:
        return self.mean.is_file() and (self.std is None or self.std.is_file())


def _relative_layout(record: LayoutRecord, written: str, manifest: Path) -> str:
    """The layout's path below the manifest's folder: as written (``written``; "": as resolved)
    where it lies below it (a folder linked in from elsewhere stays below it), else as resolved; a
    ManifestError otherwise."""
    folder = Path(os.path.abspath(manifest)).parent
    lexical = Path(os.path.normpath(folder / written)) if written else record.path
    for path, base in ((lexical, folder), (lexical, folder.resolve()), (record.path, folder.resolve())):
        with contextlib.suppress(ValueError):
            relative = path.relative_to(base)
            if relative.parts:
                return relative.as_posix()
    raise ManifestError(
        f"{manifest}, line {record.line}: {written or record.path} lies outside the manifest's folder {folder}; "
        "the export mirrors each layout's path below that folder, so the manifest must lie at or above its "
        "images (write one there, with paths relative to it)"
    )


def plan_items(manifest: Manifest, files: EmbeddingFiles, variational: bool) -> list[ExportItem]:
    """Each layout's files, in the manifest's order. A ManifestError names both layouts when two
    map to one file (compared without case: on a case-insensitive file system they would)."""
    items, taken = [], {}
    for record in manifest.records:
        # The all-in-one manifest's layouts are mirrored as resolved, as they always have been.
        written = record.written if manifest.format is LAYOUTS_CSV else ""
        layout = _relative_layout(record, written, manifest.path)
        item = ExportItem(record, files.mean(layout), files.std(layout) if variational else None)
        for path in filter(None, (item.mean, item.std)):
            other = taken.setdefault(str(path).casefold(), item)
            if other is not item:
                raise ManifestError(
                    f"{manifest.path}, lines {other.record.line} and {record.line}: {other.record.path} and "
                    f"{record.path} would both be exported to {path}; rename one of them"
                )
        items.append(item)
    return items


# ---- streaming statistics --------------------------------------------------------------------------


@dataclass
class ChannelMoments:
    """Per-channel count, mean and sum of squared deviations of latents added one at a time (Chan
    et al.'s pairwise merge, in float64: no cancellation over tens of millions of elements), and
    the sum of the posterior variances (a VAE's samples have variance var(mean) + E[std^2])."""

    channels: int
    count: int = 0  # elements per channel
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    variance_sum: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean, self.m2, self.variance_sum = (np.zeros(self.channels) for _ in range(3))

    def add(self, latent: torch.Tensor, std: torch.Tensor | None = None) -> None:
        values = latent.detach().double().reshape(self.channels, -1).numpy()
        n = values.shape[1]
        mean = values.mean(axis=1)
        m2 = ((values - mean[:, None]) ** 2).sum(axis=1)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total
        if std is not None:
            variance = std.detach().double().reshape(self.channels, -1).numpy() ** 2
            self.variance_sum = self.variance_sum + variance.sum(axis=1)

    def figures(self, samples: bool = False) -> dict:
        """Per channel and pooled over the channels (each channel has as many elements): of the
        latents added, or with ``samples`` of posterior samples ``mean + std * noise``, exactly
        (E[z] = E[mean], Var[z] = Var[mean] + E[std^2]), not estimated from draws."""
        variance = self.m2 / self.count
        if samples:
            variance = variance + self.variance_sum / self.count
        pooled = float(variance.mean() + ((self.mean - self.mean.mean()) ** 2).mean())
        return {
            "channel_mean": self.mean.tolist(),
            "channel_std": np.sqrt(variance).tolist(),
            "mean": float(self.mean.mean()),
            "std": float(np.sqrt(pooled)),
        }


@dataclass
class LatentStats:
    """What to standardise a run's latents by (``latent_stats.json``): the statistics of posterior
    samples for a VAE, of the latents themselves for the deterministic encoder."""

    shift: torch.Tensor  # (C,)
    scale: torch.Tensor  # (C,)

    def standardise(self, latent: torch.Tensor) -> torch.Tensor:
        """``(latent - shift) / scale`` per channel, for latents B x C x h x w or C x h x w."""
        return (latent - self._view(self.shift, latent)) / self._view(self.scale, latent)

    def unstandardise(self, latent: torch.Tensor) -> torch.Tensor:
        """The inverse: a generated latent back to the space the decoder reads."""
        return latent * self._view(self.scale, latent) + self._view(self.shift, latent)

    @staticmethod
    def _view(values: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return values.to(latent.device, latent.dtype).view(-1, 1, 1)


def load_latent_stats(path: str | Path) -> LatentStats:
    """The standardisation of an export (its folder or its ``latent_stats.json``). A dead channel
    (standard deviation 0) keeps a scale of 1e-8: it stays at its one value."""
    path = Path(path)
    if path.is_dir():
        path = EmbeddingFiles(path).stats
    if not path.is_file():
        raise UnfinishedRunError(f"{path} does not exist: the export has not finished ({COMMAND})")
    stats = json.loads(path.read_text())
    figures = stats[stats["standardise_with"]]
    if figures is None:
        raise UnfinishedRunError(f"{path}: no statistics (the export had no non-empty layouts)")
    shift = torch.tensor(figures["channel_mean"], dtype=torch.float32)
    return LatentStats(shift, torch.tensor(figures["channel_std"], dtype=torch.float32).clamp_min(1e-8))


# ---- the export ---------------------------------------------------------------------------------------


@dataclass
class ExportSummary:
    files: EmbeddingFiles
    layouts: int  # exported (in layout_embeddings.csv)
    encoded: int  # layouts encoded by this call (the rest were there)
    skipped: list[str]  # broken layouts left out (skip_broken)
    stats: dict  # latent_stats.json's content
    seconds: float


def _check_record(files: EmbeddingFiles, record: dict, items: list[ExportItem]) -> None:
    """Write ``export.json`` the first time; a folder of another checkpoint's (or of an unknown
    writer's) latents is refused."""
    if files.record.is_file():
        old = json.loads(files.record.read_text())
        if old.get("checkpoint_sha256") != record["checkpoint_sha256"]:
            raise ResumeError(
                f"{files.folder} holds the latents of {old.get('run_dir')} (best.pt of epoch {old.get('epoch')}, "
                f"sha256 {str(old.get('checkpoint_sha256'))[:12]}), not of {record['run_dir']} (epoch "
                f"{record['epoch']}, sha256 {record['checkpoint_sha256'][:12]}); one folder never mixes two "
                f"models' latents: give another --out, or delete {files.folder} to export afresh"
            )
        return
    stray = next((item.mean for item in items if item.mean.is_file()), None)
    if stray is not None:
        raise ResumeError(
            f"{files.folder} already holds latents ({stray}) but no {files.record.name}: not written by this "
            "export, or by another model; give another --out, or delete them to export afresh"
        )
    write_text_atomic(files.record, json.dumps(record, indent=2) + "\n")


def _decode(item: ExportItem, resolution: int, manifest: Path) -> tuple[np.ndarray | None, str]:
    try:
        where = f"{manifest}, line {item.record.line}: {item.record.path}"
        rgb, _, _ = load_layout(item.record.path, resolution, where)
    except LayoutReadError as err:
        return None, str(err)
    return rgb, ""


def _save(path: Path, tensor: torch.Tensor) -> None:
    """``torch.load(path)`` gives the tensor. Saved to memory first: saved to a file, torch names the
    archive inside after the file, the temporary's random name, and equal tensors differ in bytes."""
    buffer = io.BytesIO()
    torch.save(tensor.clone(), buffer)  # clone: its own storage, not the whole batch's
    write_bytes_atomic(path, buffer.getvalue())


def _encode_pending(
    ae: TrainedAutoencoder,
    batches: list[list[ExportItem]],
    manifest: Path,
    skip_broken: bool,
    workers: int,
    log: Callable[[str], None],
) -> tuple[int, list[str]]:
    """Encode the batches and write their missing files; (layouts encoded, broken ones skipped)."""
    encoded, skipped, started = 0, [], time.perf_counter()
    every = max(1, len(batches) // 10)
    # Threads decode the next batch while this one is encoded.
    items, batch_size = itertools.chain(*batches), max(map(len, batches), default=1)
    decode = read_ahead(lambda item: _decode(item, ae.resolution, manifest), items, workers, batch_size)
    with contextlib.closing(decode):
        for number, batch in enumerate(batches, start=1):
            decoded = list(itertools.islice(decode, len(batch)))
            good = []
            for item, (rgb, error) in zip(batch, decoded):
                if error and not skip_broken:
                    raise LayoutReadError(f"{error}; pass --skip-broken to leave such layouts out (they are listed)")
                if error:
                    skipped.append(error)
                    log(f"skipped: {error}")
                else:
                    good.append((item, rgb))
            if not good:
                continue
            posterior = ae.encode(images_to_input(np.stack([rgb for _, rgb in good])).to(ae.device))
            means = posterior.mean.float().cpu()
            stds = posterior_std(posterior)
            stds = None if stds is None else stds.float().cpu()
            for k, (item, _) in enumerate(good):
                if item.std is not None and not item.std.is_file():
                    _save(item.std, stds[k])
                if not item.mean.is_file():
                    _save(item.mean, means[k])
            encoded += len(good)
            if number % every == 0 or number == len(batches):
                rate = encoded / max(time.perf_counter() - started, 1e-9)
                log(f"  batch {number}/{len(batches)}: {encoded} layouts encoded ({rate:.1f} layouts/s)")
    return encoded, skipped


def _finish(
    ae: TrainedAutoencoder, items: list[ExportItem], skipped: set[Path], files: EmbeddingFiles
) -> tuple[list[list[str]], dict]:
    """The CSV's rows and the statistics, from the written files in the manifest's order."""
    means, samples = ChannelMoments(ae.latent_shape[0]), ChannelMoments(ae.latent_shape[0])
    rows, non_empty = [], 0
    for item in items:
        if item.record.path in skipped:
            continue
        if not item.written():
            raise RuntimeError(f"{item.mean}: not written, and the layout was not skipped")  # a bug, not bad input
        if not item.record.is_empty:
            latent = torch.load(item.mean, map_location="cpu", weights_only=True)
            if tuple(latent.shape) != ae.latent_shape:
                raise ResumeError(f"{item.mean}: a latent of shape {tuple(latent.shape)}, not {ae.latent_shape}")
            means.add(latent)
            if item.std is not None:
                samples.add(latent, torch.load(item.std, map_location="cpu", weights_only=True))
            non_empty += 1
        record, folder = item.record, files.folder
        row = [record.scene_id, record.type, record.room_id, relative_path(record.path, folder)]
        row += [relative_path(item.mean, folder), str(record.is_empty).lower()]
        rows.append(row + ([relative_path(item.std, folder)] if item.std is not None else []))
    figures = {
        "latents": means.figures() if non_empty else None,
        "samples": samples.figures(samples=True) if non_empty and ae.variational else None,
    }
    return rows, {"non_empty": non_empty, **figures}


def _json_text(values: dict) -> str:
    """Indented JSON with each list of numbers on one line."""
    text = json.dumps(values, indent=2)
    numbers = re.compile(r"\[\s+([-+.\deE,\s]+?)\s+\]")
    return numbers.sub(lambda m: "[" + ", ".join(x.strip() for x in m[1].split(",")) + "]", text) + "\n"


def _export(
    ae: TrainedAutoencoder,
    manifest_path: Path,
    files: EmbeddingFiles,
    batch_size: int,
    skip_broken: bool,
    workers: int | None,
    log: Callable[[str], None],
) -> ExportSummary:
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size}: expected 1 or more layouts per batch")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers {workers}: expected 1 or more decoding threads")
    started = time.perf_counter()
    try:
        manifest = read_manifest(manifest_path, drop_empty=False, skip_broken=skip_broken)
    except ManifestError as err:  # the reader's advice is the training config's key
        raise ManifestError(str(err).replace("set data.skip_broken: true", "pass --skip-broken")) from None
    items = plan_items(manifest, files, ae.variational)
    files.folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(files.lock))
        except LockHeldError:
            raise RunInProgressError(
                f"another process is exporting into {files.folder}; wait for it, or give another --out"
            ) from None
        for folder in {files.folder, *(item.mean.parent for item in items)}:
            remove_leftovers(folder, EmbeddingFiles.OWN_FILES)
        record = {
            "format": FORMAT,
            "experiment": ae.name,
            "run_dir": str(ae.run_dir.resolve()),
            "checkpoint_sha256": file_sha256(ae.checkpoint),
            "epoch": ae.epoch,
            "variational": ae.variational,
            "resolution": ae.resolution,
            "latent_shape": list(ae.latent_shape),
        }
        _check_record(files, record, items)
        files.stats.unlink(missing_ok=True)  # written last: present only once this export has finished

        batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
        pending = [batch for batch in batches if not all(item.written() for item in batch)]
        empty = sum(item.record.is_empty for item in items)
        log(
            f"exporting {len(items)} layouts ({empty} empty) of {manifest_path} with {ae.name} (best.pt of epoch "
            f"{ae.epoch}, {'variational' if ae.variational else 'deterministic'}) at {ae.resolution} x "
            f"{ae.resolution} into {files.folder} on {ae.device}: {len(items) - sum(map(len, pending))} already "
            f"written, {len(pending)} batches of {batch_size} to encode"
        )
        workers = workers or min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        encoded, skipped = _encode_pending(ae, pending, manifest_path, skip_broken, workers, log)
        broken = {item.record.path for batch in pending for item in batch if not item.written()}
        rows, figures = _finish(ae, items, broken, files)
        stats = {
            "format": FORMAT,
            **{k: record[k] for k in ("experiment", "run_dir", "epoch", "checkpoint_sha256", "variational")},
            "resolution": ae.resolution,
            "latent_shape": list(ae.latent_shape),
            "manifest": str(manifest_path.resolve()),
            "layouts": len(rows),
            "non_empty": figures["non_empty"],
            "empty": len(rows) - figures["non_empty"],
            "skipped": skipped,
            "statistics_over": "the non-empty layouts: every element of a channel (layouts x height x width)",
            "latents": figures["latents"],
            "samples": figures["samples"],
            "standardise_with": "samples" if ae.variational else "latents",
        }
        write_text_atomic(files.manifest, csv_text([*COLUMNS, *([STD_COLUMN] if ae.variational else [])], rows))
        write_text_atomic(files.stats, _json_text(stats))
    seconds = time.perf_counter() - started
    log(
        f"exported {len(rows)} layouts ({encoded} encoded now, {len(skipped)} skipped as broken) in {seconds:.0f} s: "
        f"{files.manifest}, {files.stats}"
    )
    return ExportSummary(files, len(rows), encoded, skipped, stats, seconds)


def export_latents(
    run_dir: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    skip_broken: bool = False,
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> ExportSummary:
    """Export every distinct layout of ``manifest`` with the run ``run_dir``'s encoder into
    ``out_dir`` (the module's docstring says what, and how a killed export resumes).
    ``workers``: threads decoding PNGs (default: the CPUs this process may use, at most 8)."""
    ae = load_autoencoder(run_dir, device)
    return _export(ae, Path(manifest), EmbeddingFiles(out_dir), batch_size, skip_broken, workers, log)


# ---- the study's chosen run ------------------------------------------------------------------------


def chosen_run(output_root: str | Path, phase: str | None = None) -> tuple[Outputs, str]:
    """(the study's outputs, the experiment its ``decision.json`` chose). The phase folder: ``phase``,
    else the one folder directly under ``output_root`` holding a ``decision.json``."""
    root = Path(output_root)
    if not root.is_dir():
        raise ConfigError(f"--study {root}: no such output root")
    if phase is not None:
        if not is_folder_name(phase):
            raise ConfigError(f"--phase {phase!r}: a phase folder's name (letters, digits, '_', '-', '.')")
        phases = [phase] if Outputs(root, phase).decision.is_file() else []
    else:
        phases = sorted(p.name for p in root.iterdir() if p.is_dir() and Outputs(root, p.name).decision.is_file())
    if not phases:
        where = Outputs(root, phase).decision if phase else root / "*" / "decision.json"
        raise UnfinishedRunError(
            f"{where} does not exist: the study has not decided yet (the analysis writes it: bsub < hpc/analysis.sh); "
            "or export a run of your choice: --run RUN_DIR --manifest LAYOUTS_CSV --out DIR"
        )
    if len(phases) > 1:
        raise ConfigError(
            f"{root}: several phase folders hold a decision.json ({', '.join(phases)}); pick one with --phase"
        )
    out = Outputs(root, phases[0])
    decision = json.loads(out.decision.read_text())
    chosen = decision.get("chosen_experiment")
    if not chosen:
        raise UnfinishedRunError(
            f"{out.decision}: the decision chose no run ({decision.get('verdict')}: {decision.get('reason')}), so "
            "there is none to export; export a run of your choice: --run RUN_DIR --manifest LAYOUTS_CSV --out DIR"
        )
    if not is_folder_name(str(chosen)):
        raise ConfigError(f"{out.decision}: chosen_experiment {chosen!r} is not an experiment's folder name")
    return out, str(chosen)


def export_command(
    *,
    run: str | None,
    manifest: str | None,
    out: str | None,
    study: str | None,
    phase: str | None,
    device: str,
    batch_size: int,
    skip_broken: bool,
    workers: int | None,
) -> ExportSummary:
    """``python -m imginav_core export-latents``: its arguments checked, then the export. With
    ``--study``, of the run the study's decision chose, on the layouts it trained on, into
    ``OUTPUT_ROOT/<phase>/layout_embeddings/`` (or ``--out``), broken layouts skipped also where
    the run trained with ``data.skip_broken: true``."""
    if study is not None:
        if run is not None or manifest is not None:
            raise ConfigError(
                "--study takes the run and the manifest from the study's decision: give either --study OUTPUT_ROOT "
                "or --run RUN_DIR --manifest LAYOUTS_CSV --out DIR"
            )
        outputs, chosen = chosen_run(study, phase)
        ae = load_autoencoder(outputs.run_dir(chosen), device)
        files = EmbeddingFiles(out) if out is not None else outputs.layout_embeddings
        # the layouts the run trained on: its data.manifest, or the synthetic set under the output root as it is now
        moved = config_from_dict(ae.config.to_dict(), {"output_root": str(outputs.root)}, source=ae.config.source)
        skip_broken = skip_broken or ae.config.data.skip_broken
        return _export(ae, manifest_path(moved, print), files, batch_size, skip_broken, workers, print)
    if phase is not None:
        raise ConfigError("--phase picks the study's phase folder: give it with --study OUTPUT_ROOT")
    missing = [flag for flag, value in (("--run", run), ("--manifest", manifest), ("--out", out)) if value is None]
    if missing:
        raise ConfigError(
            f"missing {', '.join(missing)}: give --run RUN_DIR --manifest LAYOUTS_CSV --out DIR, "
            "or --study OUTPUT_ROOT for the run the study chose"
        )
    return export_latents(
        run, manifest, out, device=device, batch_size=batch_size, skip_broken=skip_broken, workers=workers
    )


def export_instructions(out: Outputs, chosen_experiment: str) -> str:
    """Lines for ``phase1_3_base.yaml``'s header (``write_decision`` makes them comments): how
    Phase 1.3 gets its data from the chosen run."""
    files = out.layout_embeddings
    return (
        f"Phase 1.3's data: every layout's latent under {chosen_experiment} (its best.pt), written by\n"
        f"  {COMMAND} --study OUTPUT_ROOT   (this study's output root)\n"
        "  (on the cluster: bsub < hpc/export_latents.sh, after the analysis)\n"
        f"into {out.shown(files.folder)}/:\n"
        f"  {files.manifest.name}: one row per layout, layout_path -> layout_emb_path (relative to it)\n"
        f"  <layout>{LAYOUT_EMBEDDING_SUFFIX}: the posterior mean, C x H x W float32 (a VAE: also the std)\n"
        f"  {files.stats.name}: per-channel statistics to standardise by (export.load_latent_stats)\n"
        "See book/using/phase1_3.md."
    )
