"""The Jupyter Book report: the numbers its introduction quotes, and staging its inputs.

``python -m imginav_core stage`` copies the executed notebooks of a study into
``book/generated/`` and puts the ipywidgets HTML manager into ``book/_static/`` (from the npm
registry, so the report loads no script from a CDN); then ``jupyter-book build book``.
``python -m imginav_core fetch-widgets`` puts the widget script there alone: the launcher runs it
on the login node, so that the analysis job, on a compute node, needs no network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config import REPO_ROOT
from ...errors import ReportError
from ...files import write_text_atomic
from ...outputs import Outputs, shown_path
from ..arms import decision_arms
from ..numbers import interval, percent, sig, with_separators
from ..plan import StudyPlan
from ..results import Decision, LatentMetrics
from .primary import detectable_text

if TYPE_CHECKING:  # the launcher's checks read this module on a login node: no torch for them
    from ..runs import RunSummary

BOOK = REPO_ROOT / "book"
GENERATED = "generated"  # book/generated/: the staged notebooks
WIDGETS = Path("_static") / "html-manager"  # book/_static/html-manager/embed.js
# The HTML manager that matches ipywidgets 8 (its __html_manager_version__ is ^1.0).
HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.15"


# The criteria the introduction's table quotes.
INTRO_CRITERIA = (
    "generation_fld",
    "reconstruction_mse",
    "small_class_iou",
    "nearest_neighbour_validity",
    "path_validity",
    "reconstruction_ssim",
    "sharpness",
    "palette_purity",
    "latent_noise",
)


_number = sig  # every number the introduction quotes: 3 significant figures, no exponent (numbers.py)


def _robustness_text(decision: Decision) -> str:
    """The primary endpoint's point estimates under each scorer seed alone and each denoiser budget,
    in words that say what they favour and, apart, what the interval says: "point estimates favour
    V2 under every scorer seed and budget, but the interval includes no difference" (a ranking that
    "holds" beside an inconclusive verdict read as a contradiction)."""
    primary = decision.primary
    if primary is None:
        return "not measured (no primary endpoint)"
    robustness = primary.get("robustness") or {}
    checks = [(f"scorer seed {k}", c) for k, c in robustness.get("scorer_seeds", {}).items()] + [
        (f"denoiser budget {k}", c) for k, c in robustness.get("budgets", {}).items()
    ]
    if not checks:
        return "not measured (" + (robustness.get("note") or "no other scorer seed or budget") + ")"
    counts = {
        "scorer seed": len(robustness.get("scorer_seeds", {})),
        "denoiser budget": len(robustness.get("budgets", {})),
    }
    kinds = [kind for kind, n in counts.items() if n]
    estimate = primary["estimate"]  # V2 / V1 - 1
    favoured = "V2" if estimate < 0 else "V1" if estimate > 0 else None
    against = [what for what, c in checks if not c["agrees"]]
    if favoured is None:
        lead = "the point estimate is no difference at all"
    elif not against:
        shown = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counts.items() if n)
        lead = f"point estimates favour {favoured} under every {' and '.join(kinds)} ({shown})"
    else:
        lead = (
            f"point estimates favour {favoured} under {len(checks) - len(against)} of the {len(checks)} "
            f"{' and '.join(k + 's' for k in kinds)}, not under {', '.join(against)}"
        )
    low, high = (1 + v for v in primary["ci95"])
    between = (
        f"V2 / V1 {sig(1 + estimate)}, {100 * primary.get('level', 0.95):.0f} % interval {sig(low)} to {sig(high)}"
    )
    tail = {
        "vae better": f", and the interval lies wholly below 1 ({between})",
        "vae worse": f", and the interval lies wholly above 1 ({between})",
    }.get(primary["verdict"], f", but the interval includes no difference ({between})")
    shown = "; ".join(f"{what} {sig(c['ratio'])}" for what, c in checks)
    return f"{lead}{tail}. V2 / V1 under each: {shown}"


def _detectable_shown(c: dict) -> str:
    """A criterion's detectable effect both ways, short: ``<= 0.34 x or >= 2.97 x`` of V1 (a ratio)
    or ``<= -0.012 or >= 0.012`` (a difference V2 - V1)."""
    found = c.get("detectable")
    if not found:
        return "unknown (one run in an arm)" if c.get("n_seeds") else "—"
    unit = " x" if found["scale"].startswith("ratio") else ""
    return f"<= {_number(float(found['at_most']))}{unit} or >= {_number(float(found['at_least']))}{unit}"


def _guard_text(decision: Decision) -> str:
    primary = decision.primary
    if primary is None:
        return "not measured (no primary endpoint)"
    flags = [flag for run in (primary.get("guard") or {}).values() for flag in run["flags"]]
    if flags:
        return "; ".join(flags)
    return (
        "no compared run flagged: every run's generations score no better than its own test reconstructions "
        "beyond the margin, and cover enough of the real layouts for the FLD to inform"
    )


def _protocol_words(protocol: dict) -> str:
    """The decision's pre-registration in a few words: its status and the hash it was checked by."""
    status = protocol.get("status", "not pre-registered")
    sha = protocol.get("planned_sha256") or protocol.get("sha256")
    return f"{status} (protocol {sha[:12]})" if sha and status != "not pre-registered" else status


