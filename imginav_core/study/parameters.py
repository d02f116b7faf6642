"""The study's experiments and the notebooks' parameters: the one list from which the papermill
calls, the ``IMGINAV_*`` variables of the LSF jobs and the README's settings table follow.

Every config key has one name, its dotted key (``training.lr``), and three ways in: ``--set
training.lr=3e-4`` on the command line, train.ipynb's ``overrides`` parameter (``-p overrides
'{training.lr: 3e-4}'``, or a list of ``KEY=VALUE`` strings) and, for the LSF jobs, the variable the
key names mechanically (``IMGINAV_SET_TRAINING__LR=3e-4``: ``IMGINAV_SET_``, then the key in capitals
with each ``.`` as ``__``; ``set_variable`` and ``variable_key``). The named parameters below
(``-p lr``, ``IMGINAV_LR``) are the everyday ones the settings table lists, kept as they were;
``overrides`` is applied after them. Paths given as parameters are relative to the repository root,
whatever folder the notebook runs in (papermill from the root, Jupyter from ``notebooks/``). ``-p``
values are typed as papermill types them (``papermill_value``: ``None``, ``True``/``False``,
integers, floats such as ``1e-3``, else strings).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import REPO_ROOT, Config, is_folder_name, load_config, override_values, schema_keys
from ..errors import ConfigError
from ..outputs import Outputs
from .plan import (
    PLAN_FILE,
    STUDY_FILE_VARIABLE,
    PlannedRun,
    StudyPlan,
    arm_names,
    check_seeds,
    make_study_plan,
    read_plan_file,
    study_arms,
    study_plan,
    study_plan_at,
)
from .probe.settings import DEFAULTS as PROBE_DEFAULTS
from .probe.settings import ProbeSettings

OUTPUTS_VARIABLE = "IMGINAV_OUTPUTS"
# The experiments of Phase 1.2's arms (configs/phase1_2/study.yaml's), by the label the figures and
# the decision use: what the benchmarks time and measure.
EXPERIMENTS = read_plan_file(PLAN_FILE).configs
KINDS = {
    "str": (str,),
    "path": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "overrides": (str, list, tuple, dict),  # config.override_values reads them
}
# A config key's job variable: this prefix, then the key in capitals, each "." as "__".
SET_PREFIX = "IMGINAV_SET_"


@dataclass(frozen=True)
class Parameter:
    name: str  # papermill -p NAME; the variable of the notebook's parameters cell
    kind: str  # str | path (relative to the repository root) | int | float | bool | overrides
    default: Any
    meaning: str
    key: str = ""  # the config key it overrides ("" = not a config setting)
    env: str = ""  # the IMGINAV_* variable the LSF jobs take it from ("" = none)
    optional: bool = False  # None allowed: keep the config's value
    shown_default: str = ""  # the settings table's default, where the value alone would not say it

    def check(self, value: Any, where: str = "") -> Any:
        """The value, or a ConfigError naming the parameter (and ``where`` it came from)."""
        if value is None and self.optional:
            return None
        kinds = KINDS[self.kind]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            wanted = (
                "a mapping of config keys or a list of 'key=value' strings" if self.kind == "overrides" else self.kind
            )
            wanted += " or None" if self.optional else ""
            source = f"{where}: " if where else ""
            raise ConfigError(f"{source}notebook parameter '{self.name}' = {value!r}: expected {wanted}")
        return float(value) if self.kind == "float" else value


@dataclass(frozen=True)
class Notebook:
    path: str  # relative to the repository root
    parameters: tuple[Parameter, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def __getitem__(self, name: str) -> Parameter:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise ConfigError(
            f"unknown notebook parameter '{name}' of {self.path}; expected one of {', '.join(self.names)}"
        )

    def values(self, namespace: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters as a notebook's namespace holds them (``TRAIN.values(globals())``)."""
        return {name: namespace[name] for name in self.names if name in namespace}

    def from_strings(self, given: Mapping[str, str], where: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Parameters given as text (``-p`` pairs, environment variables), typed as papermill types
        them and checked; ``where`` names each one's source for the error."""
        typed = {}
        for name, text in given.items():
            parameter = self[name]
            value = parse_bool(text) if parameter.kind == "bool" else papermill_value(text)
            typed[name] = parameter.check(value, (where or {}).get(name, ""))
        return typed

    def from_environment(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The parameters the LSF job takes from its ``IMGINAV_*`` variables. A variable set but
        empty means the parameter's default (IMGINAV_OUTPUTS= is the default output root), so it
        is passed on only where that default is itself empty (the manifest: the synthetic layouts)."""
        environ = os.environ if environ is None else environ
        given = {
            p.name: environ[p.env]
            for p in self.parameters
            if p.env and p.env in environ and (environ[p.env] != "" or p.default == "")
        }
        if "overrides" in self.names:
            pairs = environment_overrides(environ)
            for p in self.parameters:
                if p.key and p.name in given and set_variable(p.key) in pairs:
                    raise ConfigError(f"{p.env} and {set_variable(p.key)} both set '{p.key}': give it once, by either")
            if pairs:  # as -p text: a YAML (JSON) list of KEY=VALUE strings, read back as --set reads them
                given["overrides"] = json.dumps([f"{variable_key(v)}={text}" for v, text in pairs.items()])
        return given


def default_output_root(environ: Mapping[str, str] | None = None) -> str:
    """What an ``output_root`` of None stands for in the notebooks: ``$IMGINAV_OUTPUTS`` where it is
    set and not empty (``make lab`` sets it to the demo's, so the notebooks open on its outputs),
    else ``outputs``."""
    environ = os.environ if environ is None else environ
    return environ.get(OUTPUTS_VARIABLE) or "outputs"


def repo_path(path: str | Path) -> Path:
    """A parameter path: absolute as given, relative to the repository root otherwise."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def set_variable(key: str) -> str:
    """The job variable of a dotted config key: ``training.lr`` -> ``IMGINAV_SET_TRAINING__LR``."""
    return SET_PREFIX + key.upper().replace(".", "__")


def variable_key(variable: str) -> str:
    """The dotted config key of an ``IMGINAV_SET_*`` variable (``set_variable`` read back), or a
    ConfigError naming the variable when it names no key."""
    key = variable.removeprefix(SET_PREFIX).lower().replace("__", ".")
    if not variable.startswith(SET_PREFIX) or key not in schema_keys():
        close = difflib.get_close_matches(key, schema_keys(), n=1, cutoff=0.5)
        hint = f" (did you mean {set_variable(close[0])}, for '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"{variable}: names no config key ({SET_PREFIX}<KEY> sets KEY, in capitals, each '.' as '__'){hint}"
        )
    return key


def environment_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``IMGINAV_SET_*`` variables set and not empty, each checked to name a config key (in
    the environment's order); their values are text, read as YAML like ``--set``'s."""
    environ = os.environ if environ is None else environ
    pairs = {v: text for v, text in environ.items() if v.startswith(SET_PREFIX) and text != ""}
    for variable in pairs:
        variable_key(variable)
    return pairs


def papermill_value(text: str) -> Any:
    """How papermill types a ``-p`` value (``papermill.cli._resolve_type`` in papermill 2.x:
    ``True``/``False``/``None``, else ``int``, else ``float``, else the text), so that ``check``
    types and validates a job's ``-p`` parameters exactly as the notebook will receive them.

    Why a copy rather than papermill's own: the only typing papermill has for text is that private
    function of its command line (``papermill.parameterize_notebook`` takes values already typed; the
    jobs pass every parameter with ``-p``, never ``-r``, which keeps text, or ``-y``, which reads
    YAML and would turn ``1e-3`` into the string '1e-3'); and importing ``papermill.cli`` costs
    about 1.5 s (nbclient, nbformat, click...), ten times a whole ``check``, which every job and the
    launcher on a login node run first. tests/test_command_line.py checks that this copy and
    papermill's agree on tricky cases, so a papermill that types differently fails the tests."""
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


def parse_bool(text: str) -> Any:
    """A switch from the environment: true/false, 1/0 (any case) as papermill's True/False."""
    lowered = text.strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(lowered, papermill_value(text))


# ---- the notebooks ------------------------------------------------------------------------------

# The settings table's default of output_root: its None means IMGINAV_OUTPUTS, else this.
OUTPUT_ROOT_SHOWN = "`'outputs'`"

TRAIN = Notebook(
    "notebooks/train.ipynb",
    (
        Parameter("config", "path", "configs/phase1_2/V1_deterministic.yaml", "the experiment YAML"),
        Parameter(
            "manifest",
            "path",
            "",
            '`layouts.csv` of the real data (`""`: the embedded synthetic layouts)',
            key="data.manifest",
            env="IMGINAV_DATA",
        ),
        Parameter(
            "output_root",
            "path",
            None,
            "output root",
            key="output_root",
            env=OUTPUTS_VARIABLE,
            optional=True,
            shown_default=OUTPUT_ROOT_SHOWN,
        ),
        Parameter(
            "name",
            "str",
            None,
            "experiment name (folder and file names of the run)",
            key="name",
            env="IMGINAV_NAME",
            optional=True,
        ),
        Parameter("epochs", "int", None, "epochs", key="training.epochs", env="IMGINAV_EPOCHS", optional=True),
        Parameter(
            "batch_size", "int", None, "batch size", key="training.batch_size", env="IMGINAV_BATCH_SIZE", optional=True
        ),
        Parameter("lr", "float", None, "AdamW learning rate", key="training.lr", env="IMGINAV_LR", optional=True),
        Parameter(
            "kld",
            "float",
            None,
            "KL weight (> 0 only for a variational encoder)",
            key="loss.kld",
            env="IMGINAV_KLD",
            optional=True,
        ),
        Parameter(
            "resolution",
            "int",
            None,
            "image side in pixels",
            key="data.resolution",
            env="IMGINAV_RESOLUTION",
            optional=True,
        ),
        Parameter(
            "synthetic_samples",
            "int",
            None,
            "synthetic layouts generated (when there is no manifest)",
            key="data.synthetic_samples",
            env="IMGINAV_SYNTHETIC_SAMPLES",
            optional=True,
        ),
        Parameter(
            "device",
            "str",
            "auto",
            "`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`",
            key="training.device",
            env="IMGINAV_DEVICE",
        ),
        Parameter(
            "num_workers",
            "int",
            None,
            "threads gathering batches",
            key="data.num_workers",
            env="IMGINAV_NUM_WORKERS",
            optional=True,
        ),
        Parameter(
            "seed",
            "int",
            None,
            "training seed (weights, shuffling, VAE noise)",
            key="training.seed",
            env="IMGINAV_SEED",
            optional=True,
        ),
        Parameter(
            "overrides",
            "overrides",
            None,
            "any config keys, set last as `--set` sets them: `{training.lr: 3e-4}` or `['training.lr=3e-4']`; "
            "a job: one variable per key, `IMGINAV_SET_TRAINING__LR=3e-4`",
            env=SET_PREFIX + "<KEY>",
            optional=True,
            shown_default="none",
        ),
    ),
)

# The analysis's and the probe's output root: the study they read (None: IMGINAV_OUTPUTS, else outputs).
STUDY_OUTPUT_ROOT = Parameter(
    "output_root", "path", None, "output root", env=OUTPUTS_VARIABLE, optional=True, shown_default=OUTPUT_ROOT_SHOWN
)

ANALYSIS = Notebook(
    "notebooks/analysis.ipynb",
    (
        STUDY_OUTPUT_ROOT,
        Parameter(
            "experiment_v1",
            "str",
            None,
            "V1's runs, comma-separated",
            env="IMGINAV_EXPERIMENT_V1",
            optional=True,
            shown_default="the plan's",
        ),
        Parameter(
            "experiment_v2",
            "str",
            None,
            "V2's runs, comma-separated",
            env="IMGINAV_EXPERIMENT_V2",
            optional=True,
            shown_default="the plan's",
        ),
        Parameter(
            "max_images",
            "int",
            512,
            "test layouts the analysis measures (a random subset drawn from `seed`)",
            env="IMGINAV_MAX_IMAGES",
        ),
        Parameter(
            "allow_unfinished",
            "bool",
            False,
            "analyse unfinished runs, marked as such, instead of refusing them",
            env="IMGINAV_ALLOW_UNFINISHED",
        ),
        Parameter(
            "allow_no_probe",
            "bool",
            False,
            "decide without the diffusion probe's results (the primary endpoint): no choice, the other criteria only",
            env="IMGINAV_ALLOW_NO_PROBE",
        ),
        Parameter("device", "str", "auto", "`auto`, `cpu` or `cuda`", env="IMGINAV_DEVICE"),
        Parameter(
            "seed", "int", 0, "seed of the interpolation pairs and the latent noise", env="IMGINAV_ANALYSIS_SEED"
        ),
    ),
)

PROBE = Notebook(
    "notebooks/diffusion_probe.ipynb",
    (
        STUDY_OUTPUT_ROOT,
        Parameter(
            "experiments",
            "str",
            None,
            "runs whose latent spaces the probe compares, comma-separated",
            env="IMGINAV_PROBE_EXPERIMENTS",
            optional=True,
            shown_default="the plan's",
        ),
        Parameter(
            "steps",
            "int",
            PROBE_DEFAULTS.steps,
            "denoiser training steps per latent space and seed",
            env="IMGINAV_PROBE_STEPS",
        ),
        Parameter(
            "second_steps",
            "int",
            PROBE_DEFAULTS.second_steps,
            "second budget: denoiser steps each denoiser is trained on to, then scored again (`0`: twice `steps`)",
            env="IMGINAV_PROBE_SECOND_STEPS",
        ),
        Parameter(
            "batch_size", "int", PROBE_DEFAULTS.batch_size, "denoiser batch size", env="IMGINAV_PROBE_BATCH_SIZE"
        ),
        Parameter("lr", "float", PROBE_DEFAULTS.lr, "denoiser AdamW learning rate", env="IMGINAV_PROBE_LR"),
        Parameter("width", "int", PROBE_DEFAULTS.width, "denoiser UNet base channels", env="IMGINAV_PROBE_WIDTH"),
        Parameter(
            "samples",
            "int",
            PROBE_DEFAULTS.samples,
            "layouts generated per latent space and seed",
            env="IMGINAV_PROBE_SAMPLES",
        ),
        Parameter("seeds", "int", PROBE_DEFAULTS.seeds, "denoisers trained per run", env="IMGINAV_PROBE_SEEDS"),
        Parameter(
            "scorer_seeds",
            "int",
            PROBE_DEFAULTS.scorer_seeds,
            "layout-scorer feature networks (seeds) each generated set's FLD is measured with",
            env="IMGINAV_PROBE_SCORER_SEEDS",
        ),
        Parameter("device", "str", "auto", "`auto`, `cpu` or `cuda`", env="IMGINAV_DEVICE"),
    ),
)

# The study plan (imginav_core/study/plan.py): read by the launcher, the job array, the demo and
# `python -m imginav_core plan`, which the launcher and the demo record under the output root
# (`plan --from-env --record`). The probe and the analysis jobs get the runs it names as explicit -p
# lists (`check probe/analysis --from-env`), so each executed notebook says which; a notebook run
# without them takes the recorded plan's.
PLAN = (
    Parameter(
        "study_file",
        "path",
        None,
        "the study file (repository-relative): the arms (each an experiment config, its colour in the figures "
        "and its book page), the two the decision compares, the seeds, the KL sweep",
        env=STUDY_FILE_VARIABLE,
        optional=True,
        shown_default="`configs/phase1_2/study.yaml`",
    ),
    Parameter(
        "seeds",
        "str",
        None,
        "training seeds, comma-separated (`python -m imginav_core plan`)",
        env="IMGINAV_SEEDS",
        optional=True,
        shown_default="`configs/phase1_2/study.yaml`'s",
    ),
    Parameter(
        "sweep",
        "bool",
        False,
        "`1`: also the KL-weight sweep of `configs/phase1_2/study.yaml`",
        env="IMGINAV_KLD_SWEEP",
        shown_default="`0` (off)",
    ),
)
# What the plan sets for each run; a variable setting one of them for every run is refused.
PLANNED = {"config": "", "name": "IMGINAV_NAME", "seed": "IMGINAV_SEED", "kld": "IMGINAV_KLD"}

# Read by the job scripts themselves, not by a notebook.
JOB_VARIABLES = (
    ("IMGINAV_CONDA_ENV", "imginav", 'conda environment the jobs activate (`""`: the current `python`)'),
    (
        "IMGINAV_CONDA_BASE",
        "`$CONDA_EXE`'s, else that of `conda` on the `PATH`",
        "the conda installation the jobs activate from (the folder holding `etc/profile.d/conda.sh`); a job "
        "that cannot activate its environment stops with exit status 2",
    ),
    (
        "IMGINAV_GPUS",
        "1",
        "more than 1: train data-parallel with `torchrun` on that many GPUs of one node "
        '(ask LSF for them: `bsub -gpu "num=N:mode=exclusive_process" -n ...`)',
    ),
    (
        "IMGINAV_STUDY",
        "the output root's folder name",
        "the study's tag in the launcher's job names (`TAG.phase1_2[1-5]`; `bjobs -w -J \"TAG.*\"`)",
    ),
    (
        "IMGINAV_MAIL",
        "your cluster user",
        "where LSF mails (the launcher's `bsub -u`): each failed run (`-Ne`), the analysis's end (`-N`)",
    ),
    (
        "IMGINAV_HTML_MANAGER",
        "`npm pack` by the launcher",
        "a packed `@jupyter-widgets/html-manager` .tgz, for login nodes without npm or network",
    ),
)


def training_config(
    config: str | Path = TRAIN["config"].default,
    overrides: Mapping[str, Any] | None = None,
    notebook_defaults: bool = True,
    **params: Any,
) -> Config:
    """The configuration train.ipynb trains with: the experiment YAML, the parameters that are not
    None (with ``notebook_defaults``, those not given at the parameters cell's values, as the
    notebook has them), then ``overrides`` (dotted config keys, as ``--set``: a mapping, or the
    notebook's ``overrides`` parameter as given, see ``config.override_values``). Raises ConfigError
    naming the parameter or key."""
    TRAIN["config"].check(config)
    if not isinstance(overrides, Mapping):  # the notebook's `overrides` parameter, as given
        overrides = override_values(TRAIN["overrides"].check(overrides), "notebook parameter 'overrides'")
    for unknown in set(params) - set(TRAIN.names):
        TRAIN[unknown]  # raises, naming the parameter
    values = {}
    for parameter in TRAIN.parameters:
        if parameter.name in ("config", "overrides"):
            continue
        if parameter.name not in params and not notebook_defaults:
            continue
        value = parameter.check(params.get(parameter.name, parameter.default))
        if parameter.name == "output_root" and value is None:
            value = default_output_root()
        if value is None:
            continue
        if parameter.kind == "path" and value:
            value = str(repo_path(value))
        values[parameter.key] = value
    if overrides:
        values = {**values, **overrides}
    return load_config(repo_path(config), values)


def plan_settings(environ: Mapping[str, str] | None = None) -> tuple[list[int] | None, bool | None]:
    """(seeds, sweep) for ``study_plan`` from IMGINAV_SEEDS and IMGINAV_KLD_SWEEP; unset or empty:
    None, the plan file's. A bad value is a ConfigError naming the variable and what it takes."""
    environ = os.environ if environ is None else environ
    seeds = sweep = None
    text = environ.get("IMGINAV_SEEDS", "").strip()
    if text:
        try:
            seeds = [int(seed) for seed in text.split(",")]
        except ValueError:
            raise ConfigError(
                f"IMGINAV_SEEDS = {text!r}: expected integer seeds separated by commas, e.g. 42,43,44"
            ) from None
        check_seeds(seeds, "IMGINAV_SEEDS")
    text = environ.get("IMGINAV_KLD_SWEEP", "").strip()
    if text:
        sweep = parse_bool(text)
        if not isinstance(sweep, bool):
            raise ConfigError(
                f"IMGINAV_KLD_SWEEP = {text!r}: expected 1 or true to also train the KL-weight sweep, 0 or false not to"
            )
    return seeds, sweep


def environment_plan(environ: Mapping[str, str] | None = None, plan_file: str | Path | None = None) -> list[PlannedRun]:
    """The study plan as the LSF jobs see it: the plan file, with IMGINAV_SEEDS and IMGINAV_KLD_SWEEP."""
    return study_plan(*plan_settings(environ), plan_file=plan_file)


def recorded_plan(output_root: str | Path | Outputs, plan_file: str | Path | None = None) -> StudyPlan:
    """The study plan recorded under ``output_root`` (or in the phase folder of ``Outputs``) by the
    launcher or the demo (``plan --record``), or, when nothing is recorded there, the plan file's
    default plan: what the probe's and the analysis's run lists default to, so that the output root
    alone says which runs a study has."""
    out = output_root if isinstance(output_root, Outputs) else study_outputs(output_root)
    return study_plan_at(out.study_plan, plan_file)


def jobs_plan(
    output_root: str | Path | Outputs, environ: Mapping[str, str] | None = None, plan_file: str | Path | None = None
) -> StudyPlan:
    """The plan the probe and the analysis jobs take their runs from: the one IMGINAV_SEEDS and
    IMGINAV_KLD_SWEEP set, when either is set (as the launcher's jobs inherit them); else the one
    recorded under ``output_root`` (a job run by hand later, without them); else the default."""
    environ = os.environ if environ is None else environ
    if any(environ.get(variable, "").strip() for variable in ("IMGINAV_SEEDS", "IMGINAV_KLD_SWEEP")):
        return make_study_plan(*plan_settings(environ), plan_file=plan_file)
    return recorded_plan(output_root, plan_file)


def planned_parameters(run: PlannedRun) -> dict[str, str]:
    """train.ipynb's -p parameters that make one planned run, as text (papermill types them back:
    ``-p kld 1e-05`` is the float)."""
    return {"config": run.config, "name": run.name, "seed": str(run.seed), "kld": repr(run.kld)}


def plan_runs(notebook: Notebook, plan: list[PlannedRun]) -> dict[str, str]:
    """The probe's or the analysis's run lists for ``plan``, as -p text: what their None stands for.
    The probe: every run, the KL sweep's too (the curve's FLD, same budget and seeds); the analysis:
    each arm's comparison runs, for the arms that have a parameter (``arm_parameter``)."""
    if notebook is PROBE:
        return {"experiments": ",".join(run.name for run in plan)}
    if notebook is ANALYSIS:
        parameters = {label: arm_parameter(label) for label in study_arms()}
        return {key: ",".join(arm_names(plan, label)) for label, key in parameters.items() if key}
    return {}


def arm_parameter(label: str) -> str | None:
    """analysis.ipynb's parameter that names an arm's runs (``experiment_v1`` for V1), None for an
    arm without one (its runs are always the plan's)."""
    name = f"experiment_{label.lower()}"
    return name if name in ANALYSIS.names else None


def run_list(value: Any, parameter: str) -> list[str]:
    """A run-list parameter (comma-separated names, or a list of them) as a list of run names."""
    names = value if isinstance(value, (list, tuple)) else [n.strip() for n in str(value).split(",") if n.strip()]
    if not names:
        raise ConfigError(f"notebook parameter '{parameter}' = {value!r}: name at least one run (or None: the plan's)")
    for name in names:
        if not isinstance(name, str) or not is_folder_name(name):
            raise ConfigError(
                f"notebook parameter '{parameter}': {name!r} is no run name (letters, digits, '_', '-', '.')"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"notebook parameter '{parameter}' = {value!r}: each run once")
    return list(names)


def experiment_name(label: str) -> str:
    """The experiment name of an arm (V1, V2), as its config sets it."""
    arms = study_arms()
    if label not in arms:
        raise ConfigError(f"no arm {label!r} in {read_plan_file().path}; its arms: {', '.join(arms)}")
    return load_config(arms[label].config).name


def study_outputs(output_root: str | Path) -> Outputs:
    """The Phase 1.2 outputs under ``output_root`` (the phase folder as the experiments set it: the
    study file's first arm's)."""
    return Outputs(repo_path(output_root), load_config(next(iter(study_arms().values())).config).phase)


def probe_parameters(**params: Any) -> tuple[Outputs, list[str], ProbeSettings]:
    """diffusion_probe.ipynb's parameters, checked: the outputs, the runs to probe (None: every run
    of the study plan recorded under the output root, else of the plan file's default plan: V1's,
    V2's, then the KL sweep's when the plan has it), the settings."""
    for unknown in set(params) - set(PROBE.names):
        PROBE[unknown]  # raises, naming the parameter
    values = {p.name: p.check(params.get(p.name, p.default)) for p in PROBE.parameters}
    experiments = values.pop("experiments")
    output_root = values.pop("output_root") or default_output_root()
    if experiments is None:
        experiments = plan_runs(PROBE, recorded_plan(output_root).runs)["experiments"]
    names = run_list(experiments, "experiments")
    out = study_outputs(output_root)
    return out, names, ProbeSettings(**values)


def analysis_parameters(**params: Any) -> dict[str, Any]:
    """analysis.ipynb's parameters, checked. ``experiment_v1`` and ``experiment_v2`` come back as
    lists of run names (given comma-separated; None: the V1 / V2 runs, in seed order, of the study
    plan recorded under the output root, else of the plan file's default plan). ``arms``: every arm
    of the study file, label -> its runs (the parameter's where the arm has one, else the plan's)."""
    for unknown in set(params) - set(ANALYSIS.names):
        ANALYSIS[unknown]  # raises, naming the parameter
    keys = {label: arm_parameter(label) for label in study_arms()}
    lists = {key: params[key] for key in keys.values() if key and isinstance(params.get(key), (list, tuple))}
    values = {p.name: lists.get(p.name) or p.check(params.get(p.name, p.default)) for p in ANALYSIS.parameters}
    values["output_root"] = repo_path(values["output_root"] or default_output_root())
    plan = None
    values["arms"] = {}
    for label, key in keys.items():
        if key and values[key] is not None:
            values["arms"][label] = values[key] = run_list(values[key], key)
            continue
        plan = plan or recorded_plan(values["output_root"]).runs
        values["arms"][label] = run_list(arm_names(plan, label), key or f"the plan's {label} runs")
        if key:
            values[key] = values["arms"][label]
    seen: dict[str, str] = {}
    for label, names in values["arms"].items():
        for name in names:
            if name in seen:
                raise ConfigError(
                    f"the runs of {seen[name]} and {label} both name {name} (notebook parameters "
                    f"{', '.join(k for k in keys.values() if k)}, else the study plan): a run is in one arm"
                )
            seen[name] = label
    if values["max_images"] < 2:
        raise ConfigError(f"notebook parameter 'max_images' = {values['max_images']}: need at least 2 layouts")
    return values


# ---- the README's table -----------------------------------------------------------------------


def _default(value: Any, shown: str = "") -> str:
    if shown:
        return shown
    if value is None:
        return "the config's"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


NOTEBOOKS = (("train", TRAIN), ("analysis", ANALYSIS), ("probe", PROBE))


def settings_table() -> str:
    """Markdown: every setting with its ``--set`` key, ``-p`` name and ``IMGINAV_*`` variable;
    a variable several notebooks read is listed once, with the notebooks that read it."""
    rows = ["| setting | `--set` key | `-p` name | LSF job variable | default |", "| --- | --- | --- | --- | --- |"]
    readers: dict[str, list[str]] = {}
    for label, notebook in NOTEBOOKS:
        for p in notebook.parameters:
            if p.env:
                readers.setdefault(p.env, []).append(label)
    listed = set()
    for label, notebook in NOTEBOOKS:
        for p in notebook.parameters:
            if p.env in listed:
                continue
            listed.add(p.env)
            rows.append(
                f"| {p.meaning} | {'any' if p.kind == 'overrides' else f'`{p.key}`' if p.key else '—'} | `{p.name}` "
                f"({', '.join(readers.get(p.env, [label]))}) | "
                f"{f'`{p.env}`' if p.env else '— (the job script)'} | {_default(p.default, p.shown_default)} |"
            )
    for p in PLAN:
        rows.append(f"| {p.meaning} | — | — | `{p.env}` | {_default(p.default, p.shown_default)} |")
    for env, default, meaning in JOB_VARIABLES:
        shown = default if "`" in default or " " in default else f"`{default}`"  # a value, or words about one
        rows.append(f"| {meaning} | — | — | `{env}` | {shown} |")
    return "\n".join(rows) + "\n"
