"""The study as users run it: LSF job scripts, papermill notebooks, the analysis and the report."""

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import SMALL_PLAN, copy_of_repository
from helpers import ROOT

from imginav_core import load_config
from imginav_core.study.arms import read_study_file
from imginav_core.study.plan import make_plan, read_run_config

# The runs the study fixture trains: the plan with SMALL_PLAN's seeds (made here, written nowhere).
_PLANNED = make_plan(ROOT / "outputs" / "unwritten", seeds=[42, 43])
PLAN = _PLANNED.runs
V1_RUNS, V2_RUNS = _PLANNED.arm_names("V1"), _PLANNED.arm_names("V2")

JOBS = {
    "papermill_V1.sh": ("phase1_2_V1", "gpuv100"),
    "papermill_V2.sh": ("phase1_2_V2", "gpul40s"),
    "diffusion_probe.sh": ("phase1_2_probe", "gpul40s"),
    "analysis.sh": ("phase1_2_analysis", "gpuv100"),
    "bench.sh": ("phase1_2_bench", "gpul40s"),
}


def _gigabytes(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(MB|GB)", text).groups()
    return float(number) / (1024 if unit == "MB" else 1)


def directives(script: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in script.read_text().splitlines():
        if line.startswith("#BSUB"):
            flag, *values = shlex.split(line[len("#BSUB") :])
            found.setdefault(flag, []).append(" ".join(values))
    return found


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "hpc").glob("*.sh")))
def test_every_job_script_parses(script):
    subprocess.run(["bash", "-n", str(ROOT / "hpc" / script)], check=True)