# ---- the result card: the introduction's first screen ----------------------------------------

# What each verdict means for the choice, in the words of the rule (decision.py).
VERDICT_WORDS = {
    "vae better": "the VAE was shown better on the primary endpoint, its reconstructions not worse",
    "vae worse": "the VAE was shown worse",
    "inconclusive": "{baseline} is the default because it is the simpler model, not because it was shown better",
}
# The guard's kinds of flag (probe/guard.py's words) as the card names them.
GUARD_KINDS = {
    "generator collapsed or scorer fooled": "collapsed or fooled",
    "generations too far from real for the endpoint to inform": "too far from real",
    "not guarded": "not guarded",
}


def _run_seeds(arms: dict[str, list[RunSummary]]) -> dict[str, tuple[str, int]]:
    """Each run's name -> (its arm, its training seed)."""
    return {r.name: (label, r.config.training.seed) for label, runs in arms.items() for r in runs}


def _card_choice(decision: Decision) -> str:
    baseline, candidate = decision_arms()
    if decision.choice is None:
        return f"No choice (verdict: {decision.verdict}): {decision.reason}."
    arm = f"{candidate}, the VAE" if decision.choice == "variational" else f"{baseline}, the deterministic encoder"
    why = VERDICT_WORDS.get(decision.verdict, decision.reason).format(baseline=baseline)
    return f"Choose {arm} (verdict: {decision.verdict}): {why}."


def _card_primary(decision: Decision) -> str:
    """The primary's ratio and its interval in words."""
    primary = decision.primary
    if primary is None:
        return "not measured (no diffusion probe): the study cannot choose"
    low, high = (1 + v for v in primary["ci95"])
    reading = {
        "vae better": "wholly below 1: V2's generated layouts are closer to real ones",
        "vae worse": "wholly above 1: V2's generated layouts are further from real ones",
    }.get(primary["verdict"], "it includes 1, no difference")
    level = f"{100 * primary.get('level', 0.95):.0f} %"
    return (
        f"V2's FLD of generated layouts is {sig(1 + primary['estimate'])} x V1's "
        f"({level} interval {sig(low)} x to {sig(high)} x: {reading})"
    )


def _card_detectable(decision: Decision) -> str:
    """What the study could have seen, both ways, at 3 significant figures (0.0143 x, not 0.01 x)."""
    primary = decision.primary
    if primary is None:
        return "not measured"
    found = primary.get("detectable")
    if not found:
        return detectable_text(primary)
    return (
        f"V2's FLD would have to be at most {sig(found['at_most'])} x or at least {sig(found['at_least'])} x V1's "
        f"to be seen {100 * found['power']:.0f} % of the time"
    )


