"""The notebooks' parameters, checked before anything is written, and the command line the LSF
job scripts use around papermill.

Paths given as parameters are relative to the repository root, whatever directory the notebook
runs in (papermill from the root, Jupyter from ``notebooks/``).

    python -m imginav_core.workflow check-train -p config configs/phase1_2/V2_vae_light.yaml -p epochs 1
    python -m imginav_core.workflow train -p config ...        # the same, trained (torchrun-able)
    python -m imginav_core.workflow check-analysis -p output_root outputs

The ``-p name value`` pairs are exactly those given to papermill, with papermill's typing
(``None``, ``True``/``False``, integers, floats, else strings).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Config, ConfigError, flatten, is_folder_name, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {
    "experiment_v1": REPO_ROOT / "configs/phase1_2/V1_deterministic.yaml",
    "experiment_v2": REPO_ROOT / "configs/phase1_2/V2_vae_light.yaml",
}

# papermill parameter of train.ipynb -> the config key it overrides (None: keep the config's value)
TRAIN_PARAMETERS = {
    "manifest": "data.manifest",
    "output_root": "output_root",
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "resolution": "data.resolution",
    "synthetic_samples": "data.synthetic_samples",
    "device": "training.device",
    "num_workers": "data.num_workers",
    "seed": "training.seed",
}
ANALYSIS_PARAMETERS = ("output_root", "experiment_v1", "experiment_v2", "max_images", "allow_unfinished",
                       "device", "seed")


def study_phase() -> str:
    """The name of the Phase 1.2 folder under an output root (the experiments' ``phase``)."""
    return load_config(EXPERIMENTS["experiment_v1"]).phase


def repo_path(path: str | Path) -> Path:
    """A parameter path: absolute as given, relative to the repository root otherwise."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _expect(name: str, value: Any, kinds: tuple[type, ...], optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        wanted = " or ".join(k.__name__ for k in kinds) + (" or None" if optional else "")
        raise ConfigError(f"notebook parameter '{name}' = {value!r}: expected {wanted}")


def training_config(config: str, manifest: str | None = "", output_root: str = "outputs", epochs: int | None = None,
                    batch_size: int | None = None, resolution: int | None = None,
                    synthetic_samples: int | None = None, device: str = "auto", num_workers: int | None = None,
                    seed: int | None = None) -> Config:
    """The configuration train.ipynb trains with: the experiment YAML plus the parameters that are
    not None. ``manifest`` "" = the synthetic layouts. Raises ConfigError naming the parameter."""
    values = dict(manifest=manifest, output_root=output_root, epochs=epochs, batch_size=batch_size,
                  resolution=resolution, synthetic_samples=synthetic_samples, device=device,
                  num_workers=num_workers, seed=seed)
    _expect("config", config, (str, Path), optional=False)
    for name in ("manifest", "output_root", "device"):
        _expect(name, values[name], (str, Path), optional=name == "manifest")
    for name in ("epochs", "batch_size", "resolution", "synthetic_samples", "num_workers", "seed"):
        _expect(name, values[name], (int,), optional=True)
    if values["manifest"]:
        values["manifest"] = str(repo_path(values["manifest"]))
    values["output_root"] = str(repo_path(values["output_root"]))
    overrides = {TRAIN_PARAMETERS[k]: v for k, v in values.items() if v is not None}
    return load_config(repo_path(config), overrides)


def analysis_parameters(output_root: str = "outputs", experiment_v1: str | None = None,
                        experiment_v2: str | None = None, max_images: int = 512, allow_unfinished: bool = False,
                        device: str = "auto", seed: int = 0) -> dict[str, Any]:
    """analysis.ipynb's parameters, checked; experiment names default to those of the V1/V2 configs."""
    _expect("output_root", output_root, (str, Path), optional=False)
    _expect("max_images", max_images, (int,), optional=False)
    _expect("allow_unfinished", allow_unfinished, (bool,), optional=False)
    _expect("device", device, (str,), optional=False)
    _expect("seed", seed, (int,), optional=False)
    names = {}
    for key, value in (("experiment_v1", experiment_v1), ("experiment_v2", experiment_v2)):
        _expect(key, value, (str,), optional=True)
        names[key] = value if value is not None else load_config(EXPERIMENTS[key]).name
        if not is_folder_name(names[key]):
            raise ConfigError(f"notebook parameter '{key}' = {names[key]!r}: use only letters, digits, '_', '-', '.'")
    if max_images < 2:
        raise ConfigError(f"notebook parameter 'max_images' = {max_images}: need at least 2 layouts")
    return {"output_root": repo_path(output_root), **names, "max_images": max_images,
            "allow_unfinished": allow_unfinished, "device": device, "seed": seed}


def config_table(cfg: Config) -> pd.DataFrame:
    """Every setting of a run, one dotted key per row."""
    table = pd.DataFrame({"value": {k: str(v) for k, v in flatten(cfg.to_dict()).items()}})
    table.index.name = "setting"
    return table


# ---- command line -------------------------------------------------------------------------

def papermill_value(text: str) -> Any:
    """How papermill types a ``-p`` value."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parameters(pairs: list[list[str]], allowed: tuple[str, ...] | list[str]) -> dict[str, Any]:
    params = {}
    for name, value in pairs:
        if name not in allowed:
            raise ConfigError(f"unknown notebook parameter '{name}'; expected one of {', '.join(allowed)}")
        params[name] = papermill_value(value)
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imginav_core.workflow")
    parser.add_argument("command", choices=("check-train", "train", "check-analysis"))
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)
    stops: tuple[type[Exception], ...] = (ConfigError,)  # the checks raise only these
    if args.command == "train":  # imported here: the checks need no torch
        from .train import STOPS, train

        stops = STOPS
    try:
        if args.command == "check-analysis":
            params = analysis_parameters(**_parameters(args.parameter, ANALYSIS_PARAMETERS))
            print(f"PHASE_DIR={shlex.quote(str(params['output_root'] / study_phase()))}")
            return 0
        params = _parameters(args.parameter, ["config", *TRAIN_PARAMETERS])
        if "config" not in params:
            raise ConfigError("notebook parameter 'config' is required (the experiment YAML)")
        cfg = training_config(**params)
        if args.command == "train":
            train(cfg)
            return 0
        for key, value in (("NAME", cfg.name), ("RUN_DIR", cfg.run_dir), ("PHASE_DIR", cfg.phase_dir)):
            print(f"{key}={shlex.quote(str(value))}")
        return 0
    except stops as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
