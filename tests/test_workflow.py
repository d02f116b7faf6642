"""The study as users run it: LSF job scripts, papermill notebooks, the analysis and the report."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from imginav_core import load_config

from conftest import copy_of_repository
from helpers import ROOT, V1_NAME, V2_NAME

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
            flag, *values = shlex.split(line[len("#BSUB"):])
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
    assert _gigabytes(d["-M"][0]) >= per_slot  # the kill limit (-M, also per slot) above the reservation


def test_the_two_training_jobs_differ_only_in_what_differs():
    v1 = (ROOT / "hpc/papermill_V1.sh").read_text().splitlines()
    v2 = (ROOT / "hpc/papermill_V2.sh").read_text().splitlines()
    differing = [(a, b) for a, b in zip(v1, v2) if a != b]
    assert len(v1) == len(v2) and len(differing) <= 8  # name, queue, logs, config, comments
    assert all("V1" in a or "gpuv100" in a or "deterministic" in a for a, _ in differing)


def test_no_machine_paths_in_the_project():
    for path in [*(ROOT / "hpc").glob("*.sh"), *(ROOT / "configs").rglob("*.yaml"), ROOT / "environment.yml",
                 *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "book").glob("*.*")]:
        text = path.read_text()
        assert not re.search(r"(/work\d*/|/home/|/Users/|/zhome/|/tmp/)", text), path


def test_the_launcher_submits_both_runs_then_the_probe_then_the_analysis(study):
    # by name and ended(): a failed or resubmitted job cannot leave the next one waiting forever
    assert 'ended("phase1_2_V1") && ended("phase1_2_V2")' in study["stdout"]
    assert 'the probe has ended: ended("phase1_2_probe")' in study["stdout"]
    jobs = (Path(study["env"]["FAKE_LSF_DIR"]) / "jobs.tsv").read_text().splitlines()
    assert [line.split("\t")[1:] for line in jobs] == [
        ["phase1_2_V1", "gpuv100", "0"], ["phase1_2_V2", "gpul40s", "0"], ["phase1_2_probe", "gpul40s", "0"],
        ["phase1_2_analysis", "gpuv100", "0"]]
    v1, v2, probe, analysis = (line.split("\t")[0] for line in jobs)
    assert f"V1 job {v1}, V2 job {v2}; probe job {probe}" in study["stdout"]
    for name, job in (("phase1_2_V1", v1), ("phase1_2_V2", v2), ("phase1_2_probe", probe),
                      ("phase1_2_analysis", analysis)):
        log = (study["repo"] / "hpc" / "logs" / f"{name}.{job}.out").read_text()
        assert f"job {job} {name} on" in log


def _outputs(notebook: Path) -> list[dict]:
    nb = nbformat.read(notebook, as_version=4)
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


@pytest.mark.parametrize("name", [V1_NAME, V2_NAME])
def test_training_notebooks_were_executed_and_show_the_run(study, name):
    notebook = study["phase_dir"] / "runs" / f"{name}.ipynb"
    outputs = _outputs(notebook)
    assert not any(o["output_type"] == "error" for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert f"experiment {name}" in text and "epoch 2/2" in text
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("model.latent_channels" in h for h in html)  # the configuration used
    assert any("val_mse" in h and "val_psnr" in h for h in html)  # the per-epoch metrics table
    assert any("git_commit" in h and "precision" in h for h in html)  # what produced the run
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # loss curves, samples
    assert not list((study["phase_dir"] / "runs").glob("*.partial.ipynb"))


def test_analysis_writes_measurements_decision_and_a_loadable_phase1_3_config(study):
    metrics = json.loads((study["phase_dir"] / "analysis" / "latent_metrics.json").read_text())
    v1, v2 = metrics["models"][V1_NAME], metrics["models"][V2_NAME]
    for model in (v1, v2):
        assert {"reconstruction", "latent", "interpolation", "noise"} <= set(model)
        assert {"all", "room", "scene"} <= set(model["reconstruction"])
        assert 0 < model["reconstruction"]["all"]["ssim"] <= 1
    assert "posterior" in v2 and "posterior" not in v1
    assert set(v2["interpolation"]) == {"linear", "spherical"} and set(v1["interpolation"]) == {"linear"}
    decision = json.loads((study["phase_dir"] / "decision.json").read_text())
    assert decision["data_sufficient"] is False  # 32 x 32 synthetic layouts, 2 epochs: too little to decide
    assert "too little" in decision["summary"]
    cfg = load_config(study["phase_dir"] / "phase1_3_base.yaml")
    assert cfg.model.variational == (decision["choice"] == "variational")
    assert (cfg.loss.kld > 0) == cfg.model.variational
    assert cfg.model.latent_channels == 16 and cfg.model.downsampling_steps == 4


def test_resubmitting_a_training_job_resumes_instead_of_restarting(study, tmp_path):
    # a copy of the study's outputs, so the other tests keep seeing the original run
    shutil.copytree(study["outputs"], tmp_path / "outputs")
    env = {**study["env"], "IMGINAV_OUTPUTS": str(tmp_path / "outputs"), "IMGINAV_EPOCHS": "3"}
    log = subprocess.run(["bash", "hpc/papermill_V1.sh"], cwd=study["repo"], env=env, capture_output=True, text=True)
    assert log.returncode == 0, log.stdout[-3000:] + log.stderr[-3000:]
    assert "resuming phase1_2_AE_V1_deterministic after epoch 2" in log.stdout
    rows = (tmp_path / "outputs/experiments/phase1_2_AE_V1_deterministic/phase1_2_AE_V1_deterministic_metrics.csv")
    assert len(rows.read_text().splitlines()) == 1 + 3


def test_bad_parameters_are_refused_before_anything_is_written(study, tmp_path):
    env = {**study["env"], "IMGINAV_OUTPUTS": str(tmp_path / "fresh"), "IMGINAV_EPOCHS": "ten"}
    done = subprocess.run(["bash", "hpc/papermill_V2.sh"], cwd=study["repo"], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "'epochs'" in done.stderr and "ten" in done.stderr
    assert not (tmp_path / "fresh").exists()


def test_papermill_runs_the_training_notebook_with_its_documented_parameters(study, tmp_path):
    """The example command of the README, shrunk: every parameter name is accepted."""
    out = tmp_path / "out.ipynb"
    args = ["papermill", "notebooks/train.ipynb", str(out), "-p", "config", "configs/phase1_2/V2_vae_light.yaml",
            "-p", "epochs", "1", "-p", "resolution", "32", "-p", "manifest", "", "-p", "output_root",
            str(tmp_path / "o"), "-p", "batch_size", "8", "-p", "synthetic_samples", "40", "-p", "device", "cpu",
            "-p", "num_workers", "0", "-p", "seed", "7"]
    done = subprocess.run(args, cwd=study["repo"], env=study["env"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Passed unknown parameter" not in done.stderr
    saved = yaml.safe_load((tmp_path / "o/experiments/phase1_2_AE_V2_vae_light/config.yaml").read_text())
    assert saved["training"]["seed"] == 7 and saved["training"]["batch_size"] == 8


def test_a_multi_gpu_job_trains_data_parallel_with_torchrun_then_shows_the_run(study, tmp_path):
    """IMGINAV_GPUS=2: torchrun trains (here two CPU processes, gloo), the notebook then finds the
    finished run and shows it."""
    env = {**study["env"], "IMGINAV_OUTPUTS": str(tmp_path / "ddp"), "IMGINAV_GPUS": "2", "IMGINAV_EPOCHS": "1"}
    done = subprocess.run(["bash", "hpc/papermill_V1.sh"], cwd=study["repo"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "nothing to do (completed, 1 epochs done)" in done.stdout  # the notebook did not train again
    notebook = tmp_path / "ddp/phase1_2_vae_test/runs/phase1_2_AE_V1_deterministic.ipynb"
    assert not any(o["output_type"] == "error" for o in _outputs(notebook))


def test_a_failed_training_job_stops_the_probe_and_the_analysis_at_once_naming_the_run(study, tmp_path):
    """Both training jobs fail (a manifest that is not there); the probe and the analysis jobs still
    start, since the jobs they wait on ended, and stop in their first step saying which run to resubmit."""
    repo = copy_of_repository(tmp_path / "repo")  # its own hpc/logs/
    lsf = tmp_path / "lsf"
    env = {**study["env"], "IMGINAV_OUTPUTS": str(tmp_path / "out"), "FAKE_LSF_DIR": str(lsf),
           "IMGINAV_DATA": str(tmp_path / "gone" / "layouts.csv")}
    done = subprocess.run(["bash", "hpc/launch_phase1_2.sh"], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # submitting worked; the jobs fail
    jobs = [line.split("\t") for line in (lsf / "jobs.tsv").read_text().splitlines()]
    assert [(name, status != "0") for _, name, _, status in jobs] == [
        ("phase1_2_V1", True), ("phase1_2_V2", True), ("phase1_2_probe", True), ("phase1_2_analysis", True)]
    logs = repo / "hpc" / "logs"
    v1_log = (logs / f"phase1_2_V1.{jobs[0][0]}.out").read_text() + (logs / f"phase1_2_V1.{jobs[0][0]}.err").read_text()
    assert "manifest not found" in v1_log
    for job, notebook in ((jobs[2], "diffusion_probe.ipynb"), (jobs[3], "analysis.ipynb")):
        err = (logs / f"{job[1]}.{job[0]}.err").read_text()
        assert "error: no metrics for experiment 'phase1_2_AE_V1_deterministic'" in err
        assert not (tmp_path / "out" / "phase1_2_vae_test" / "runs" / notebook).exists()


def test_the_launcher_refuses_a_bad_parameter_before_submitting_anything(study, tmp_path):
    lsf = tmp_path / "lsf"
    env = {**study["env"], "FAKE_LSF_DIR": str(lsf), "IMGINAV_KLD": "1e-3"}  # a KL weight for V1 too
    done = subprocess.run(["bash", "hpc/launch_phase1_2.sh"], cwd=study["repo"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "a KL weight needs a variational encoder" in done.stderr
    assert not (lsf / "jobs.tsv").exists()


def test_the_report_is_published_with_its_widget_script(study, tmp_path):
    """`make publish` (ghp-import -n) into a bare repository standing for GitHub: the gh-pages
    branch holds the report, .nojekyll (so Pages serves _static/), and the widget script. The
    Makefile's own target runs, with this test's environment (-o: not rebuilt)."""
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    site = tmp_path / "site"
    shutil.copytree(study["html"], site / "book" / "_build" / "html")
    git = {**study["env"], "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    for args in (["init", "-q"], ["remote", "add", "origin", str(remote)]):
        subprocess.run(["git", *args], cwd=site, check=True, env=git)
    venv = Path(sys.executable).parent.parent
    publish = subprocess.run(["make", "-f", str(ROOT / "Makefile"), f"VENV={venv}", "-o", f"{venv}/.installed",
                              "publish"], cwd=site, env=git, capture_output=True, text=True)
    assert publish.returncode == 0, publish.stdout + publish.stderr
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", "gh-pages"], cwd=remote, capture_output=True,
                           text=True, check=True).stdout.split()
    assert {".nojekyll", "index.html", "_static/html-manager/embed.js", "generated/analysis.html"} <= set(files)
