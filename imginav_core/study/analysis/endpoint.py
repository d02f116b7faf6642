"""The primary endpoint's data: the diffusion probe's metrics, read and checked against the runs
they must cover. Torch-free (results, runs and paths only), so that ``check analysis`` can stop a
job whose probe is missing or stale, in seconds, on a login node."""

from __future__ import annotations

from pathlib import Path

from ...errors import ProbeError
from ...files import file_sha256
from ...outputs import Outputs
from ..results import ProbeMetrics, ResultsError
from ..runs import RunSummary

PROBE_COMMAND = "`bsub < hpc/diffusion_probe.sh` on the cluster, or `bash hpc/diffusion_probe.sh` without LSF"


def probe_problems(path: Path, runs: list[RunSummary]) -> tuple[ProbeMetrics | None, str]:
    """The probe's metrics and "", or None and why they cannot be the primary endpoint of a
    comparison of ``runs``: missing, unreadable, not covering every run, or of other weights than a
    run's best checkpoint now (the run trained again after the probe ran). Which weights the probe
    measured is told by the digest of the checkpoint it recorded, not by file times, so a study
    copied with ``cp -r`` (new times, same files) still reads."""
    out = runs[0].outputs if runs else Outputs(path.parent, "")
    shown = out.shown(path)
    if not path.is_file():
        return None, f"the diffusion probe has not written {shown}"
    try:
        probe = ProbeMetrics.read(path)
    except ResultsError as err:
        return (
            None,
            f"{shown} is not the probe's metrics as the probe writes them ({str(err).removeprefix(f'{path}: ')})",
        )
    experiments = probe.experiments
    missing = [run.name for run in runs if run.name not in experiments]
    if missing:
        return None, f"{shown} has no results for {', '.join(missing)}"
    for run in runs:
        try:
            float(experiments[run.name]["generated"]["scores"]["fld"]["value"])
        except (KeyError, TypeError, ValueError):
            return None, f"{shown}: experiments.{run.name}.generated.scores.fld.value is missing or not a number"
    stale = [
        run
        for run in runs
        if experiments[run.name].get("checkpoint_sha256")
        and experiments[run.name]["checkpoint_sha256"] != file_sha256(run.best_checkpoint)
    ]
    if stale:
        return None, "; ".join(
            f"{shown} measured other weights of {run.name} than its {out.shown(run.best_checkpoint)} now ({run.name} "
            f"trained again after the probe ran; remove {out.shown(out.probe_dir / run.name)} first, or the probe "
            "reuses the results it keeps there)"
            for run in stale
        )
    return probe, ""


def read_probe(
    path: Path, runs: list[RunSummary], allow_no_probe: bool = False
) -> tuple[ProbeMetrics | None, list[str]]:
    """The probe's metrics, which must cover every compared run (the primary endpoint): a
    ``ProbeError`` saying why not and how to produce them; with ``allow_no_probe`` None and the
    flag the decision shows instead (it then makes no choice)."""
    probe, problem = probe_problems(path, runs)
    if probe is not None:
        unchecked = [run.name for run in runs if not probe.experiments[run.name].get("checkpoint_sha256")]
        if unchecked:
            return probe, [
                f"the probe recorded no checkpoint digest for {', '.join(unchecked)} (written by earlier code): "
                "that it measured their weights as they are now is not checked"
            ]
        return probe, []
    if not allow_no_probe:
        raise ProbeError(
            f"the decision's primary endpoint is the diffusion probe, and {problem}: probe the compared runs "
            f"({PROBE_COMMAND}; it resumes where it stopped), then run the analysis again; or set "
            "allow_no_probe=True (IMGINAV_ALLOW_NO_PROBE=1) to see the other criteria without a choice"
        )
    return None, [f"no primary endpoint: {problem}; allow_no_probe is set, so no choice is made"]