def _card_guard(decision: Decision, seeds: dict[str, tuple[str, int]]) -> str:
    """The guard's reading of every compared run: how many are flagged, and as what, the runs named by
    arm and seed (``too far from real: V1 seeds 42, 44; V2 seeds 42-46``)."""
    primary = decision.primary
    if primary is None:
        return "not measured (no diffusion probe)"
    guard = primary.get("guard") or {}
    by_kind: dict[str, dict[str, list]] = {}
    for name, record in guard.items():
        arm, seed = seeds.get(name, (name, None))
        for flag in record["flags"]:
            kind = flag.split(": ")[1] if ": " in flag else flag
            runs = by_kind.setdefault(GUARD_KINDS.get(kind, kind), {}).setdefault(arm, [])
            if seed not in runs:
                runs.append(seed)
    flagged = sum(bool(record["flags"]) for record in guard.values())
    if not flagged:
        return (
            f"no run flagged: none of the {len(guard)} runs' generations collapsed, fooled the scorer or lay too "
            "far from real"
        )
    shown = "; ".join(
        f"{kind}: "
        + " and ".join(
            f"{arm} seed{'s' if len(found) > 1 else ''} {', '.join(str(s) for s in found)}" if found != [None] else arm
            for arm, found in arms.items()
        )
        for kind, arms in by_kind.items()
    )
    return f"{flagged} of {len(guard)} runs flagged, so the FLD cannot decide ({shown})"


def _card_protocol(protocol: dict) -> str:
    """pre-registered (protocol 5ac95ee5cf39…), exploratory naming the changed fields, or not pre-registered."""
    status = protocol.get("status", "not pre-registered")
    if status == "pre-registered":
        return f"pre-registered (protocol {str(protocol.get('planned_sha256') or protocol.get('sha256'))[:12]}…)"
    if status == "exploratory":
        fields = [change.split(": ")[0] for change in protocol.get("changes", [])]
        more = f" and {len(fields) - 4} more" if len(fields) > 4 else ""
        return f"exploratory: changed since the plan: {', '.join(fields[:4])}{more}"
    line = protocol.get("line", "")
    return "not pre-registered" + (f": {line.split(': ', 1)[1]}" if ": " in line else "")


def result_card(decision: Decision, arms: dict[str, list[RunSummary]]) -> dict[str, str]:
    """The introduction's result card, one line each (``card_*``): the choice and verdict in one
    sentence, the primary's ratio with its interval, what the study could have detected (both ways),
    whether the data suffice, the guard's flags and the protocol's status."""
    other = [f for f in decision.flags if not any(kind in f for kind in GUARD_KINDS)]
    return {
        "card_choice": _card_choice(decision),
        "card_primary": _card_primary(decision),
        "card_detectable": _card_detectable(decision),
        "card_data": "yes"
        if decision.data_sufficient
        else "no, the result is provisional: " + with_separators(", ".join(decision.data_limits)),
        "card_guard": _card_guard(decision, _run_seeds(arms)),
        "card_other_flags": f"{len(other)}, listed in the result in detail below" if other else "none",
        "card_protocol": _card_protocol(decision.protocol),
    }


def _split_numbers(split: dict) -> dict[str, Any]:
    """The split's sides and its duplicate figures, as the introduction quotes them."""
    layouts = split["layouts"]
    total = sum(layouts.values())
    return {
        "split_sides": ", ".join(f"{side} {n}" for side, n in layouts.items()),
        "split_groups": split["groups"],
        "split_identical_layouts": split["identical_layouts"],
        "split_duplicate_rate": f"{split['duplicate_rate']:.1%}",
        "split_identical_sets": split["identical_sets"],
        "split_identical_across_sides": split["identical_across_sides"],
        "split_layouts": total,
    }


