"""Experiment configuration: plain data read from YAML, with dotted-key overrides.

The dataclasses below are the schema (which keys exist and their types); the values live in
``configs/``. A YAML file may name the file(s) it builds on with ``inherit:`` (paths relative
to the file), so the Phase 1.1 architecture is written once and each experiment only states
what it varies. A key that nothing reads is an error, never a silent default.

**Versions.** A config says which schema it was written for (``version:``; none is version 1,
what the code before versions wrote into every run's ``config.yaml``). A key added since then
(``ADDED_KEYS``) that an older config lacks takes its documented default, and the loaded config
records it (``Config.defaulted``, ``defaults_note``), so a finished run of older code stays
readable and the analysis can say what was assumed. A current config lacking a key is an error.

**Paths.** A relative path in a config file (``output_root``, ``data.manifest``,
``data.cache_dir``) is relative to the folder of the file that states it, as ``inherit:`` is, so a
study copied elsewhere with its configs still reads; one given in code or on a command line is
relative to the current directory. A loaded ``Config`` holds absolute paths. ``write_config``
writes the paths under the config's own ``output_root`` relative to the written file.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .files import write_text_atomic
from .outputs import Outputs

# The checkout the package runs from: configs/, notebooks/, book/ and the default outputs/ lie here.
REPO_ROOT = Path(__file__).resolve().parents[1]
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")

# The schema's version, written into every config the code writes. Version 2 added the keys of
# ADDED_KEYS and made a relative path in a config file relative to that file's folder (version 1
# read it relative to the current directory, and still does for a version-1 file).
CONFIG_VERSION = 2


@dataclass(frozen=True)
class AddedKey:
    version: int  # the schema version that added the key
    default: Any  # what a config of an older version lacking the key means by it
    meaning: str  # one line: why that default is what the older code did


# Every key added since version 1, by dotted key. One row per new key; CONFIG_VERSION moves with the newest.
ADDED_KEYS: dict[str, AddedKey] = {
    "training.early_stopping.monitor": AddedKey(
        2,
        "total",
        "older code picked the best checkpoint and stopped early on val_total: every weighted term, the KL included",
    ),
}
# The keys holding paths: a relative one is relative to the folder of the config file that states it.
PATH_KEYS = ("output_root", "data.manifest", "data.cache_dir")


def is_folder_name(name: str) -> bool:
    """Whether an experiment or phase name can name a folder under output_root and no other place."""
    return bool(NAME_PATTERN.match(name)) and name not in (".", "..")


@dataclass
class ModelConfig:
    latent_channels: int
    base_channels: int
    downsampling_steps: int
    norm_groups: int
    activation: str
    variational: bool


@dataclass
class DataConfig:
    manifest: str  # "" = the synthetic layouts generated under OUTPUT_ROOT/synthetic
    resolution: int
    synthetic_samples: int
    synthetic_seed: int
    val_fraction: float  # of the layouts, for per-epoch validation (best checkpoint, early stopping)
    test_fraction: float  # of the layouts, held out from training and validation, for the measures
    split_seed: int
    drop_empty: bool
    cache_dir: str  # "" = OUTPUT_ROOT/cache
    num_workers: int
    skip_broken: bool  # skip unreadable rows (with a summary) instead of stopping


@dataclass
class EarlyStoppingConfig:
    patience: int
    min_delta: float
    # The validation loss that picks best.pt and stops early: "reconstruction" (the weighted terms that
    # count as reconstruction, losses.TERMS; not the KL, so V1 and V2 are picked on the same quantity)
    # or "total" (every weighted term). Logged as the metrics column val_<monitor>.
    monitor: str


@dataclass
class TrainingConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    device: str  # auto | cpu | cuda | cuda:N
    amp: str  # auto (bf16 where native, fp16 on older GPUs, else off) | bf16 | fp16 | off
    channels_last: str  # auto (on CUDA; on the CPU only without amp) | on | off
    compile: str  # auto (on for CUDA when it works) | on | off
    sample_interval: int
    early_stopping: EarlyStoppingConfig


class LossWeights(dict):
    """The weight of each loss term, by the term's name: ``cfg.loss.kld`` or ``cfg.loss["kld"]``.
    Its keys are the names of ``losses.TERMS`` (``loss_term_names``), no more and no fewer."""

    def __getattr__(self, name: str) -> float:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no loss term {name!r} (the terms: {', '.join(self) or 'none'})") from None


# ---- the loss terms' names ------------------------------------------------------------------------
# losses.TERMS, one function and one weight key per term, is the one list of loss terms. The config is
# a foundation below the losses and reads without torch, so it cannot import them: losses.py hands it a
# view of its list when the package is imported (imginav_core/__init__.py). The view is read at each use,
# so a term added to the list later (a perceptual loss, a test's toy term) is a config key at once.
_loss_terms: Callable[[], Sequence[str]] | None = None


def use_loss_terms(names: Callable[[], Sequence[str]]) -> None:
    """Called by ``losses`` on import: ``names()`` gives the loss terms' names, the ``loss`` keys."""
    global _loss_terms
    _loss_terms = names


