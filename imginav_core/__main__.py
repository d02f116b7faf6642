"""The command line: ``python -m imginav_core COMMAND`` (installed as ``imginav COMMAND``).

Each command is defined here with its help and an example; the work is imported only when a
command runs, so ``--help`` answers at once (no torch). An error that says what to fix
(``errors.ImginavError``) is printed as ``error: ...`` and the command exits with status 2.

Settings are given in one place, when a study is planned (``plan --set KEY=VALUE``); the jobs, the
notebooks and the commands that read a study (``job``, ``probe``, ``stage``) take the output root
(``--out``, else ``$IMGINAV_OUTPUTS``, else ``outputs/``) and read its plan.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from .config import parse_overrides
from .errors import ConfigError, ImginavError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = function
        return function

    return register


def _root(args: argparse.Namespace) -> Path:
    """The output root a command works on: ``--out``, else ``$IMGINAV_OUTPUTS``, else ``outputs/``
    (relative: to the repository root, as the jobs and the notebooks take it)."""
    from .study.jobs import output_root

    return output_root({"IMGINAV_OUTPUTS": args.out} if args.out else None)


# ---- commands ----------------------------------------------------------------------------------


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .study.plan import read_run_config
    from .training import train

    train(read_run_config(Path(args.config)))
    return 0


@command("plan")
def _plan(args: argparse.Namespace) -> int:
    from .study.budget import plan_cost_text, seed_plan_text
    from .study.plan import arrays, make_plan, plan_table, read_plan, write_plan

    given = bool(args.seeds or args.sweep or args.set or args.study)
    if args.effect is not None:
        from .study.arms import read_study_file

        if given or args.arrays or args.show or args.dry_run:
            raise ConfigError("--effect plans the seeds: give it alone (with --spread, --power, --study)")
        print(seed_plan_text(args.effect, args.spread, read_study_file(args.study), target=args.power), end="")
        return 0
    root = _root(args)
    if args.arrays or args.show:
        if given or args.dry_run:
            raise ConfigError("--show and --arrays read the written plan: give no settings with them")
        plan = read_plan(root)
        if args.arrays:
            runs = _pending(plan) if args.pending else plan.runs
            print("\n".join(f"{arm} {indices} {queue}" for arm, indices, queue in arrays(plan, runs)))
            return 0
        print(plan_table(plan) + "\n" + plan_cost_text(plan), end="")
        return 0
    if args.pending:
        raise ConfigError("--pending goes with --arrays (what bash hpc/launch_phase1_2.sh --resume submits)")
    seeds = None
    if args.seeds:
        try:
            seeds = [int(seed) for seed in args.seeds.split(",")]
        except ValueError:
            raise ConfigError(
                f"--seeds {args.seeds!r}: expected integer seeds separated by commas, e.g. 42,43"
            ) from None
    plan = make_plan(root, args.study, seeds, args.sweep, parse_overrides(args.set))
    print(plan_table(plan) + "\n" + plan_cost_text(plan), end="")
    from .study.protocol import build_protocol

    design = build_protocol(plan)["primary"]["design"]
    if design:  # what the design can see, before any data
        spread = design["log_seed_spread"]
        print(f"The design: {design['text']} (assuming a seed-to-seed spread of {spread:g} in log FLD).")
    if not args.dry_run:
        write_plan(plan)
    return 0


def _pending(plan) -> list:
    """The plan's runs whose folder does not say they finished (the metrics CSV ends in completed
    or early_stopped, and best.pt is there): what ``launch_phase1_2.sh --resume`` submits again."""
    from .errors import CheckpointError, UnfinishedRunError
    from .study.runs import load_run

    pending = []
    for run in plan.runs:
        try:
            finished = load_run(plan.outputs, run.name).finished
        except (UnfinishedRunError, CheckpointError):  # no metrics yet; no checkpoint, or one cut short
            finished = False
        if not finished:
            pending.append(run)
    return pending


@command("job")
def _job(args: argparse.Namespace) -> int:
    from .study import jobs

    if args.what != "train" and (args.index is not None or args.arm):
        raise ConfigError("--index and --arm pick the run a training job trains: job train --index I (or --arm V2)")
    if args.what == "check":
        jobs.check_environment()
        plan = jobs.read_plan(jobs.output_root())
        print(f"the jobs will run the study planned in {plan.outputs.shown(plan.path)}: {len(plan.runs)} runs")
        return 0
    if args.what == "train":
        if args.index is not None and args.index < 1:
            raise ConfigError(
                f"--index {args.index}: no array index (LSF sets LSB_JOBINDEX to 0 outside an array): submit the "
                "job array (bash hpc/launch_phase1_2.sh), or run one index: LSB_JOBINDEX=I bash hpc/phase1_2_array.sh"
            )
        jobs.train_job(args.index, args.arm)
    else:
        {"probe": jobs.probe_job, "analysis": jobs.analysis_job}[args.what]()
    return 0


@command("job-scripts")
def _job_scripts(args: argparse.Namespace) -> int:
    from .study.jobscripts import write_job_scripts

    drift = write_job_scripts(check=args.check)
    if args.check and drift:
        print("\n".join(f"{path}: differs from what the study file makes of it" for path in drift), file=sys.stderr)
        print("run `python -m imginav_core job-scripts` to write them again", file=sys.stderr)
        return 1
    return 0


@command("probe")
def _probe(args: argparse.Namespace) -> int:
    from .study.plan import read_plan
    from .study.probe.run import run_probe

    plan = read_plan(_root(args))
    run_probe(plan.outputs, [run.name for run in plan.runs], plan.probe)
    return 0


@command("stage")
def _stage(args: argparse.Namespace) -> int:
    from .study.analysis.report import stage
    from .study.plan import read_plan

    for path in stage(read_plan(_root(args))):
        print(f"staged {path}")
    return 0


@command("settings")
def _settings(args: argparse.Namespace) -> int:
    from .study.settings import settings_table

    print(settings_table(), end="")
    return 0


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


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    if args.memory:
        from .study.perf.memory import main as memory

        return memory(args, parse_overrides(args.set))
    from .study.perf.bench import main

    return main(args, parse_overrides(args.set), {v: parse_overrides(v.split(",")) for v in args.variant})


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


def _set_option(parser: argparse.ArgumentParser, explanation: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=explanation)


def _out_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        metavar="OUTPUT_ROOT",
        help="the study's output root (default: $IMGINAV_OUTPUTS, else outputs/; relative: to the repository root)",
    )


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
        "plan",
        "write the study's plan: every run's config and the protocol, before anything runs",
        "python -m imginav_core plan --out outputs/study --seeds 42,43 --set training.epochs=20 --set probe.steps=300",
        "Write the study under its output root before the first job: each planned run's complete config "
        "(experiments/NAME/planned.yaml), the plan (one row per index of the LSF job array: V1 and V2 x the "
        "seeds, then the KL sweep with --sweep) and the protocol (what decides, hashed), and print the runs "
        "with their GPU-hours. Every setting of the study is given here, once: --set takes any config key, "
        "probe.KEY and analysis.KEY (`python -m imginav_core settings` lists them). A written plan is fixed: "
        "the same plan again changes nothing, another is refused. --show prints the written plan; --effect "
        "instead plans how many seeds a difference needs.",
    )
    _out_option(p)
    p.add_argument("--study", help="the study file (default configs/phase1_2/study.yaml): arms, decision, seeds, sweep")
    p.add_argument("--seeds", help="training seeds, comma-separated (default: the study file's)")
    p.add_argument("--sweep", action="store_true", help="also the KL-weight sweep of the study file")
    _set_option(p, "a setting: a config key (training.lr=3e-4), probe.KEY or analysis.KEY (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--show", action="store_true", help="print the plan written under the output root")
    p.add_argument(
        "--arrays",
        action="store_true",
        help='print each arm\'s array indices and queue as the launcher submits them ("V1 1-5 gpuv100")',
    )
    p.add_argument("--pending", action="store_true", help="with --arrays: only the runs that have not finished")
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
        help="with --effect: the standard deviation of a run's score between seeds (default 1: E in SDs)",
    )
    p.add_argument("--power", type=float, default=0.8, help="with --effect: the power to reach (default 0.8)")

    p = _subcommand(
        sub,
        "train",
        "train (or resume) one run from its config file",
        "python -m imginav_core train outputs/study/experiments/phase1_2_AE_V2_vae_light_seed42/planned.yaml",
        "Train (or resume from its last.pt) the run a config file describes: a planned run's config "
        "(plan writes them), or any complete config (configs/phase1_2/V2_vae_light.yaml: into its "
        "output_root). Data-parallel under torchrun.",
    )
    p.add_argument("config", help="the run's config file")

    p = _subcommand(
        sub,
        "job",
        "what an LSF job runs: train one planned run, the probe, or the analysis and the report",
        'python -m imginav_core job train --index "$LSB_JOBINDEX"',
        "What the job scripts in hpc/ run, on the study under $IMGINAV_OUTPUTS (else outputs/): train one "
        "run of the plan through notebooks/train.ipynb (--index: the array element; --arm: the arm's first "
        "run, planning one run per arm when there is no plan), the diffusion probe, or the analysis and the "
        "report. A job takes no setting from its environment: an IMGINAV_* setting variable stops it at once.",
    )
    p.add_argument("what", choices=("train", "probe", "analysis", "check"), help="check: what the jobs will find")
    p.add_argument("--index", type=int, help="train: the plan's row (the LSF array index)")
    p.add_argument("--arm", help="train: the arm whose first planned run to train")

    p = _subcommand(
        sub,
        "job-scripts",
        "write hpc/papermill_ARM.sh and hpc/phase1_2_array.sh from the study file",
        "python -m imginav_core job-scripts --check",
        "LSF reads #BSUB lines before a script runs, so each arm's job script (its queue, job name and "
        "logs, from configs/phase1_2/study.yaml) is written by this command; --check says whether they "
        "differ from what the study file makes of them (a test runs it).",
    )
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 naming each script that differs")

    p = _subcommand(
        sub,
        "probe",
        "the diffusion probe on a study: how well a latent diffusion model learns each run's latents",
        "python -m imginav_core probe --out outputs/demo",
        "Train the same small latent diffusion model on each planned run's standardised latents, with the "
        "plan's probe settings; generate layouts, decode and score them; writes "
        "OUTPUT_ROOT/<phase>/probe/probe_metrics.json. What hpc/diffusion_probe.sh runs; resumes a killed probe.",
    )
    _out_option(p)

    p = _subcommand(
        sub,
        "stage",
        "put a study's executed notebooks and the widget script into book/",
        "python -m imginav_core stage --out outputs/demo && jupyter-book build book",
    )
    _out_option(p)

    _subcommand(
        sub, "settings", "print every setting a plan takes, with its default", "python -m imginav_core settings"
    )

    _subcommand(
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
        "synthetic",
        "write a synthetic layout set (PNGs and layouts.csv)",
        "python -m imginav_core synthetic data/synthetic --samples 200 --resolution 512",
    )
    p.add_argument("out_dir", help="folder for images/ and layouts.csv (an existing complete set is kept)")
    p.add_argument("--samples", type=int, default=200, help="layouts, about 44 %% of them empty (default 200)")
    p.add_argument("--resolution", type=int, default=512, help="image side in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same set (default 0)")

    p = _subcommand(
        sub,
        "bench",
        "training throughput (the fast path against a straightforward one), or memory per phase",
        "python -m imginav_core bench --set training.device=cpu --set data.resolution=128 --steps 30\n"
        "  python -m imginav_core bench --memory --set training.device=cpu --json memory.json   (512 x 512)",
        "Times training steps (data included) of V1 and V2 through the fast path train() uses and a "
        "straightforward one, in alternating windows. With --memory instead: a small study planned with "
        "--set and run as its jobs run it (training V1 and V2, the probe, the analysis), each in a fresh "
        "process at the resolution (default 512); reports each process's peak memory and seconds as the "
        "stages recorded them, and the real set's training time. See imginav_core/study/perf/README.md.",
    )
    _set_option(
        p,
        "config override for every path, e.g. --set data.resolution=128 (default: the configs, "
        "512 x 512, batch 16; --quick: 128 x 128); --memory: any plan setting (plan --help)",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="run the study's jobs small and report what each recorded of its memory and seconds instead "
        "(--quick: 64 x 64, a few minutes)",
    )
    p.add_argument("--steps", type=int, help="timed training steps per path and model (default 20; 3 with --quick)")
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