@pytest.mark.parametrize("script", sorted(JOBS))
def test_bsub_directives(script):
    name, queue = JOBS[script]
    d = directives(ROOT / "hpc" / script)
    assert d["-J"] == [name] and d["-q"] == [queue]
    assert re.fullmatch(r"num=1(:.*)?", d["-gpu"][0])
    assert re.fullmatch(r"\d{1,3}:[0-5]\d", d["-W"][0])  # LSF wall time [HH:]MM
    assert d["-o"] == [f"hpc/logs/{name}.%J.out"] and d["-e"] == [f"hpc/logs/{name}.%J.err"]
    assert (ROOT / "hpc" / "logs").is_dir()  # LSF does not create it
    # rusage[mem] is per slot: the job's reservation is slots x that, and must stay modest
    slots = int(d["-n"][0])
    per_slot = _gigabytes(next(re.search(r"rusage\[mem=([^]]+)\]", r)[1] for r in d["-R"] if "rusage[mem=" in r))
    assert 8 <= slots * per_slot <= 32, (slots, per_slot)
    limit = _gigabytes(d["-M"][0])
    assert limit >= per_slot  # the kill limit (-M, also per slot) above the reservation
    # -M comes from the memory benchmark's figure for the job's largest process, cited in the script
    comments = " ".join(
        line[1:].strip() for line in (ROOT / "hpc" / script).read_text().splitlines() if line[:2] == "# "
    )
    cited = re.search(r"bench --memory.*?largest process ([\d.]+) GB", comments)
    assert cited, f"hpc/{script}: no 'largest process N GB' from bench --memory beside its #BSUB lines"
    assert limit >= 1.5 * float(cited[1]) and slots * per_slot >= float(cited[1]), (limit, cited[1])
    # the book's table of the jobs says what the script asks for
    row = next(
        r for r in (ROOT / "book/using/cluster.md").read_text().splitlines() if r.startswith(f"| `hpc/{script}`")
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    reserved, kill = re.fullmatch(r"(\d+) GB reserved, `-M (\S+)`", cells[3]).groups()
    assert (int(cells[2]), float(reserved), kill) == (slots, per_slot, d["-M"][0]), row


def test_the_job_array_script_runs_the_default_plan_with_the_training_jobs_resources():
    d = directives(ROOT / "hpc/phase1_2_array.sh")
    study = read_study_file()
    assert d["-J"] == [f"phase1_2[1-{len(study.arms) * len(study.seeds)}]"]  # bsub < hpc/phase1_2_array.sh
    assert d["-o"] == ["hpc/logs/phase1_2.%J.%I.out"] and d["-e"] == ["hpc/logs/phase1_2.%J.%I.err"]
    single = directives(ROOT / "hpc/papermill_V2.sh")
    assert {k: v for k, v in d.items() if k not in ("-J", "-q", "-o", "-e")} == {
        k: v for k, v in single.items() if k not in ("-J", "-q", "-o", "-e")
    }
    assert d["-q"] == [next(iter(study.arms.values())).queue]  # by hand: every index on the first arm's queue


def test_no_machine_paths_in_the_project():
    for path in [
        *(ROOT / "hpc").glob("*.sh"),
        *(ROOT / "configs").rglob("*.yaml"),
        ROOT / "environment.yml",
        *(ROOT / "notebooks").glob("*.ipynb"),
        *(ROOT / "book").glob("*.*"),
    ]:
        text = path.read_text()
        assert not re.search(r"(/work\d*/|/home/|/Users/|/zhome/|/tmp/)", text), path


def _launch(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The launcher, run in ``cwd``: a copy of the repository, since it puts the widget script into book/."""
    return subprocess.run(["bash", "hpc/launch_phase1_2.sh", *args], cwd=cwd, env=env, capture_output=True, text=True)


def _submissions(lsf: Path) -> list[list[str]]:
    """What the stand-in bsub was given: [-J, queue, -w] per submission."""
    return [line.split("\t")[1:4] for line in (lsf / "submissions.tsv").read_text().splitlines()]


def _submitted(lsf: Path) -> list[dict[str, str]]:
    """Everything the stand-in bsub recorded of each submission (tests/lsf/bsub names the columns)."""
    columns = ("id", "-J", "-q", "-w", "-n", "-gpu", "-M", "-W", "-u", "mail")
    return [dict(zip(columns, line.split("\t"))) for line in (lsf / "submissions.tsv").read_text().splitlines()]


def _widget_package(path: Path) -> Path:
    """A stand-in for the npm package of the report's widget script: package/dist/embed.js."""
    script = b"// the widget script\n"
    with tarfile.open(path, "w:gz") as tar:
        member = tarfile.TarInfo("package/dist/embed.js")
        member.size = len(script)
        tar.addfile(member, io.BytesIO(script))
    return path


def _dry_environment(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The launcher's environment (no setting in it: the plan holds them) with a stand-in bsub that
    records the jobs without running them."""
    _widget_package(tmp_path / "html-manager.tgz")  # the widget script the launcher fetches
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMGINAV_")},
        "IMGINAV_CONDA_ENV": "",
        **variables,
        "FAKE_LSF_DRY_RUN": "1",
        "FAKE_LSF_DIR": str(tmp_path / "lsf"),
        "PATH": f"{ROOT / 'tests' / 'lsf'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "IMGINAV_HTML_MANAGER": str(tmp_path / "html-manager.tgz"),
        "IMGINAV_OUTPUTS": str(tmp_path / "out"),
    }


@pytest.mark.parametrize(
    "options,v1,v2",
    [
        ([], "1-5", "6-10"),  # the study file's seeds: 42 to 46
        (["--seeds", "1,2"], "1-2", "3-4"),
        (["--sweep"], "1-5", "6-30"),  # + V2 at 4 more KL weights x 5 seeds
    ],
    ids=["plan", "seeds", "sweep"],
)
def test_the_launcher_plans_then_submits_an_array_per_arm_then_the_probe_on_their_ids_then_the_analysis_on_its_id(
    tmp_path, options, v1, v2
):
    repo = copy_of_repository(tmp_path / "repo")
    done = _launch(_dry_environment(tmp_path), repo, *options)
    assert done.returncode == 0, done.stdout + done.stderr
    # each arm on its queue (that of its single-run job), the indices the plan gives it; every
    # dependency by job id (LSF refuses a name dependency on same-name arrays of different indices);
    # the study's tag (the output root's folder name, "out") before each name
    assert _submissions(tmp_path / "lsf") == [
        [f"out.phase1_2[{v1}]", "gpuv100", ""],
        [f"out.phase1_2[{v2}]", "gpul40s", ""],
        ["out.phase1_2_probe", "gpul40s", "ended(1001) && ended(1002)"],
        ["out.phase1_2_analysis", "gpuv100", "ended(1003)"],
    ]
    runs = int(v2.split("-")[1])
    assert f"{runs} runs" in done.stdout and "probe job 1003" in done.stdout and "analysis job 1004" in done.stdout
    # how to follow them, with their ids
    assert "bjobs -w 1001 1002 1003 1004" in done.stdout and 'bjobs -w -J "out.*"' in done.stdout
    assert 'bpeek -f "1001[1]"' in done.stdout and "bjdepinfo -r 2 -l 1004" in done.stdout
    # the widget script was put into the book before anything was submitted: no job needs a network
    assert (repo / "book" / "_static" / "html-manager" / "embed.js").is_file()
    # the plan was written before anything was submitted, each run's config with it
    plan = json.loads((tmp_path / "out" / "phase1_2_vae_test" / "study_plan.json").read_text())
    assert len(plan["runs"]) == runs and all((tmp_path / "out" / r["config"]).is_file() for r in plan["runs"])


def test_the_launcher_tags_the_jobs_with_the_study_and_mails_failures_and_the_end(tmp_path):
    repo = copy_of_repository(tmp_path / "repo")
    env = _dry_environment(tmp_path, IMGINAV_STUDY="kl-study.2", IMGINAV_MAIL="someone@example.org")
    done = _launch(env, repo)
    assert done.returncode == 0, done.stdout + done.stderr
    submitted = _submitted(tmp_path / "lsf")
    assert [s["-J"].split("[")[0] for s in submitted] == ["kl-study.2.phase1_2"] * 2 + [
        "kl-study.2.phase1_2_probe",
        "kl-study.2.phase1_2_analysis",
    ]
    assert {s["-u"] for s in submitted} == {"someone@example.org"}
    # a mail for each run that fails (-Ne), one when the analysis ends (-N); the probe's end is the analysis's start
    assert [s["mail"] for s in submitted] == ["Ne", "Ne", "", "N"]
    # the resources of the job scripts as they ask for them, in a form bsub takes (the stand-in checks it)
    asked = [directives(ROOT / "hpc" / script) for script in ("phase1_2_array.sh", "diffusion_probe.sh", "analysis.sh")]
    resources = [(d["-n"][0], d["-M"][0], d["-W"][0]) for d in asked]
    assert [(s["-n"], s["-M"], s["-W"]) for s in submitted] == resources[:1] * 2 + resources[1:]
    assert {s["-gpu"] for s in submitted} == {"num=1:mode=exclusive_process"}


@pytest.mark.parametrize(
    "variables,message",
    [
        ({"IMGINAV_STUDY": "my study"}, "IMGINAV_STUDY = 'my study': expected letters, digits"),
        ({"IMGINAV_MAIL": "a@b.org c@d.org"}, "IMGINAV_MAIL = 'a@b.org c@d.org': expected one mail address"),
    ],
)
def test_the_launcher_refuses_a_bad_tag_or_address_before_submitting(tmp_path, variables, message):
    done = _launch(_dry_environment(tmp_path, **variables), copy_of_repository(tmp_path / "repo"))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "lsf" / "submissions.tsv").exists()


def test_the_launcher_stops_before_submitting_when_the_widget_script_cannot_be_had(tmp_path):
    """The login node fetches it (npm pack); a package that is not one stops the launcher there."""
    env = _dry_environment(tmp_path)
    Path(env["IMGINAV_HTML_MANAGER"]).write_bytes(b"<html>a proxy's error page</html>")
    done = _launch(env, copy_of_repository(tmp_path / "repo"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not a package made by `npm pack @jupyter-widgets/html-manager" in done.stderr
    assert "nothing was submitted" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "lsf" / "submissions.tsv").exists()


def _leave_run(out: Path, run, status: str) -> None:
    """A run folder as a training job leaves it: its metrics CSV (one epoch, ``status`` on its
    last row), its checkpoints holding its configuration."""
    from imginav_core.training.checkpoints import save_checkpoint
    from imginav_core.training.metrics_csv import write_metrics

    cfg = read_run_config(out / run.config)
    for checkpoint in (cfg.outputs.best_checkpoint(run.name), cfg.outputs.last_checkpoint(run.name)):
        save_checkpoint(checkpoint, {"config": cfg.to_dict()})
    write_metrics(cfg, [{"epoch": 1, "is_best": True, "status": status}])


def test_resume_submits_only_the_unfinished_runs_then_the_probe_and_the_analysis_on_their_ids(tmp_path):
    """A study whose run 2 was killed after its first epoch (a wall-time limit) and whose run 3
    failed before its first: --resume submits those two, each on its arm's queue, then the probe
    and the analysis chained on the new ids; once every run finished, the probe and the analysis only."""
    repo, lsf, out = copy_of_repository(tmp_path / "repo"), tmp_path / "lsf", tmp_path / "out"
    env = _dry_environment(tmp_path)
    assert _launch(env, repo, *SMALL_PLAN).returncode == 0  # the study: jobs 1001-1004
    for run in PLAN:
        if run.index != 3:
            _leave_run(out, run, "running" if run.index == 2 else "completed")
    done = _launch(env, repo, "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _submissions(lsf)[4:] == [
        ["out.phase1_2[2]", "gpuv100", ""],
        ["out.phase1_2[3]", "gpul40s", ""],
        ["out.phase1_2_probe", "gpul40s", "ended(1005) && ended(1006)"],
        ["out.phase1_2_analysis", "gpuv100", "ended(1007)"],
    ]
    assert f"the unfinished runs of {len(PLAN)}" in done.stdout

    for run in PLAN[1:3]:  # the resubmitted runs finish
        _leave_run(out, run, "early_stopped" if run.index == 3 else "completed")
    done = _launch(env, repo, "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _submissions(lsf)[8:] == [
        ["out.phase1_2_probe", "gpul40s", ""],  # at once
        ["out.phase1_2_analysis", "gpuv100", "ended(1009)"],
    ]
    assert f"every one of the {len(PLAN)} runs has finished" in done.stdout


def test_the_launcher_refuses_an_unknown_argument_and_resume_with_settings(tmp_path):
    done = _launch(_dry_environment(tmp_path), ROOT, "--resmue")
    assert done.returncode == 2 and "unrecognized arguments: --resmue" in done.stderr  # plan's own message
    done = _launch(_dry_environment(tmp_path), ROOT, "--resume", "--seeds", "1")
    assert done.returncode == 2 and "--resume submits the written plan again" in done.stderr
    done = _launch(_dry_environment(tmp_path), ROOT, "--out", "x")
    assert done.returncode == 2 and "set it (export IMGINAV_OUTPUTS=...), not --out" in done.stderr
    assert not (tmp_path / "lsf").exists() and not (tmp_path / "out").exists()


def test_the_stand_in_bsub_runs_arrays_as_lsf_does(tmp_path):
    """Each element in turn with $LSB_JOBINDEX, %I in its log names; a name stands for every
    element; LSF's refusal of a name dependency on same-name arrays of different indices."""
    (tmp_path / "logs").mkdir()
    job = tmp_path / "job.sh"
    job.write_text(
        '#BSUB -J "runs[1-2]"\n#BSUB -o logs/runs.%J.%I.out\n#BSUB -e logs/runs.%J.%I.err\n'
        'echo "index $LSB_JOBINDEX of $LSB_JOBID"\n'
    )
    env = {**os.environ, "FAKE_LSF_DIR": str(tmp_path / "lsf")}
    bsub = str(ROOT / "tests" / "lsf" / "bsub")

    def submit(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run([bsub, *options], stdin=job.open(), cwd=tmp_path, env=env, capture_output=True, text=True)

    assert submit().returncode == 0
    assert [(tmp_path / f"logs/runs.1001.{i}.out").read_text() for i in (1, 2)] == [
        "index 1 of 1001\n",
        "index 2 of 1001\n",
    ]
    assert submit("-w", 'ended("runs")', "-J", "after").returncode == 0  # every element has ended
    assert submit("-J", "runs[3]").returncode == 0  # one more element, under a new id
    refused = submit("-w", 'ended("runs")', "-J", "after")
    assert refused.returncode == 255 and "different index lists" in refused.stderr
    assert submit("-w", "ended(1001) && ended(1003)", "-J", "after").returncode == 0  # by id: each whole array


def test_the_launcher_submits_the_plan_then_the_probe_then_the_analysis(study):
    jobs = [line.split("\t") for line in (Path(study["env"]["FAKE_LSF_DIR"]) / "jobs.tsv").read_text().splitlines()]
    # the study's tag, the output root's folder name ("outputs"), before each job's name
    assert [job[1:] for job in jobs] == [
        ["outputs.phase1_2", "gpuv100", "0"],
        ["outputs.phase1_2", "gpuv100", "0"],
        ["outputs.phase1_2", "gpul40s", "0"],
        ["outputs.phase1_2", "gpul40s", "0"],
        ["outputs.phase1_2_probe", "gpul40s", "0"],
        ["outputs.phase1_2_analysis", "gpuv100", "0"],
    ]
    assert [job[0] for job in jobs[:4]] == ["1001[1]", "1001[2]", "1002[3]", "1002[4]"]
    assert "(starts when every run has ended: ended(1001) && ended(1002))" in study["stdout"]
    assert "the probe has ended: ended(1003)" in study["stdout"]
    logs = study["repo"] / "hpc" / "logs"
    for run in PLAN:  # one log per element, named by its array index
        array = 1001 if run.arm == "V1" else 1002
        log = (logs / f"phase1_2.{array}.{run.index}.out").read_text()
        assert f"job {array}[{run.index}] outputs.phase1_2[{run.index}] on" in log and f"of the plan: {run.name}" in log
    for name, job in (("phase1_2_probe", jobs[4][0]), ("phase1_2_analysis", jobs[5][0])):
        assert f"job {job} outputs.{name} on" in (logs / f"{name}.{job}.out").read_text()


def _outputs(notebook: Path) -> list[dict]:
    nb = nbformat.read(notebook, as_version=4)
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


@pytest.mark.parametrize("name", V1_RUNS + V2_RUNS)
def test_training_notebooks_were_executed_and_show_the_run(study, name):
    notebook = study["phase_dir"] / "runs" / f"{name}.ipynb"
    outputs = _outputs(notebook)
    assert not any(o["output_type"] == "error" for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert f"{name}: the planned run {name}" in text and "epoch 2/2" in text
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("model.latent_channels" in h for h in html)  # the configuration used
    assert any("val_mse" in h and "val_psnr" in h for h in html)  # the per-epoch metrics table
    assert any("git_commit" in h and "precision" in h for h in html)  # what produced the run
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # loss curves, samples
    assert not list((study["phase_dir"] / "runs").glob("*.partial.ipynb"))


def test_analysis_writes_measurements_decision_and_a_loadable_phase1_3_config(study):
    metrics = json.loads((study["phase_dir"] / "analysis" / "latent_metrics.json").read_text())
    for name in V1_RUNS + V2_RUNS:  # every run of each arm measured
        model = metrics["models"][name]
        assert {"reconstruction", "latent", "interpolation", "noise"} <= set(model)
        assert {"all", "room", "scene"} <= set(model["reconstruction"])
        assert 0 < model["reconstruction"]["all"]["ssim"] <= 1
    v1, v2 = metrics["models"][V1_RUNS[0]], metrics["models"][V2_RUNS[0]]
    assert "posterior" in v2 and "posterior" not in v1
    # the same straight paths between the same pairs for both arms
    assert v1["interpolation"]["path"] == v2["interpolation"]["path"] == "linear"
    assert [p["pair"] for p in v1["interpolation"]["pairs"]] == [p["pair"] for p in v2["interpolation"]["pairs"]]
    decision = json.loads((study["phase_dir"] / "decision.json").read_text())
    assert decision["data_sufficient"] is False  # 32 x 32 synthetic layouts, 2 epochs: too little to decide
    assert "too little" in decision["summary"]
    assert decision["arms"] == {"V1": V1_RUNS, "V2": V2_RUNS} and decision["primary_endpoint"] == "generation_fld"
    for name, criterion in decision["criteria"].items():
        assert {"ci95", "n_seeds", "n_images"} <= set(criterion), name
    cfg = load_config(study["phase_dir"] / "phase1_3_base.yaml")
    assert cfg.model.variational == (decision["choice"] == "variational")
    assert (cfg.loss.kld > 0) == cfg.model.variational
    assert cfg.model.latent_channels == 16 and cfg.model.downsampling_steps == 4


def test_resubmitting_an_array_element_resumes_instead_of_restarting(study, tmp_path):
    """A finished run's element submitted again finds the run finished and only shows it; a run cut
    short (its last epoch's rows gone, as a kill leaves them) continues from its last.pt."""
    shutil.copytree(study["outputs"], tmp_path / "outputs")  # a copy: the other tests keep the original
    env = {**study["env"], "IMGINAV_OUTPUTS": str(tmp_path / "outputs"), "LSB_JOBINDEX": "2"}
    log = subprocess.run(["bash", "hpc/phase1_2_array.sh"], cwd=study["repo"], env=env, capture_output=True, text=True)
    assert log.returncode == 0, log.stdout[-3000:] + log.stderr[-3000:]
    name = PLAN[1].name
    assert f"resuming {name} after epoch 2" in log.stdout and "nothing to do (completed, 2 epochs done)" in log.stdout
    rows = tmp_path / "outputs" / "experiments" / name / f"{name}_metrics.csv"
    assert len(rows.read_text().splitlines()) == 1 + 2


@pytest.mark.parametrize("script", ["papermill_V2.sh", "phase1_2_array.sh"])
def test_a_setting_in_the_environment_stops_a_job_before_anything_is_written(tmp_path, script):
    env = {
        **_dry_environment(tmp_path, IMGINAV_EPOCHS="3"),
        "IMGINAV_OUTPUTS": str(tmp_path / "fresh"),
        "LSB_JOBINDEX": "3",
    }
    done = subprocess.run(["bash", f"hpc/{script}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "IMGINAV_EPOCHS is set" in done.stderr and "plan --set training.epochs=N" in done.stderr
    assert not (tmp_path / "fresh").exists()


def test_the_array_job_outside_an_array_says_how_to_submit_it(tmp_path):
    env = {**_dry_environment(tmp_path), "IMGINAV_OUTPUTS": str(tmp_path / "out"), "LSB_JOBINDEX": "0"}
    done = subprocess.run(["bash", "hpc/phase1_2_array.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "no array index" in done.stderr and "LSB_JOBINDEX=I" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_single_run_job_plans_one_run_per_arm_when_there_is_no_plan_and_refuses_another_plans(tmp_path):
    """`bsub < hpc/papermill_V2.sh` on its own: with no plan it plans one run per arm (the study
    file's first seed) and says so, then trains V2's; V1's job finds that plan and trains V1's. On
    a plan without a V2 run it refuses, naming the plan. (The training itself: other tests.)"""
    from imginav_core.errors import ConfigError
    from imginav_core.study.jobs import planned_or_default
    from imginav_core.study.plan import write_plan

    said = []
    plan = planned_or_default(tmp_path / "out", "V2", said.append)
    assert [(r.arm, r.seed) for r in plan.runs] == [("V1", 42), ("V2", 42)]
    assert "no study plan under" in said[0] and "planning one run per arm" in said[0]
    assert planned_or_default(tmp_path / "out", "V1", said.append).arm_runs("V1")[0].name == PLAN[0].name
    assert len(said) == 2  # the second job found the plan: nothing planned again
    other = tmp_path / "v1_v3.yaml"
    other.write_text(
        (ROOT / "configs/phase1_2/study.yaml")
        .read_text()
        .replace("V2: {config: V2_vae_light.yaml", "V3: {config: V2_vae_light.yaml")
        .replace("decision: [V1, V2]", "decision: [V1, V3]")
        .replace("sweep_arm: V2", "sweep_arm: V3")
        .replace("config: V", f"config: {ROOT}/configs/phase1_2/V")
    )
    write_plan(make_plan(tmp_path / "other", other, seeds=[1]), log=lambda _: None)
    with pytest.raises(ConfigError, match=r"has no run of arm V2 \(its arms: V1, V3\)"):
        planned_or_default(tmp_path / "other", "V2", said.append)


def _plan(env: dict[str, str], cwd: Path, *options: str) -> None:
    done = subprocess.run(["python", "-m", "imginav_core", "plan", *SMALL_PLAN, *options], cwd=cwd, env=env)
    assert done.returncode == 0


def test_an_array_element_trains_its_planned_run_into_its_own_folder(tmp_path):
    """Element I of the array (here a sweep run: KL weight 1e-3, seed 43) trains exactly row I of
    the plan through train.ipynb: its name, seed and KL weight (the float), provenance.json."""
    repo = copy_of_repository(tmp_path / "repo")  # its own hpc/logs/
    env = {**_dry_environment(tmp_path), "FAKE_LSF_DRY_RUN": "0"}
    _plan(env, repo, "--sweep", "--set", "training.epochs=1")
    plan = json.loads((tmp_path / "out/phase1_2_vae_test/study_plan.json").read_text())["runs"]
    run = next(r for r in plan if r["sweep"] and r["kld"] == 1e-3 and r["seed"] == 43)
    done = subprocess.run(
        [str(ROOT / "tests/lsf/bsub"), "-J", f"phase1_2[{run['index']}]", "-q", "gpul40s"],
        stdin=(repo / "hpc/phase1_2_array.sh").open(),
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    log = (repo / "hpc/logs" / f"phase1_2.1001.{run['index']}.out").read_text()
    status = (tmp_path / "lsf/jobs.tsv").read_text().split()
    assert done.returncode == 0 and status == [f"1001[{run['index']}]", "phase1_2", "gpul40s", "0"], log[-3000:]
    assert f"run {run['index']} of the plan: {run['name']}" in log
    run_dir = tmp_path / "out" / "experiments" / run["name"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["name"] == run["name"] and saved["training"]["seed"] == 43
    assert saved["loss"]["kld"] == 0.001 and isinstance(saved["loss"]["kld"], float)
    (session,) = json.loads((run_dir / "provenance.json").read_text())["sessions"]
    assert session["world_size"] == 1
    trained = [p.name for p in (tmp_path / "out" / "experiments").iterdir() if (p / "config.yaml").exists()]
    assert trained == [run["name"]]  # no other run trained


def test_the_training_notebook_shows_a_planned_run_and_trains_a_variant_beside_the_study(study, tmp_path):
    """`papermill notebooks/train.ipynb out.ipynb -p config experiments/NAME/planned.yaml` on a
    finished run shows it and trains nothing; `-p variant` trains a new run derived from it under its
    own name in the scratch output root beside the study, never in the study; the same name with
    other settings is refused, the run not reassigned."""
    root = tmp_path / "study"
    shutil.copytree(study["outputs"], root)
    env = {**study["env"], "IMGINAV_OUTPUTS": str(root)}
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    config = f"experiments/{V2_RUNS[0]}/planned.yaml"

    def notebook(*parameters: str) -> subprocess.CompletedProcess:
        command = ["papermill", "notebooks/train.ipynb", str(tmp_path / "out.ipynb"), "-p", "config", config]
        return subprocess.run([*command, *parameters], cwd=study["repo"], env=env, capture_output=True, text=True)

    done = notebook()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing to do (completed, 2 epochs done)" in (tmp_path / "out.ipynb").read_text()
    done = notebook("-y", 'variant: {name: lr_variant, "training.lr": 0.0003, "training.epochs": 1}')
    assert done.returncode == 0, done.stderr[-3000:]
    scratch = tmp_path / "study-scratch" / "experiments" / "lr_variant"
    saved = yaml.safe_load((scratch / "config.yaml").read_text())
    assert saved["training"]["lr"] == 3e-4 and saved["training"]["seed"] == 42 and (scratch / "best.pt").is_file()
    again = notebook("-y", 'variant: {name: lr_variant, "training.lr": 0.001}')
    assert again.returncode != 0 and "was derived before with other settings" in (tmp_path / "out.ipynb").read_text()
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert after == before  # nothing of the study written


def test_a_multi_gpu_job_trains_data_parallel_with_torchrun_then_shows_the_run(tmp_path):
    """IMGINAV_GPUS=2: torchrun trains an array element's run (here two CPU processes, gloo), the
    notebook then finds the finished run and shows it; provenance.json records the two processes."""
    env = {
        **_dry_environment(tmp_path, IMGINAV_GPUS="2"),
        "IMGINAV_OUTPUTS": str(tmp_path / "ddp"),
        "LSB_JOBINDEX": "1",
    }
    _plan(env, ROOT, "--set", "training.epochs=1")
    done = subprocess.run(["bash", "hpc/phase1_2_array.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "nothing to do (completed, 1 epochs done)" in done.stdout  # the notebook did not train again
    name = PLAN[0].name
    notebook = tmp_path / "ddp" / "phase1_2_vae_test" / "runs" / f"{name}.ipynb"
    assert not any(o["output_type"] == "error" for o in _outputs(notebook))
    (session,) = json.loads((tmp_path / "ddp" / "experiments" / name / "provenance.json").read_text())["sessions"]
    assert session["world_size"] == 2  # written once, by rank 0 of torchrun; the notebook started nothing


def test_a_failed_training_job_stops_the_probe_and_the_analysis_at_once_naming_the_run(study, tmp_path):
    """Every array element fails (a manifest that is not there); the probe and the analysis jobs
    still start, since the arrays they wait on ended, and stop in their first step saying which run
    to resubmit."""
    repo = copy_of_repository(tmp_path / "repo")  # its own hpc/logs/
    lsf = tmp_path / "lsf"
    env = {**study["env"], "IMGINAV_OUTPUTS": str(tmp_path / "out"), "FAKE_LSF_DIR": str(lsf)}
    done = _launch(env, repo, *SMALL_PLAN, "--set", f"data.manifest={tmp_path / 'gone' / 'layouts.csv'}")
    assert done.returncode == 0, done.stderr  # submitting worked; the jobs fail
    jobs = [line.split("\t") for line in (lsf / "jobs.tsv").read_text().splitlines()]
    assert [(name, status != "0") for _, name, _, status in jobs] == [("out.phase1_2", True)] * len(PLAN) + [
        ("out.phase1_2_probe", True),
        ("out.phase1_2_analysis", True),
    ]
    logs = repo / "hpc" / "logs"
    first = "phase1_2.1001.1"  # element 1 of the first array (with_suffix would take ".1" for a suffix)
    assert "manifest not found" in (logs / f"{first}.out").read_text() + (logs / f"{first}.err").read_text()
    for job, notebook in ((jobs[-2], "diffusion_probe.ipynb"), (jobs[-1], "analysis.ipynb")):
        err = (logs / f"{job[1].removeprefix('out.')}.{job[0]}.err").read_text()
        assert f"error: no metrics for experiment '{V1_RUNS[0]}'" in err
        assert not (tmp_path / "out" / "phase1_2_vae_test" / "runs" / notebook).exists()


@pytest.mark.parametrize(
    "options,variables,message",
    [
        (["--seeds", "42,x"], {}, "--seeds '42,x': expected integer seeds"),
        (["--set", "training.epochs=ten"], {}, "'training.epochs' must be int"),
        (["--set", "probe.samples=1"], {}, "'samples' = 1"),
        ([], {"IMGINAV_KLD": "1e-3"}, "IMGINAV_KLD is set, and a job takes no setting from its environment"),
        ([], {"IMGINAV_SEEDS": "42,43"}, "plan --seeds 42,43"),
    ],
)
def test_the_launcher_refuses_a_bad_setting_before_submitting_anything(tmp_path, options, variables, message):
    done = _launch(_dry_environment(tmp_path, **variables), copy_of_repository(tmp_path / "repo"), *options)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "lsf" / "submissions.tsv").exists()


def test_the_report_is_published_with_its_widget_script(study, tmp_path):
    """`make publish` (ghp-import -n) into a bare repository standing for GitHub: the gh-pages
    branch holds the report, .nojekyll (so Pages serves _static/), and the widget script. The
    Makefile's own target runs, with this test's environment (-o: not rebuilt)."""
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    site = tmp_path / "site"
    shutil.copytree(study["html"], site / "book" / "_build" / "html")
    git = {
        **study["env"],
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    for args in (["init", "-q"], ["remote", "add", "origin", str(remote)]):
        subprocess.run(["git", *args], cwd=site, check=True, env=git)
    venv = Path(sys.executable).parent.parent
    publish = subprocess.run(
        ["make", "-f", str(ROOT / "Makefile"), f"VENV={venv}", "-o", f"{venv}/.installed", "publish"],
        cwd=site,
        env=git,
        capture_output=True,
        text=True,
    )
    assert publish.returncode == 0, publish.stdout + publish.stderr
    files = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "gh-pages"], cwd=remote, capture_output=True, text=True, check=True
    ).stdout.split()
    assert {".nojekyll", "index.html", "_static/html-manager/embed.js", "generated/analysis.html"} <= set(files)