def key_numbers(
    arms: dict[str, list[RunSummary]], latent_metrics: LatentMetrics, decision: Decision, train_images: int
) -> dict[str, Any]:
    """The values the book's introduction pastes with ``{glue}``: the decision, the data, and per
    criterion ``<criterion>_v1`` / ``_v2`` (each arm's mean over its seeds), ``_diff`` (V2 - V1
    with its 95 % interval), ``_mde`` (the true V2 / V1, or V2 - V1, that the design would see
    with the rule's power, both ways: at most ... or at least ...) and ``_verdict``; for the primary
    endpoint also what its n is, its estimand, the detectable effect in words, the guard and its
    robustness."""
    baseline, candidate = decision_arms()
    first = arms[baseline][0]
    primary = decision.primary
    numbers: dict[str, Any] = {
        "decision_summary": decision.summary,
        "decision_verdict": decision.verdict,
        "decision_primary": decision.primary_endpoint.replace("_", " "),
        "decision_data_sufficient": "yes" if decision.data_sufficient else "no",
        "decision_data_limits": "; ".join(decision.data_limits) or "none",
        "decision_flags": "; ".join(decision.flags) or "none",
        "decision_primary_n": "not measured"
        if primary is None
        else f"{' and '.join(map(str, primary['n_runs']))} runs (V1 and V2; each run's FLD over "
        f"{primary['generated_per_run']} generated layouts is one observation)",
        "decision_robustness": _robustness_text(decision),
        "decision_estimand": "not measured" if primary is None else primary.get("estimand", primary["meaning"]),
        "decision_detectable": "not measured" if primary is None else detectable_text(primary),
        "decision_guard": _guard_text(decision),
        "decision_missing_runs": "; ".join(f"{m['name']} ({m['why']})" for m in decision.missing_runs) or "none",
        "decision_protocol": _protocol_words(decision.protocol),
        **result_card(decision, arms),
        "train_images": train_images,
        "evaluation_split": latent_metrics.evaluation_split,
        "evaluation_images": latent_metrics.evaluation_images,
        "evaluation_scenes": latent_metrics.evaluation_scenes,
        "evaluation_groups": latent_metrics.evaluation_groups,
        **_split_numbers(latent_metrics.split),
        "seeds": ", ".join(
            f"{label} {', '.join(str(r.config.training.seed) for r in runs)}" for label, runs in arms.items()
        ),
        "resolution": first.config.data.resolution,
        "dataset": shown_path(first.config.data.manifest)
        if first.config.data.manifest
        else "the embedded synthetic layouts",
    }
    for name in INTRO_CRITERIA:  # a criterion the rule did not compute (no probe) reads "not measured"
        numbers.update({f"{name}_{part}": "not measured" for part in ("v1", "v2", "diff", "mde", "verdict")})
    for name, c in decision.criteria.items():
        if c["role"] == "flag":
            continue
        relative = " (relative)" if c.get("relative") else ""
        numbers.update(
            {
                f"{name}_v1": _number(float(sum(c["deterministic"]) / len(c["deterministic"]))),
                f"{name}_v2": _number(float(sum(c["vae"]) / len(c["vae"]))),
                f"{name}_diff": interval(c["estimate"], *c["ci95"]) + relative,
                f"{name}_mde": _detectable_shown(c),
                f"{name}_verdict": c["verdict"]
                + (f" (margin {_number(c['margin'])})" if c.get("margin") is not None else ""),
            }
        )
    posts = [latent_metrics.posterior(r.name) for r in arms[candidate]]
    numbers.update(
        {
            "v2_kl_nats": _number(float(sum(p["kl_nats_per_element"] for p in posts) / len(posts))),
            "v2_kl_bits_per_pixel": _number(float(sum(p["kl_bits_per_pixel"] for p in posts) / len(posts))),
            "v2_kl_weighted": _number(float(sum(p["kl_weighted"] for p in posts) / len(posts))),
            "v2_active_share": percent(sum(p["active_share"] for p in posts) / len(posts)),
        }
    )
    for label, runs in arms.items():
        key = label.lower()
        numbers[f"{key}_val_mse"] = _number(float(sum(r.best_row["val_mse"] for r in runs) / len(runs)))
        numbers[f"{key}_epochs"] = ", ".join(str(r.epochs_run) for r in runs)
        numbers[f"{key}_minutes"] = _number(float(sum(r.minutes for r in runs) / len(runs)))
    return numbers