def loss_term_names() -> list[str]:
    if _loss_terms is None:  # only if this module was loaded without its package
        raise RuntimeError("no loss terms registered: import imginav_core, whose __init__ imports imginav_core.losses")
    return list(_loss_terms())


@dataclass
class Config:
    name: str
    phase: str
    output_root: str
    model: ModelConfig
    data: DataConfig
    training: TrainingConfig
    loss: LossWeights
    source: str = field(default="", compare=False)  # the YAML file it came from, for messages
    # What the file said apart from its settings: the schema version it was written for, and each key
    # an older version lacked, taken as its documented default (ADDED_KEYS), with the value taken.
    written_version: int = field(default=CONFIG_VERSION, compare=False)
    defaulted: dict[str, Any] = field(default_factory=dict, compare=False)

    # ---- paths -------------------------------------------------------------------------
    @property
    def outputs(self) -> Outputs:
        """Where this run's and its phase's files go (``outputs.Outputs``)."""
        return Outputs(Path(self.output_root), self.phase)

    @property
    def cache_root(self) -> Path:
        return Path(self.data.cache_dir) if self.data.cache_dir else self.outputs.cache_root

    # ---- plain data --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every setting, nested, with the schema version first (what a checkpoint stores)."""
        data: dict[str, Any] = {"version": CONFIG_VERSION}
        for name in _fields(Config):
            value = getattr(self, name)
            data[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        data["loss"] = dict(self.loss)  # plain, as YAML and torch.load(weights_only=True) take it
        return data

    def get(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node


ENUMS = {
    "training.device": re.compile(r"^(auto|cpu|cuda(:\d+)?)$"),
    "training.amp": re.compile(r"^(auto|bf16|fp16|off)$"),
    "training.channels_last": re.compile(r"^(auto|on|off)$"),
    "training.compile": re.compile(r"^(auto|on|off)$"),
    "model.activation": re.compile(r"^silu$"),
    "training.early_stopping.monitor": re.compile(r"^(reconstruction|total)$"),
}
# YAML 1.1 reads on/off as booleans, so `compile: off` or `--set training.compile=off` arrive as
# False; these keys take them back as the words.
SWITCHES = {"training.amp", "training.channels_last", "training.compile"}


NOT_SETTINGS = ("source", "written_version", "defaulted")  # fields of Config that no file states


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in NOT_SETTINGS}


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested settings dict (``Config.to_dict()``, a checkpoint's config) as dotted keys."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def schema_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows, e.g. ``training.early_stopping.patience``."""
    keys = []
    for name, kind in _fields(cls).items():
        if dataclasses.is_dataclass(kind):
            keys += schema_keys(kind, f"{prefix}{name}.")
        elif kind is LossWeights:
            keys += [f"{prefix}{name}.{term}" for term in loss_term_names()]
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, schema_keys(), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build(cls: type, values: Any, prefix: str, source: str) -> Any:
    """A section of the schema from ``values``; the loss weights (``LossWeights``) are a section of
    one number per registered loss term."""
    loss = cls is LossWeights
    kinds = {term: float for term in loss_term_names()} if loss else _fields(cls)
    if not isinstance(values, Mapping):
        what = "a mapping of loss term weights" if loss else "a mapping"
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be {what}, got {values!r}")
    for key in values:
        if key not in kinds:
            terms = f" (the loss terms, imginav_core.losses.TERMS: {', '.join(kinds)})" if loss else ""
            raise ConfigError(f"{source}: unknown config key '{prefix}{key}'{_suggest(prefix + key)}{terms}")
    for name in kinds:
        if name not in values:
            why = (
                f"the weight of loss term '{name}'"
                if loss
                else "experiment files inherit it, e.g. from configs/phase1_2/common.yaml"
            )
            raise ConfigError(f"{source}: missing config key '{prefix}{name}' ({why})")
    return cls(**{name: _check(values[name], kind, prefix + name, source) for name, kind in kinds.items()})


def _check(value: Any, kind: Any, dotted: str, source: str) -> Any:
    if dataclasses.is_dataclass(kind) or kind is LossWeights:
        return _build(kind, value, dotted + ".", source)
    if dotted in SWITCHES and isinstance(value, bool):
        value = "on" if value else "off"
    ok = (
        (kind is bool and isinstance(value, bool))
        or (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (kind is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{source}: '{dotted}' must be {kind.__name__}, got {value!r} ({type(value).__name__})")
    value = float(value) if kind is float else value
    if dotted in ENUMS and not ENUMS[dotted].match(value):
        raise ConfigError(f"{source}: '{dotted}' = {value!r} is not one of {ENUMS[dotted].pattern}")
    return value


def _validate(cfg: Config) -> None:
    src = cfg.source or "<config>"

    def fail(key: str, why: str) -> None:
        raise ConfigError(f"{src}: '{key}' = {cfg.get(key)!r}: {why}")

    if not NAME_PATTERN.match(cfg.name):
        fail("name", "use only letters, digits, '_', '-' and '.' (it names folders under output_root)")
    if not is_folder_name(cfg.name) or not is_folder_name(cfg.phase):
        fail("name" if cfg.name in (".", "..") else "phase", "not a usable folder name")
    for term in cfg.loss:
        if cfg.loss[term] < 0:
            fail(f"loss.{term}", "loss weights must be >= 0")
    # One place decides deterministic or variational: a KL weight without a posterior to
    # regularise would be logged as if it did something.
    if cfg.loss.get("kld", 0.0) > 0 and not cfg.model.variational:
        fail(
            "loss.kld",
            "a KL weight needs a variational encoder (model.variational: true); "
            "the deterministic encoder has no posterior to regularise, so set loss.kld: 0",
        )
    factor = 2**cfg.model.downsampling_steps
    if cfg.data.resolution <= 0 or cfg.data.resolution % factor:
        fail("data.resolution", f"must be a positive multiple of 2**model.downsampling_steps = {factor}")
    for key in (
        "model.latent_channels",
        "model.base_channels",
        "model.downsampling_steps",
        "model.norm_groups",
        "training.epochs",
        "training.batch_size",
        "training.sample_interval",
        "data.synthetic_samples",
    ):
        if cfg.get(key) <= 0:
            fail(key, "must be > 0")
    if cfg.model.base_channels % cfg.model.norm_groups:
        fail("model.base_channels", f"must be divisible by model.norm_groups = {cfg.model.norm_groups}")
    for key in (
        "training.lr",
        "training.weight_decay",
        "training.early_stopping.min_delta",
        "training.early_stopping.patience",
        "data.num_workers",
    ):
        if cfg.get(key) < 0:
            fail(key, "must be >= 0")
    for key in ("data.val_fraction", "data.test_fraction"):
        if not 0.0 < cfg.get(key) < 1.0:
            fail(key, "must be strictly between 0 and 1")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1.0:
        fail(
            "data.test_fraction",
            f"data.val_fraction + data.test_fraction must be below 1 (val_fraction is {cfg.data.val_fraction}), "
            "or nothing is left to train on",
        )


class _Loader(yaml.SafeLoader):
    """The safe loader, reading ``1e-3`` as a number. YAML 1.1 (PyYAML) wants a dot in a float
    (``1.0e-3``) and reads ``1e-3`` as a string, which is exactly what people type for a learning
    rate or a KL weight; YAML 1.2 reads it as a float, and so do we."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, where: str) -> Any:
    """Plain data from YAML text, read with the safe loader: a tag such as ``!!python/object``,
    which would build arbitrary Python objects (run code), is refused with a ConfigError."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.constructor.ConstructorError as err:
        line = f" (line {err.problem_mark.line + 1})" if err.problem_mark else ""
        raise ConfigError(
            f"{where}: refused{line}: {err.problem}; config values are plain data (numbers, strings, lists, mappings)"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``) as dotted config overrides, each value read as YAML
    (``training.lr=3e-4`` is the float, an empty value the empty string). The keys are checked
    when the overrides are applied (``load_config``: an unknown key is refused, named)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. training.epochs=2")
        overrides[key.strip()] = parse_yaml(value, f"--set {pair!r}") if value.strip() else ""
    return overrides


def _read_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """(the file's folder, its own values) of a config file and of each file it inherits,
    parents first: the order they merge in."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'inherit' loops back to itself")
    if not path.is_file():
        where = f" (inherited by {seen[-1]})" if seen else ""
        raise ConfigError(f"config file not found: {path}{where}")
    values = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    parents = values.pop("inherit", [])
    parents = [parents] if isinstance(parents, str) else parents
    layers = []
    for parent in parents:
        layers += _read_layers(path.parent / parent, seen + (path,))
    return layers + [(path.parent, values)]


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _lookup(values: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key of nested data, or None where it (or a section above it) is missing."""
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _assign(values: dict[str, Any], dotted: str, value: Any) -> None:
    node = values
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _absolute_paths(values: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """``values`` with each relative path of PATH_KEYS made absolute against ``folder`` (the empty
    string keeps its meaning: the default place; a value that is no text is left to the type check)."""
    for key in PATH_KEYS:
        if _lookup(values, key) is not None:
            _assign(values, key, _absolute(_lookup(values, key), folder))
    return values


def _absolute(value: Any, folder: str | Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    return os.path.normpath(os.path.join(folder, os.path.expanduser(value)))


def _version(values: Mapping[str, Any], source: str) -> int:
    version = values.get("version", 1)  # none: written before configs carried one
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(
            f"{source}: 'version' must be a whole number >= 1 (the config schema's version; "
            f"this code writes {CONFIG_VERSION}), got {version!r}"
        )
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{source}: config version {version} is newer than this code reads (version {CONFIG_VERSION}); "
            "it was written by a newer imginav_core: update this checkout to read it"
        )
    return version


def config_from_dict(
    values: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    source: str = "<dict>",
    folder: str | Path | None = None,
) -> Config:
    """Build and validate a Config from plain (possibly nested) data, e.g. a checkpoint's.

    Relative paths in ``values`` are relative to ``folder`` (the folder of the file they come from;
    None: the current directory), those in ``overrides`` to the current directory. A config of an
    older version takes the documented default of each key added since that it lacks (``ADDED_KEYS``).
    """
    values = copy.deepcopy(dict(values))
    version = _version(values, source)
    values.pop("version", None)
    # Version 1 read a relative path against the current directory; its files keep that meaning.
    _absolute_paths(values, os.getcwd() if folder is None or version < 2 else folder)
    known = set(schema_keys())
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"{source}: unknown override key '{key}'{_suggest(key)}")
        _assign(values, key, _absolute(value, os.getcwd()) if key in PATH_KEYS else value)
    defaulted = {}
    for key, added in ADDED_KEYS.items():
        parent = _lookup(values, key.rpartition(".")[0]) if "." in key else values
        if added.version > version and isinstance(parent, Mapping) and key.rpartition(".")[2] not in parent:
            _assign(values, key, copy.deepcopy(added.default))
            defaulted[key] = added.default
    cfg = _build(Config, values, "", source)
    cfg.source, cfg.written_version, cfg.defaulted = source, version, defaulted
    _validate(cfg)
    return cfg


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read an experiment YAML (following ``inherit:``), apply dotted overrides, validate.

    >>> cfg = load_config("configs/phase1_2/V2_vae_light.yaml", {"training.epochs": 1})
    """
    layers = _read_layers(Path(path))
    merged: dict[str, Any] = {}
    for _, values in layers:
        merged = _merge(merged, values)
    version = _version(merged, str(path))
    merged = {}
    for folder, values in layers:  # each file's relative paths against its own folder, as its inherit:
        merged = _merge(merged, _absolute_paths(values, folder if version >= 2 else os.getcwd()))
    return config_from_dict(merged, overrides, source=str(path))


def write_config(cfg: Config, path: str | Path, header: str = "") -> None:
    """Write ``cfg`` as YAML, whole or not at all: every setting and the schema version; a path
    under the config's own ``output_root`` relative to the written file's folder when that folder
    lies under it too (a run folder's ``config.yaml`` says ``output_root: ../..``), so the tree reads
    wherever it is copied; any other path absolute. ``header``: comment lines to put first."""
    path = Path(os.path.abspath(path))
    values = cfg.to_dict()
    root = Path(os.path.abspath(cfg.output_root))
    for key in PATH_KEYS:
        value = _lookup(values, key)
        if value:
            absolute = Path(os.path.abspath(value))
            inside = absolute.is_relative_to(root) and path.parent.is_relative_to(root)
            _assign(values, key, os.path.relpath(absolute, path.parent) if inside else str(absolute))
    note = f"# imginav_core config, schema version {CONFIG_VERSION}; a relative path is relative to this folder\n"
    write_text_atomic(path, header + note + yaml.safe_dump(values, sort_keys=False))


def defaults_note(cfg: Config, run: str = "") -> str:
    """What an older config left to its documented defaults, as a sentence for a report ("" if nothing):
    ``run X was written by older code (config version 1): training.early_stopping.monitor taken as
    its documented default 'total' (older code picked ...)``."""
    if not cfg.defaulted:
        return ""
    taken = "; ".join(
        f"{key} taken as its documented default {value!r} ({ADDED_KEYS[key].meaning})"
        for key, value in cfg.defaulted.items()
    )
    who = f"run {run}" if run else cfg.source
    return f"{who} was written by older code (config version {cfg.written_version}): {taken}"
