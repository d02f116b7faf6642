"""The command line: ``python -m imginav_core COMMAND`` (installed as ``imginav COMMAND``).

Each command is defined here with its help, defaults and an example; the work is imported only
when a command runs, so ``--help`` answers at once (no torch). An error that says what to fix
(``errors.ImginavError``) is printed as ``error: ...`` and the command exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import override_values, parse_overrides
from .errors import ConfigError, ImginavError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = function
        return function

    return register


def notebook_parameters(notebook, pairs: list[list[str]], from_env: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """(the parameters as text, for papermill; the same typed and checked): from the ``IMGINAV_*``
    variables when ``from_env``, then from ``-p NAME VALUE`` pairs (which win). With ``from_env``,
    the probe's and the analysis's run lists not given are those of the study plan the jobs train
    (IMGINAV_SEEDS, IMGINAV_KLD_SWEEP; neither set: the plan recorded under the output root),
    written out, so that the executed notebook names them."""
    from .study.parameters import ANALYSIS, PROBE, jobs_plan, plan_runs

    given, where = {}, {}
    if from_env:
        for name, text in notebook.from_environment().items():
            given[name], where[name] = text, notebook[name].env
    for name, text in pairs:
        if name == "overrides" and "overrides" in given:  # the variables' keys, then -p's: one mapping
            both = {**override_values(given[name], where[name]), **override_values(text, "-p overrides")}
            given[name], where[name] = json.dumps(both), f"{where[name]} and -p overrides"
            continue
        given[name], where[name] = text, f"-p {name}"
    if from_env and notebook in (PROBE, ANALYSIS):
        root = notebook.from_strings({"output_root": given["output_root"]}) if "output_root" in given else {}
        plan = jobs_plan(root.get("output_root", notebook["output_root"].default)).runs
        for name, text in plan_runs(notebook, plan).items():
            if name not in given:
                given[name], where[name] = text, "the study plan"
    return given, notebook.from_strings(given, where)


def planned_run_parameters(
    pairs: list[list[str]], index: int | None, from_env: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """For ``check run``: (the shell assignments, papermill's -p text) of array index ``index`` of
    the study plan; every planned run checked when ``index`` is None (RUNS: how many)."""
    import os

    from .study.parameters import PLANNED, TRAIN, environment_plan, planned_parameters, set_variable, training_config
    from .study.plan import planned_run

    for name, _ in pairs:
        if name in PLANNED:
            raise ConfigError(
                f"-p {name}: the study plan sets each run's {name}; change configs/phase1_2/study.yaml, "
                "IMGINAV_SEEDS or IMGINAV_KLD_SWEEP instead (or train one run: check train)"
            )
    if from_env:
        for name, variable in PLANNED.items():
            if variable and os.environ.get(variable, ""):
                raise ConfigError(
                    f"{variable}={os.environ[variable]}: the study plan sets each run's {name}, so it "
                    "would be ignored; unset it (seeds: IMGINAV_SEEDS, the KL sweep: IMGINAV_KLD_SWEEP), "
                    f"or submit one run with it: {variable}=... bsub < hpc/papermill_V2.sh"
                )
    plan = environment_plan() if from_env else environment_plan({})
    runs = plan if index is None else [planned_run(plan, index)]
    for run in runs:
        given, params = notebook_parameters(TRAIN, [*pairs, *planned_parameters(run).items()], from_env)
        overridden = override_values(params.get("overrides"), "overrides")
        for name in PLANNED:
            if TRAIN[name].key in overridden:
                raise ConfigError(
                    f"overrides set '{TRAIN[name].key}' (-p overrides or {set_variable(TRAIN[name].key)}): the study "
                    f"plan sets each run's {name}; change configs/phase1_2/study.yaml, IMGINAV_SEEDS or "
                    "IMGINAV_KLD_SWEEP instead"
                )
        cfg = training_config(**params)  # refuses a bad parameter, naming it
    if index is None:
        return {"RUNS": len(plan)}, {}
    assignments = {
        "INDEX": run.index,
        "ARM": run.arm,
        "SEED": run.seed,
        "KLD": run.kld,
        "NAME": cfg.name,
        "RUN_DIR": cfg.outputs.run_dir(cfg.name),
        "NOTEBOOK": cfg.outputs.executed_notebook(cfg.name),
    }
    return assignments, given


def shell(assignments: dict[str, Any], params: dict[str, str] | None) -> str:
    """Lines a job script can ``eval``: NAME=value assignments, and PARAMS as a bash array of
    papermill ``-p`` arguments (none when ``params`` is None)."""
    lines = [f"{key}={shlex.quote(str(value))}" for key, value in assignments.items()]
    if params is None:
        return "\n".join(lines)
    pairs = " ".join(f"-p {shlex.quote(name)} {shlex.quote(text)}" for name, text in params.items())
    return "\n".join(lines + [f"PARAMS=({pairs})"])


# ---- commands ----------------------------------------------------------------------------------


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .study.parameters import TRAIN, training_config
    from .training import train

    given, params = notebook_parameters(TRAIN, args.parameter, from_env=False)
    if args.config and "config" in given:
        raise ConfigError("give the experiment YAML once: as CONFIG or as -p config, not both")
    config = str(Path(args.config).resolve()) if args.config else params.pop("config", None)
    if not config:
        raise ConfigError("which experiment? give its YAML, e.g. configs/phase1_2/V2_vae_light.yaml")
    # CONFIG: the file's values, changed only where told. -p config: exactly what the notebook
    # trains with the same -p parameters (the LSF job's torchrun and papermill calls agree).
    # -p overrides, then --set: both dotted config keys, --set last
    overrides = {**override_values(params.pop("overrides", None), "-p overrides"), **parse_overrides(args.set)}
    train(training_config(config, overrides=overrides, notebook_defaults=not args.config, **params))
    return 0


@command("check")
def _check(args: argparse.Namespace) -> int:
    from .study.analysis.report import widget_script_source
    from .study.parameters import (
        ANALYSIS,
        PROBE,
        TRAIN,
        analysis_parameters,
        probe_parameters,
        study_outputs,
        training_config,
    )

    if args.index is not None and args.notebook != "run":
        raise ConfigError("--index picks a run of the study plan: check run --index I")
    if args.notebook == "run":
        assignments, given = planned_run_parameters(args.parameter, args.index, args.from_env)
        assignments["WIDGET_SCRIPT"] = widget_script_source()
        # Without --index every run was checked (the launcher, before submitting): no PARAMS.
        print(shell(assignments, given if args.index is not None else None))
        return 0
    notebook = {"train": TRAIN, "analysis": ANALYSIS, "probe": PROBE}[args.notebook]
    given, params = notebook_parameters(notebook, args.parameter, args.from_env)
    if args.notebook == "probe":
        out, names, _ = probe_parameters(**params)
        if not args.parameters_only:  # a training job that failed stops the probe here, with the run named
            from .study.runs import load_runs  # (torch: not for the launcher's check on a login node)

            load_runs(out, names)
        assignments = {"OUTPUT_ROOT": out.root, "PROBE_DIR": out.probe_dir, "NOTEBOOK": out.probe_notebook}
    elif args.notebook == "train":
        if "config" not in params:
            raise ConfigError("notebook parameter 'config' is required (the experiment YAML)")
        cfg = training_config(**params)
        assignments = {
            "NAME": cfg.name,
            "RUN_DIR": cfg.outputs.run_dir(cfg.name),
            "NOTEBOOK": cfg.outputs.executed_notebook(cfg.name),
        }
    else:
        from .errors import UnfinishedRunError

        values = analysis_parameters(**params)
        out = study_outputs(values["output_root"])
        # A training job that failed stops the analysis here, in seconds, with the run named.
        if not args.parameters_only:
            from .study.runs import load_runs  # (torch: not for the launcher's check on a login node)

            names = [name for arm in values["arms"].values() for name in arm]
            runs, _ = load_runs(out, names, values["allow_unfinished"])
        if not args.parameters_only and not out.probe_notebook.is_file():  # the report has a chapter for it
            raise UnfinishedRunError(
                f"the diffusion probe has not run: {out.probe_notebook} does not exist "
                "(bsub < hpc/diffusion_probe.sh, then the analysis)"
            )
        if not args.parameters_only:  # the primary endpoint: every run probed since it last trained
            from .study.analysis.endpoint import read_probe

            read_probe(out.probe_metrics, runs, values["allow_no_probe"])
        assignments = {
            "OUTPUT_ROOT": values["output_root"],
            "PHASE_DIR": out.phase_dir,
            "NOTEBOOK": out.analysis_notebook,
            "DECISION": out.decision,
        }
    # The report is built last: a missing widget script must stop the job now, not after training.
    assignments["WIDGET_SCRIPT"] = widget_script_source()
    print(shell(assignments, given))
    return 0


@command("probe")
def _probe(args: argparse.Namespace) -> int:
    from .study.parameters import PROBE, probe_parameters
    from .study.probe.run import run_probe

    _, params = notebook_parameters(PROBE, args.parameter, args.from_env)
    run_probe(*probe_parameters(**params))
    return 0


@command("stage")
def _stage(args: argparse.Namespace) -> int:
    from .study.analysis.report import stage
    from .study.parameters import ANALYSIS, analysis_parameters

    _, params = notebook_parameters(ANALYSIS, args.parameter, args.from_env)
    for path in stage(analysis_parameters(**params)):
        print(f"staged {path}")
    return 0


@command("plan")
def _plan(args: argparse.Namespace) -> int:
    from .study.parameters import environment_plan
    from .study.plan import arm_indices, check_seeds, plan_cost_text, plan_table, seed_plan_text, study_plan

    if args.effect is not None:
        if args.seeds or args.sweep or args.from_env or args.arrays or args.record:
            raise ConfigError(
                "--effect plans how many seeds; give it without --seeds, --sweep, --from-env, --arrays, --record"
            )
        if not 0 < args.power < 1:
            raise ConfigError(f"--power {args.power}: expected a probability between 0 and 1, e.g. 0.8")
        print(seed_plan_text(args.effect, args.spread, target=args.power), end="")
        return 0
    if args.record:
        if not args.from_env or args.pending or args.arrays:
            raise ConfigError(
                "--record writes the plan the jobs run: give it with --from-env, without --pending, --arrays"
            )
        print(f"study plan recorded: {record_plan()}")
        return 0
    if args.from_env:
        plan = environment_plan()
    else:
        seeds = None
        if args.seeds:
            try:
                seeds = [int(seed) for seed in args.seeds.split(",")]
            except ValueError:
                raise ConfigError(
                    f"--seeds {args.seeds!r}: expected integer seeds separated by commas, e.g. 42,43"
                ) from None
            check_seeds(seeds, "--seeds")
        plan = study_plan(seeds, args.sweep or None)
    if args.pending:
        plan = unfinished_runs(plan, args.from_env)
    if args.arrays:
        print("\n".join(f"{arm} {indices}" for arm, indices in arm_indices(plan).items()))
    else:
        print(plan_table(plan) + "\n" + plan_cost_text(plan), end="")
    return 0


def record_plan() -> Path:
    """Write the study plan the jobs run (IMGINAV_SEEDS, IMGINAV_KLD_SWEEP) to
    OUTPUT_ROOT/<phase>/study_plan.json, the output root and phase those of its runs
    (IMGINAV_OUTPUTS): what the probe and the analysis default to later. Returns its path."""
    from .study.parameters import TRAIN, plan_settings, planned_parameters, training_config
    from .study.plan import make_study_plan, write_study_plan

    plan = make_study_plan(*plan_settings())
    _, params = notebook_parameters(TRAIN, list(planned_parameters(plan.runs[0]).items()), from_env=True)
    outputs = training_config(**params).outputs
    return write_study_plan(outputs.study_plan, plan)


def unfinished_runs(plan: list, from_env: bool) -> list:
    """The runs of ``plan`` whose run folder does not say they finished (``runs``: the
    metrics CSV ends in completed or early_stopped, and best.pt is there) under the output root
    the jobs train into: what ``launch_phase1_2.sh --resume`` submits again."""
    from .errors import CheckpointError, UnfinishedRunError
    from .study.parameters import TRAIN, planned_parameters, training_config
    from .study.runs import load_run

    unfinished = []
    for run in plan:
        _, params = notebook_parameters(TRAIN, list(planned_parameters(run).items()), from_env)
        cfg = training_config(**params)
        try:
            finished = load_run(cfg.outputs, cfg.name).finished
        except (UnfinishedRunError, CheckpointError):  # no metrics yet; no checkpoint, or one cut short
            finished = False
        if not finished:
            unfinished.append(run)
    return unfinished


@command("fetch-widgets")
def _fetch_widgets(args: argparse.Namespace) -> int:
    from .study.analysis.report import ensure_html_manager

    print(f"widget script: {ensure_html_manager()}")
    return 0


@command("synthetic")
def _synthetic(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_layouts

    print(generate_layouts(args.out_dir, args.samples, args.resolution, args.seed))
    return 0


@command("parameters")
def _parameters(args: argparse.Namespace) -> int:
    from .study.parameters import settings_table

    print(settings_table(), end="")
    return 0


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    if args.memory:
        from .study.perf.memory import main as memory

        return memory(args, parse_overrides(args.set))
    from .study.perf.bench import main

    return main(args, parse_overrides(args.set), {v: parse_overrides(v.split(",")) for v in args.variant})


@command("phase-timing")
def _phase_timing(args: argparse.Namespace) -> int:
    from .study.perf.phase_timing import main

    return main(args, parse_overrides(args.set))


@command("score-layouts")
def _score_layouts(args: argparse.Namespace) -> int:
    from .scoring.command import score_layouts

    score_layouts(args.reference, args.generated, args.json, args.resolution, args.seed, args.bootstrap, args.cache_dir)
    return 0


@command("export-latents")
def _export_latents(args: argparse.Namespace) -> int:
    from .export import export_command

    export_command(
        run=args.run,
        manifest=args.manifest,
        out=args.out,
        study=args.study,
        phase=args.phase,
        device=args.device,
        batch_size=args.batch_size,
        skip_broken=args.skip_broken,
        workers=args.workers,
    )
    return 0


# ---- the parser ----------------------------------------------------------------------------------


def _subcommand(sub, name: str, summary: str, example: str, description: str = "") -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description or summary, 100),
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _parameter_options(parser: argparse.ArgumentParser, notebook: str, env: bool = True) -> None:
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help=f"a parameter of {notebook}, typed as papermill types it (repeatable); "
        "`python -m imginav_core parameters` lists them",
    )
    if env:
        parser.add_argument(
            "--from-env", action="store_true", help="also take the parameters from their IMGINAV_* variables (-p wins)"
        )


def _set_option(parser: argparse.ArgumentParser, explanation: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=explanation)


def _measurement_options(parser: argparse.ArgumentParser, what: str, scratch: str) -> None:
    """Where a measurement writes its figures and its scratch data."""
    parser.add_argument("--json", type=Path, help=f"write {what} here")
    parser.add_argument("--work-dir", type=Path, help=f"folder for {scratch} (default: temporary)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m imginav_core",
        description="ImgiNav Phase 1.2: deterministic or variational latent space for layout diffusion?",
        epilog="`python -m imginav_core COMMAND --help` shows a command's options and an example.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _subcommand(
        sub,
        "train",
        "train (or resume) one experiment",
        "python -m imginav_core train configs/phase1_2/V2_vae_light.yaml --set training.epochs=1 "
        "--set data.resolution=64",
        "Train (or resume from its last.pt) one experiment. CONFIG: the YAML's values, changed only by "
        "the -p parameters and --set keys given. -p config instead: exactly what notebooks/train.ipynb "
        "trains with the same -p parameters (its defaults included: the LSF jobs call it so). --set "
        "changes any config key last. Runs data-parallel under torchrun.",
    )
    p.add_argument("config", nargs="?", help="the experiment YAML (or -p config, relative to the repository root)")
    _set_option(p, "override a config key, e.g. --set loss.kld=1e-3 (repeatable; values are YAML)")
    _parameter_options(p, "notebooks/train.ipynb", env=False)

    p = _subcommand(
        sub,
        "check",
        "check a notebook's parameters before a job runs it",
        "python -m imginav_core check train -p config configs/phase1_2/V1_deterministic.yaml -p epochs 2",
        "Check the parameters of notebooks/train.ipynb, analysis.ipynb or diffusion_probe.ipynb as the "
        "notebook will, before anything is written (the analysis and the probe: also that the runs "
        "finished; all: that "
        "the report's widget script can be had). Prints shell assignments for the LSF job scripts: "
        "the run's NAME, RUN_DIR, the executed NOTEBOOK's path, and PARAMS, papermill's -p arguments.",
    )
    p.add_argument(
        "notebook",
        choices=("train", "run", "analysis", "probe"),
        help="run: a run of the study plan (train.ipynb with its config, seed, name and KL weight)",
    )
    _parameter_options(p, "the notebook")
    p.add_argument(
        "--parameters-only",
        action="store_true",
        help="probe, analysis: check the parameters only, not that the runs finished (before submitting the jobs)",
    )
    p.add_argument(
        "--index",
        type=int,
        help="run: the array index ($LSB_JOBINDEX, 1..N of `python -m imginav_core plan`); without it, "
        "check every planned run and print RUNS=N",
    )

    p = _subcommand(
        sub,
        "plan",
        "the study's runs: one row per index of the LSF job array",
        "python -m imginav_core plan --seeds 42,43 --sweep    (how many seeds: plan --effect 2 --spread 1)",
        "Print the study plan (configs/phase1_2/study.yaml): for each array index the arm, the run's "
        "name (its folder), the config, the training seed, the KL weight and whether it belongs to the "
        "KL-weight sweep, and what the runs cost in GPU-hours on the cluster. Comparison runs first (each "
        "arm with each seed), then the sweep when asked. "
        "With --effect: how many seeds per arm the decision needs to detect that difference between "
        "the arms, given the seed-to-seed spread of a run's score (e.g. the probe's FLD of each run "
        "in an earlier study, decision.json's criteria.generation_fld), with the power at 2 to 8 "
        "seeds and what the runs cost in GPU-hours.",
    )
    p.add_argument("--seeds", help="training seeds, comma-separated (default: the plan file's)")
    p.add_argument("--sweep", action="store_true", help="include the KL-weight sweep")
    p.add_argument(
        "--from-env",
        action="store_true",
        help="take the seeds and the sweep from IMGINAV_SEEDS and IMGINAV_KLD_SWEEP, as the jobs do",
    )
    p.add_argument(
        "--arrays",
        action="store_true",
        help='print each arm\'s array indices as bsub -J takes them ("V1 1-5"), for the launcher',
    )
    p.add_argument(
        "--effect",
        type=float,
        metavar="E",
        help="plan the seeds instead: the difference between the arms' mean scores the study should detect",
    )
    p.add_argument(
        "--spread",
        type=float,
        default=1.0,
        metavar="SD",
        help="with --effect: the standard deviation of a run's score between seeds within an arm, in the "
        "units of E (default 1: E in standard deviations)",
    )
    p.add_argument(
        "--power",
        type=float,
        default=0.8,
        help="with --effect: the chance of detecting E the plan should reach (default 0.8)",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="with --from-env: write the plan (its runs, seeds, whether the sweep is on, the study file) to "
        "OUTPUT_ROOT/<phase>/study_plan.json, which the probe's and the analysis's run lists then default to "
        "(the launcher and the demo do, before the runs)",
    )
    p.add_argument(
        "--pending",
        action="store_true",
        help="only the runs that have not finished (no metrics CSV ending in completed or early_stopped, "
        "or no best.pt) in the output root (with --from-env: IMGINAV_OUTPUTS's): what "
        "`bash hpc/launch_phase1_2.sh --resume` submits again",
    )

    p = _subcommand(
        sub,
        "fetch-widgets",
        "put the report's widget script into book/_static/ now",
        "python -m imginav_core fetch-widgets",
        "Fetch the ipywidgets HTML manager the report's widgets need (npm pack "
        "@jupyter-widgets/html-manager, or the .tgz named by $IMGINAV_HTML_MANAGER) into "
        "book/_static/html-manager/, unless it is there. The launcher runs it on the login node before "
        "submitting, so that no compute job needs a network.",
    )

    p = _subcommand(
        sub,
        "probe",
        "the diffusion probe: how well a latent diffusion model learns each run's latents",
        "python -m imginav_core probe -p output_root outputs/demo -p steps 600 -p width 32",
        "Train the same small latent diffusion model (diffusers UNet2DModel, DDPM cosine, EMA) on each "
        "finished run's standardised latents, generate layouts with DDIM, decode and score them with "
        "the layout scorer; writes OUTPUT_ROOT/<phase>/probe/probe_metrics.json. What "
        "notebooks/diffusion_probe.ipynb runs; resumes a killed probe.",
    )
    _parameter_options(p, "notebooks/diffusion_probe.ipynb")

    p = _subcommand(
        sub,
        "stage",
        "put the executed notebooks and the widget script into book/",
        "python -m imginav_core stage -p output_root outputs/demo && jupyter-book build book",
        "Copy the study's executed notebooks into book/generated/ and the ipywidgets HTML manager "
        "into book/_static/ (from the npm registry, or $IMGINAV_HTML_MANAGER), so that "
        "`jupyter-book build book` builds the report.",
    )
    _parameter_options(p, "notebooks/analysis.ipynb (output_root, experiment_v1, experiment_v2)")

    p = _subcommand(
        sub,
        "synthetic",
        "write a synthetic layout set (PNGs and layouts.csv)",
        "python -m imginav_core synthetic data/synthetic --samples 200 --resolution 512",
    )
    p.add_argument("out_dir", help="folder for images/ and layouts.csv (an existing complete set is kept)")
    p.add_argument("--samples", type=int, default=200, help="layouts, about a quarter of them empty (default 200)")
    p.add_argument("--resolution", type=int, default=512, help="image side in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same set (default 0)")

    _subcommand(
        sub,
        "parameters",
        "print every setting with its --set key, -p name and IMGINAV_* variable",
        "python -m imginav_core parameters",
    )

    p = _subcommand(
        sub,
        "bench",
        "training throughput (the fast path against a straightforward one), or memory per phase",
        "python -m imginav_core bench --set training.device=cpu --set data.resolution=128 --steps 30\n"
        "  python -m imginav_core bench --memory --set training.device=cpu --json memory.json   (512 x 512)",
        "Times training steps (data included) of V1 and V2 through the fast path train() uses and a "
        "straightforward one, in alternating windows. With --memory instead: the peak resident memory (and "
        "CUDA memory on a GPU) of each phase of the study -- the cache build, training V1 and V2, the "
        "probe's and the analysis's phases -- each process run fresh on synthetic layouts at the "
        "resolution (default 512). See imginav_core/study/perf/README.md.",
    )
    _set_option(
        p,
        "config override for every path, e.g. --set data.resolution=128 (default: the configs, "
        "512 x 512, batch 16; --quick: 128 x 128)",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="measure the memory of every phase of the study instead (--quick: 64 x 64, small, a few minutes)",
    )
    p.add_argument(
        "--layouts",
        type=int,
        help="--memory: synthetic layouts generated (default 1200: enough to fill every capped chunk; "
        "200 with --quick)",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="timed training steps per path and model (default 20; 3 with --quick); --memory: training steps "
        "per arm (default 3)",
    )
    p.add_argument("--windows", type=int, help="timed windows the steps are split into (default 5; 3 with --quick)")
    p.add_argument("--warmup", type=int, help="untimed steps first, torch.compile included (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="a small run (128 x 128, few steps): under a minute on a CPU")
    p.add_argument("--models", default="V1,V2", help="comma-separated subset of V1,V2 (default both)")
    _measurement_options(
        p, "every figure (the headline ratio under 'speedup')", "the synthetic layouts and their cache"
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="one more fast path with these settings, timed alongside, e.g. training.channels_last=off",
    )
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="profile this many steps of each path's model alone (default 0: off)",
    )

    p = _subcommand(
        sub,
        "phase-timing",
        "how long the whole Phase 1.2 takes here, from a short real run",
        "python -m imginav_core phase-timing --set training.device=cuda --json phase_timing.json",
        "Trains V1 for a few epochs on synthetic layouts exactly as `train` does, times every epoch, "
        "and scales the steady epochs to the real set (2 runs x 10 epochs x 27,897 layouts).",
    )
    _set_option(
        p,
        "config override (default: 512 x 512, --set data.synthetic_samples=4000, "
        "--set training.epochs=3; at least 2 epochs)",
    )
    _measurement_options(p, "the timings and the estimate", "the layouts, cache and run")

    p = _subcommand(
        sub,
        "score-layouts",
        "score generated layouts against real ones, each score with its floor",
        "python -m imginav_core score-layouts --reference data/layouts.csv --generated samples/ "
        "--json scores.json --cache-dir scorer_cache",
        "Compare generated layout PNGs with real ones: Frechet and kernel distances, precision, "
        "recall, density and coverage in the features of a small network trained on the real "
        "layouts, palette purity, class and room/scene shares, speckle, memorisation. The reference "
        "is split by scene into a part that trains the network (and is the memorisation reference) "
        "and a held-out part the generated layouts are compared with. Each score comes with a 95% "
        "bootstrap interval and its floor: the score of as many real layouts.",
    )
    p.add_argument("--reference", type=Path, required=True, help="the real layouts' layouts.csv")
    p.add_argument(
        "--generated",
        type=Path,
        required=True,
        help="a folder holding only the generated PNGs (one square size), or a layouts.csv listing them",
    )
    p.add_argument("--json", type=Path, help="write every score, interval and floor here")
    p.add_argument(
        "--resolution",
        type=int,
        help="compare at this side in pixels (default: the generated images'; others are resized nearest-neighbour)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="the split, the network, the floor sample, the bootstrap (default 0)"
    )
    p.add_argument("--bootstrap", type=int, default=200, help="resamples for the 95%% intervals (default 200; 0: none)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="keep the trained feature network here, reused while the reference is the same "
        "(default: train it each time)",
    )

    p = _subcommand(
        sub,
        "export-latents",
        "encode every layout with a run's encoder: Phase 1.3's data",
        "python -m imginav_core export-latents --study outputs\n"
        "  python -m imginav_core export-latents --run outputs/experiments/phase1_2_AE_V1_deterministic "
        "--manifest data/layouts.csv --out data/layout_embeddings",
        "Encode every distinct layout of a manifest (empty ones too) with a run's best.pt at the run's "
        "resolution: OUT/<layout path below the manifest's folder>_layout_emb.pt, the posterior mean (C x H x W "
        "float32; a VAE: also _layout_emb_std.pt), OUT/layout_embeddings.csv (paths relative to OUT) and "
        "OUT/latent_stats.json (per-channel statistics to standardise by). A killed export, run again, "
        "continues. --study: the run the study's decision.json chose, on the layouts it trained on, into "
        "OUTPUT_ROOT/<phase>/layout_embeddings/. See book/using/phase1_3.md.",
    )
    p.add_argument("--run", help="the run folder (OUTPUT_ROOT/experiments/NAME, holding best.pt)")
    p.add_argument("--manifest", help="the layouts' layouts.csv (scene_id, type, room_id, layout_path, is_empty)")
    p.add_argument("--out", help="the folder to write into (--study: default OUTPUT_ROOT/<phase>/layout_embeddings)")
    p.add_argument(
        "--study",
        metavar="OUTPUT_ROOT",
        help="instead of --run and --manifest: the run the study's decision chose (OUTPUT_ROOT/<phase>/decision.json)",
    )
    p.add_argument("--phase", help="with --study: the phase folder, where several hold a decision.json")
    p.add_argument("--device", default="auto", help="auto (a GPU when one is visible), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=16, help="layouts encoded at once (default 16)")
    p.add_argument(
        "--skip-broken",
        action="store_true",
        help="leave unreadable layouts out (listed in the log and latent_stats.json) instead of stopping",
    )
    p.add_argument("--workers", type=int, help="threads decoding PNGs (default: the CPUs available, at most 8)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ImginavError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