# ---- staging the book ----------------------------------------------------------------------


def widget_script_source(book: Path | None = None) -> str:
    """Where the report's widget script will come from; a ReportError now, before a job trains
    for hours, if it cannot be had."""
    book = book or BOOK
    if (book / WIDGETS / "embed.js").is_file():
        return str(WIDGETS / "embed.js")
    package = os.environ.get("IMGINAV_HTML_MANAGER")
    if package:
        if not Path(package).is_file():
            raise ReportError(
                f"IMGINAV_HTML_MANAGER = {package}: no such file (expected a .tgz made by `npm pack {HTML_MANAGER}`)"
            )
        return Path(package).name
    if shutil.which("npm") is None:
        raise ReportError(
            f"the report needs {HTML_MANAGER} for its widgets and npm is not installed: install Node.js "
            "(conda install nodejs; environment.yml has it) and run `python -m imginav_core fetch-widgets` "
            f"(bash hpc/launch_phase1_2.sh does), or run `npm pack {HTML_MANAGER}` elsewhere and set "
            "IMGINAV_HTML_MANAGER to the .tgz"
        )
    return f"npm pack {HTML_MANAGER}"


def ensure_html_manager(book: Path | None = None) -> Path:
    """``_static/html-manager/embed.js`` (and the fonts it loads), taken from the npm registry with
    ``npm pack``; or from ``$IMGINAV_HTML_MANAGER`` (a packed .tgz) on offline nodes."""
    book = book or BOOK
    target = book / WIDGETS
    if (target / "embed.js").is_file():
        return target / "embed.js"
    widget_script_source(book)  # a clear error if there is no way to get it
    with tempfile.TemporaryDirectory() as tmp:
        package = os.environ.get("IMGINAV_HTML_MANAGER")
        if not package:
            done = subprocess.run(
                [shutil.which("npm"), "pack", HTML_MANAGER, "--silent"], cwd=tmp, capture_output=True, text=True
            )
            if done.returncode != 0:
                raise ReportError(
                    f"npm pack {HTML_MANAGER} failed: {done.stderr.strip()} (a node without network: fetch it "
                    "where there is one, into this repository's book/, with `python -m imginav_core fetch-widgets`; "
                    "bash hpc/launch_phase1_2.sh does so on the login node)"
                )
            package = str(Path(tmp) / done.stdout.strip().splitlines()[-1])
        staging = Path(tmp) / "dist"
        try:
            with tarfile.open(package) as tar:
                members = [
                    m
                    for m in tar.getmembers()
                    if m.isfile() and m.name.startswith("package/dist/") and not m.name.endswith((".map", "-amd.js"))
                ]
                for member in members:
                    member.name = member.name.removeprefix("package/dist/")
                tar.extractall(staging, members=members, filter="data")
        except (tarfile.TarError, EOFError) as err:
            raise ReportError(
                f"{package}: not a package made by `npm pack {HTML_MANAGER}` "
                f"({(str(err).splitlines() or [type(err).__name__])[0].rstrip(':')})"
            ) from None
        if not (staging / "embed.js").is_file():
            raise ReportError(f"{package}: no dist/embed.js in this package")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(staging, target)
    return target / "embed.js"


def stage(plan: StudyPlan, book: Path | None = None) -> list[Path]:
    """Copy the study's executed notebooks into ``book/generated/`` -- each arm's first run as the
    arm's chapter (``generated/arms/PAGE.ipynb``, its page and title from the study file), then the
    probe and the analysis -- and make sure the widget script is there. Chapters left by another
    study are removed, so the report is of this one."""
    book = book or BOOK
    out = plan.outputs
    target = book / GENERATED
    sources = {
        Path("arms") / f"{arm.page}.ipynb": (
            out.executed_notebook(plan.arm_names(label)[0]),
            chapter_title(plan, label),
        )
        for label, arm in plan.study.arms.items()
        if plan.arm_runs(label)
    }
    sources[Path("diffusion_probe.ipynb")] = (out.probe_notebook, None)
    sources[Path("analysis.ipynb")] = (out.analysis_notebook, None)
    missing = [out.shown(source) for source, _ in sources.values() if not source.is_file()]
    if missing:
        raise ReportError(
            "the report is built from executed notebooks that are not there yet: "
            + ", ".join(missing)
            + " (run the training, probe and analysis jobs first: bash hpc/launch_phase1_2.sh)"
        )
    shutil.rmtree(target / "arms", ignore_errors=True)
    copied = []
    absent = set() if plan.sweep else {SWEEP_TAG}  # a section about what did not run is not shown
    for page, (source, title) in sources.items():
        copy_for_report(source, target / page, out, title, drop=absent)
        copied.append(target / page)
    ensure_html_manager(book)
    return copied


def chapter_title(plan: StudyPlan, label: str) -> str:
    """An arm's chapter heading: its label, its encoder, its first run (the browser tab and the
    report's Previous / Next links read it, so each arm's differs)."""
    run = plan.arm_runs(label)[0]
    cfg = plan.configs.get(run.name)
    encoder = (
        ""
        if cfg is None
        else f" ({'VAE, KL weight ' + format(cfg.loss.kld, 'g') if cfg.model.variational else 'deterministic'})"
    )
    return f"{label} training{encoder}: {run.name}"


# The tag of the analysis notebook's cells about the KL-weight sweep: the report's copy leaves them
# out when the study planned no sweep. A notebook run by papermill cannot add or remove its own
# cells, and myst-nb's remove-* tags are fixed before the run; the stage step knows the plan, so it
# takes out the whole section (its heading, prose, code) and the executed notebook keeps it, with its
# line saying that there was no sweep.
SWEEP_TAG = "kl-sweep"


def copy_for_report(
    source: Path, target: Path, out: Outputs, title: str | None = None, drop: set[str] | frozenset = frozenset()
) -> None:
    """The executed notebook as the report shows it. papermill writes the parameters it was given
    into the notebook (its "injected-parameters" cell), and on the cluster those are absolute
    paths of that machine; the report shows them as logs do (``Outputs.shown``: ``OUTPUT_ROOT/...``,
    else their last parts), and shows them alone: the "parameters" cell of defaults above them is
    hidden (``remove-cell``), so one parameter cell, the values used, is on the page. Cells with a
    tag in ``drop`` are left out. The executed notebook itself is left as it is."""
    notebook = json.loads(source.read_text())
    notebook["cells"] = [c for c in notebook["cells"] if not drop & set(c.get("metadata", {}).get("tags", []))]
    if title:  # the chapter's own heading, in place of the notebook's first one
        first = next(c for c in notebook["cells"] if c["cell_type"] == "markdown")
        lines = "".join(first["source"]).splitlines(keepends=True)
        first["source"] = [f"# {title}\n"] + lines[1:]
    injected = any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in notebook["cells"])
    for cell in notebook["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            text = "".join(cell["source"])
            cell["source"] = re.sub(r"""(["'])(/[^"']*)\1""", lambda m: m[1] + out.shown(m[2]) + m[1], text)
        elif "parameters" in tags and injected and "remove-cell" not in tags:
            cell["metadata"]["tags"] = [*tags, "remove-cell"]  # the defaults: the values used are shown below
    write_text_atomic(target, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
